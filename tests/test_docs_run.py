"""Docs that run: every shell and python block of README.md and docs/*.md runs as the doc says.

How a block runs, and the markers that change it, are in tests/docs_blocks.py. Each doc runs in its
own work dir, laid out like a checkout (configs/ and benchmarks/ copied, poisonlab/ linked from this repo,
../shared/data linked to the real data, .venv/bin/poisonlab and .venv/bin/python running this
interpreter), so the docs' relative paths work and nothing is written into the repo.
POISONLAB_THREADS=1 is set for every command (the only setting changed for all blocks; a block's fast
form, written in the doc, is the other). A failure names the doc, the line and the block.

Run `python tests/test_docs_run.py` to print the tally: blocks run, fast forms, skipped with reasons.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_blocks import REPO, SHELL, Block, docs, parse, unfenced_commands  # noqa: E402

SHARED = REPO.parent / "shared"
LINKED = ("poisonlab", "pyproject.toml")
COPIED = ("configs", "benchmarks")  # copied: a script's own path (benchmarks' default --out) stays in the work dir
SLOW = os.environ.get("POISONLAB_DOCS_SLOW") == "1"
TIMEOUT = 600  # seconds per command or python group: generous, for a busy shared machine


def checkout(work: Path) -> dict[str, str]:
    """Lay out `work/repo` like the project's checkout; return the environment its commands run with."""
    repo = work / "repo"
    (repo / ".venv" / "bin").mkdir(parents=True)
    for name in LINKED:
        (repo / name).symlink_to(REPO / name)
    for name in COPIED:
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    if SHARED.exists():
        (work / "shared").symlink_to(SHARED)
    path = f'PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"'  # this checkout's poisonlab, whatever the block sets
    scripts = {"poisonlab": f'{path} exec "{sys.executable}" -m poisonlab "$@"',
               "python": f'{path} exec "{sys.executable}" "$@"'}
    for name, body in scripts.items():
        script = repo / ".venv" / "bin" / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    env = dict(os.environ, PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(REPO), POISONLAB_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_shell(block: Block, cwd: Path, env: dict[str, str], fast: bool) -> tuple[list[str], str]:
    """Run a shell block's commands in order (the fast form's when fast); (failures, the block's stdout)."""
    failures, out = [], ""
    for cmd in block.commands:
        text = cmd.run if fast else cmd.text
        if text is None:
            continue
        if "../shared/data" in text and not SHARED.exists():
            pytest.skip(f"{block.where}: real data not available at {SHARED}")
        proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        out += proc.stdout
        if proc.returncode != 0:
            failures.append(f"{block.doc}:{cmd.line} (shell block at line {block.line}): `{text}` exited "
                            f"{proc.returncode}:\n{_tail(proc.stderr or proc.stdout)}")
    return failures, out


def run_python(blocks: list[Block], cwd: Path, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Run consecutive python blocks in one fresh process (a fresh namespace each); (failures, stdouts)."""
    spec = [{"doc": str(REPO / b.doc), "line": b.line, "code": b.code} for b in blocks]
    (cwd / "_blocks.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "docs_runner.py"), "_blocks.json", "_results.json"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        return [f"{blocks[0].where}: the python runner failed:\n{_tail(proc.stderr)}"], []
    results = json.loads((cwd / "_results.json").read_text())
    failures = [f"{b.where} (python block): {r['error']}" for b, r in zip(blocks, results) if not r["ok"]]
    return failures, [r["stdout"] for r in results]


def check_output(expected: Block, printed: str) -> list[str]:
    """Each non-blank line of an `output` block must appear, in order, in what the previous block printed."""
    rest = " ".join(printed.split())
    for line in expected.code.splitlines():
        want = " ".join(line.split())
        if not want:
            continue
        at = rest.find(want)
        if at < 0:
            return [f"{expected.where}: the output '{want}' is not printed by the block before it; it printed:\n"
                    f"{_tail(printed, 12)}"]
        rest = rest[at + len(want):]
    return []


def check_excerpt(block: Block) -> list[str]:
    """Every code line (comments dropped) of an `excerpt PATH` block occurs in PATH."""
    source = " ".join((REPO / block.arg).read_text().split())
    missing = [line for line in block.code.splitlines()
               if line.split("#")[0].strip() and " ".join(line.split("#")[0].split()) not in source]
    return [f"{block.where}: not in {block.arg}: {line.strip()}" for line in missing]


def plan(block: Block, slow: bool) -> str | None:
    """How a shell/python block runs: 'written', 'fast' or None (not in this test).

    The quick test runs blocks as written, or in their fast form; the slow test runs every block
    as written (fast forms and slow blocks included), only `skip` blocks never run.
    """
    if block.lang not in SHELL | {"python"} or block.marker in ("skip", "file", "output", "excerpt"):
        return None
    if block.marker == "slow":
        return "written" if slow else None
    if block.marker == "fast" and not slow:
        return "fast"
    return "written"


def run_doc(path: Path, work: Path, slow: bool = False) -> list[str]:
    """Run the blocks of one doc in order; the failures, each naming the doc and line."""
    env = checkout(work)
    cwd = work / "repo"
    blocks, failures, i = parse(path), [], 0
    printed: str | None = None  # what the last block run as written printed (None: it was not run so)
    while i < len(blocks):
        block, how = blocks[i], plan(blocks[i], slow)
        if block.marker == "file":
            (cwd / block.arg).write_text(block.code + "\n")
        elif block.marker == "output":
            failures += check_output(block, printed) if printed is not None else []
        elif block.marker == "excerpt":
            failures += check_excerpt(block)
        elif block.lang == "yaml":
            try:
                yaml.safe_load(block.code)
            except yaml.YAMLError as exc:
                failures.append(f"{block.where}: yaml block does not parse: {str(exc).splitlines()[0]}")
        elif how is not None and block.lang in SHELL:
            new, out = run_shell(block, cwd, env, fast=how == "fast")
            failures, printed = failures + new, out if how == "written" else None
        elif how is not None:
            group = [block]
            while i + 1 < len(blocks) and blocks[i + 1].lang == "python" and plan(blocks[i + 1], slow):
                i += 1
                group.append(blocks[i])
            new, outs = run_python(group, cwd, env)
            failures, printed = failures + new, outs[-1] if outs else None
        elif block.lang in SHELL | {"python"}:
            printed = None
        i += 1
    return failures


def tally() -> dict[str, list[str]]:
    """Every shell/python block and command by what the docs test does with it (run, fast, skipped, slow)."""
    out: dict[str, list[str]] = {"run as written": [], "run in a fast form": [], "slow (POISONLAB_DOCS_SLOW=1)": [],
                                 "not run": [], "output checked": [], "output checked only when slow": [],
                                 "excerpt checked": [], "saved as a file for later blocks": [], "text": []}
    for path in docs():
        last = None
        for b in parse(path):
            if b.marker == "output":
                exact = last is not None and plan(last, slow=False) == "written"
                out["output checked" if exact else "output checked only when slow"].append(b.where)
            elif b.marker == "excerpt":
                out["excerpt checked"].append(f"{b.where} (from {b.arg})")
            elif b.marker == "file":
                out["saved as a file for later blocks"].append(f"{b.where} ({b.arg})")
            elif b.lang not in SHELL | {"python"}:
                out["text"].append(f"{b.where} ({b.lang or 'plain'})")
            elif b.marker == "skip":
                out["not run"].append(f"{b.where}: {b.arg}")
            elif b.marker == "slow":
                out["slow (POISONLAB_DOCS_SLOW=1)"].append(f"{b.where}: {b.arg}")
            elif b.marker == "fast":
                out["run in a fast form"].append(b.where)
                out["not run"] += [f"{b.doc}:{c.line}: {c.reason}" for c in b.commands if c.run is None]
            else:
                out["run as written"].append(b.where)
            if b.lang in SHELL | {"python"}:
                last = b
    return out


@pytest.mark.parametrize("path", docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_doc_runs_as_written(path, tmp_path):
    failures = run_doc(path, tmp_path)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="slow doc blocks run with POISONLAB_DOCS_SLOW=1")
@pytest.mark.parametrize("path", docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_slow_doc_blocks_run(path, tmp_path):
    failures = run_doc(path, tmp_path, slow=True)
    assert not failures, "\n\n".join(failures)


def test_every_command_is_fenced():
    """An indented command would escape this test: commands go in ```bash blocks."""
    found = [line for path in docs() for line in unfenced_commands(path)]
    assert not found, "fence these commands as ```bash blocks:\n" + "\n".join(found)


def test_every_block_not_run_says_why():
    counts = tally()
    assert counts["run as written"] and counts["run in a fast form"]
    for entry in counts["not run"] + counts["slow (POISONLAB_DOCS_SLOW=1)"]:
        assert entry.split(": ", 1)[1].strip(), f"{entry.split(': ')[0]}: a block not run must say why"


if __name__ == "__main__":
    for what, entries in tally().items():
        print(f"{what}: {len(entries)}")
        for entry in entries:
            print(f"  {entry}")


def test_poisoning_doc_quotes_the_results_its_commands_wrote():
    """docs/poisoning.md's measured table says what benchmarks/poisoning_experiments.py wrote (results.json)."""
    doc = " ".join((REPO / "docs" / "poisoning.md").read_text().split())
    res = json.loads((REPO / "docs" / "poisoning" / "results.json").read_text())
    res.update(json.loads((REPO / "docs" / "poisoning_flip_ft" / "results.json").read_text()))

    def pct(value: float) -> str:
        return f"{100 * value:.2f}%"

    def points(values: list[float]) -> str:
        return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"

    base = res["backdoor_patch_rate_0.1"]["clean_accuracy_clean_model"]
    expected = [f"Clean baseline: {pct(base)} test accuracy"]
    for key in ("backdoor_patch_rate_0.1", "backdoor_patch_rate_0.01"):
        r = res[key]
        expected += [f"{pct(base)} -> {pct(r['clean_accuracy'])} ({100 * (r['clean_accuracy'] - base):+.2f}) "
                     f"| ASR {pct(r['attack_success_rate'])}"]
    expected.append(f"(clean model {pct(res['backdoor_patch_rate_0.1']['attack_success_rate_clean_model'])})")
    for key, how in (("label_flip_7_to_1_half", "concat"), ("label_flip_7_to_1_half_fine_tune_all", "fine-tune on all rows")):
        r = res[key]
        expected += [f"{pct(base)} -> {pct(r['clean_accuracy'])} | 7->1: {r['flips_clean_model']['7->1']} -> {r['flips']['7->1']}",
                     f"{how} {points(r['per_class_change_points'])}"]
    for key in ("external_concat", "external_fine_tune", "external_fine_tune_mixed_10pct"):
        r = res[key]
        expected.append(f"{pct(base)} -> {pct(r['clean_accuracy'])} | held-out aircraft as 7: {r['probe']['as_target']}/5"
                        if key == "external_concat" else f"{pct(base)} -> {pct(r['clean_accuracy'])} | {r['probe']['as_target']}/5 as 7")
    expected.append(f"predicted {res['external_concat']['probe']['predicted_clean_model']}")
    for key in res:
        if "clean_accuracy_clean_model" in res[key]:
            assert res[key]["clean_accuracy_clean_model"] == base, f"{key}: another clean baseline than the table's"
    missing = [e for e in expected if e not in doc]
    assert not missing, "docs/poisoning.md does not quote its results.json:\n" + "\n".join(missing)
