"""Bad inputs, round 2: output paths (issue #20, class 4). The catalog's rules, the catalog's helpers.

Where a run or any other output may go: run names with separators, `..`, NUL, empty or over-long;
`--out` that is a file, under a file, unwritable, over-long; directories holding a user's files;
key files, manifests and poisoned datasets that exist already. Every case here is in the section
"Round 2: output paths" of docs/bad-inputs.md (checked by test_docs_section_lists_every_case).
Errors: exit code 2, one line on stderr naming the bad value, no traceback (test_bad_inputs's check).
Handled: names that are made safe, re-runs, --force keeping a user's files, no temp files left.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from test_bad_inputs import BASE, C, Handled, cli, config_with, one_error_line, run_args

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- builders
def named(tmp: Path, name: str) -> list[str]:
    """`poisonlab run` on BASE named `name`, into the default directory (runs/<name> under TMP, the cwd)."""
    return ["run", str(config_with(tmp, ("name", name))), "--quiet"]


def out_at(tmp: Path, out: str) -> list[str]:
    return ["run", str(config_with(tmp)), "--out", out, "--quiet"]


def user_dir(tmp: Path, entry: str = "notes.txt", folder: bool = False) -> Path:
    """A directory of the user's own, holding one file (or folder) poisonlab did not write."""
    d = tmp / "mine"
    d.mkdir(exist_ok=True)
    (d / entry).mkdir() if folder else (d / entry).write_text("my own notes")
    return d


def a_file(tmp: Path, name: str = "afile") -> Path:
    path = tmp / name
    path.write_text("a user's file")
    return path


def sweep_config(tmp: Path, name: str = "sweep", **changes) -> Path:
    doc = json.loads(json.dumps(BASE))
    doc.update(name=name, grid={"seed": [0, 1]}, **changes)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_then_changed(tmp: Path) -> list[str]:
    """A finished 2-cell sweep, then the same sweep with another learning rate into the same directory."""
    assert cli(["sweep", str(sweep_config(tmp)), "--out", str(tmp / "s"), "--no-report"]) == 0
    doc = yaml.safe_load((tmp / "sweep.yaml").read_text())
    doc["federated"]["local"]["lr"] = 0.01
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return ["sweep", str(tmp / "sweep.yaml"), "--out", str(tmp / "s"), "--no-report"]


def run_then(tmp: Path, *changes) -> list[str]:
    """A finished run in TMP/run, then `run` of another config (changes) into it."""
    assert cli(run_args(tmp, config_with(tmp))) == 0
    return run_args(tmp, config_with(tmp, *changes))


def old_style_run(tmp: Path) -> list[str]:
    """A run directory of an older poisonlab (metrics.json + config.yaml, no marker) of another seed."""
    run = tmp / "run"
    run.mkdir()
    from poisonlab.config.load import parse

    doc = parse({**json.loads(json.dumps(BASE)), "seed": 7}).model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    (run / "metrics.json").write_text(json.dumps({"name": "bad-input", "kind": "federated", "config": doc}))
    return run_args(tmp, config_with(tmp))


def digits_npz(tmp: Path, name: str = "d.npz") -> Path:
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz

    return save_npz(load("digits").subset(list(range(30))), tmp / name)


def scan_into(tmp: Path, out: Path) -> list[str]:
    return ["scan", "--dataset", str(digits_npz(tmp)), "--detector", "spectral_signatures", "--out", str(out)]


def poison_into(tmp: Path, out: Path, data: Path | None = None) -> list[str]:
    data = data or digits_npz(tmp)
    return ["poison", "--dataset", "npz", "--data-dir", str(data), "--attack", "label_flip",
            "--params", '{"source": 1, "target": 7}', "--out", str(out)]


def keygen_over(tmp: Path, which: str) -> list[str]:
    (tmp / f"k{which}").write_text("an existing key")
    return ["manifest", "keygen", str(tmp / "k")]


def manifest_over(tmp: Path, target: Path) -> list[str]:
    return ["manifest", "create", str(digits_npz(tmp)), "--manifest", str(target)]


LONG = "a" * 300
LONG_UNICODE = "実" * 100  # 300 bytes in UTF-8, 100 characters

CASES = [
    # ---- run names (default directory runs/<name>)
    C("path-name-empty", "name", lambda t: named(t, ""), "name=''", "empty"),
    C("path-name-blank", "name", lambda t: named(t, "   "), "name='   '", "empty"),
    C("path-name-nul", "name", lambda t: named(t, "run\x00x"), "NUL"),
    C("path-name-too-long", "name", lambda t: named(t, LONG), "300 bytes", "at most 200", "--out"),
    C("path-name-too-long-unicode", "name", lambda t: named(t, LONG_UNICODE), "300 bytes", "at most 200"),
    C("path-sweep-name-empty", "name", lambda t: ["sweep", str(sweep_config(t, name="")), "--no-report"],
      "name=''", "empty"),
    # ---- --out and output.dir
    C("path-out-is-a-file", "out", lambda t: out_at(t, str(a_file(t))), "afile", "existing file", "a directory"),
    C("path-out-under-a-file", "out", lambda t: out_at(t, str(a_file(t) / "run")), "afile/run", "cannot be written",
      "Not a directory"),
    C("path-out-unwritable", "out", lambda t: out_at(t, "/sys/poisonlab-cannot-write-here"),
      "/sys/poisonlab-cannot-write-here", "cannot be written", "a writable directory"),
    C("path-out-component-too-long", "out", lambda t: out_at(t, str(t / LONG)), "cannot be written",
      "File name too long"),
    C("path-out-empty-string", "out", lambda t: out_at(t, ""), "--out=''", "not a usable path"),
    C("path-out-nul", "out", lambda t: out_at(t, "ru\x00n"), "--out=", "not a usable path"),
    C("path-out-user-directory", "out", lambda t: out_at(t, str(user_dir(t))),
      "output directory", "mine", "files poisonlab did not write", "'notes.txt'", "another --out"),
    C("path-out-user-directory-hidden-file", "out", lambda t: out_at(t, str(user_dir(t, ".git", folder=True))),
      "files poisonlab did not write", "'.git'"),
    C("path-out-user-directory-subfolder", "out", lambda t: out_at(t, str(user_dir(t, "photos", folder=True))),
      "files poisonlab did not write", "'photos'"),
    C("path-out-user-directory-force", "out", lambda t: out_at(t, str(user_dir(t))) + ["--force"],
      "files poisonlab did not write", "'notes.txt'"),
    C("path-output-dir-user-directory", "out",
      lambda t: ["run", str(config_with(t, ("output.dir", str(user_dir(t))))), "--quiet"],
      "output directory", "mine", "files poisonlab did not write"),
    C("path-output-dir-is-a-file", "out",
      lambda t: ["run", str(config_with(t, ("output.dir", str(a_file(t))))), "--quiet"],
      "output directory", "afile", "existing file"),
    C("path-output-dir-empty-string", "out",
      lambda t: ["run", str(config_with(t, ("output.dir", ""))), "--quiet"], "output.dir=''", "not a usable path"),
    # ---- an existing run directory
    C("path-rerun-another-config", "rerun", lambda t: run_then(t, ("seed", 4)),
      "holds a run of another config", "differs at seed", "--out DIR", "--force"),
    C("path-rerun-another-model", "rerun", lambda t: run_then(t, ("model", {"name": "mlp", "params": {"hidden": [8]}})),
      "holds a run of another config", "model.name", "--force"),
    C("path-rerun-older-run-directory", "rerun", old_style_run, "holds a run of another config", "differs at seed"),
    C("path-sweep-cells-of-another-config", "rerun", sweep_then_changed,
      "holds a run of another config", "federated.local.lr", "--force"),
    # ---- sweep, demo, scan directories
    C("path-sweep-out-is-a-file", "out", lambda t: ["sweep", str(sweep_config(t)), "--out", str(a_file(t))],
      "existing file"),
    C("path-sweep-out-user-directory", "out", lambda t: ["sweep", str(sweep_config(t)), "--out", str(user_dir(t))],
      "files poisonlab did not write", "'notes.txt'"),
    C("path-demo-out-is-a-file", "out", lambda t: ["demo", "--out", str(a_file(t)), "--rounds", "1"],
      "existing file"),
    C("path-demo-out-user-directory", "out", lambda t: ["demo", "--out", str(user_dir(t)), "--rounds", "1"],
      "files poisonlab did not write"),
    C("path-scan-out-is-a-file", "out", lambda t: scan_into(t, a_file(t)), "existing file"),
    C("path-scan-out-user-directory", "out", lambda t: scan_into(t, user_dir(t)), "files poisonlab did not write"),
    # ---- single files: keys, manifests, poisoned datasets
    C("path-keygen-private-key-exists", "file", lambda t: keygen_over(t, ".pem"), "k.pem exists", "--force"),
    C("path-keygen-public-key-exists", "file", lambda t: keygen_over(t, ".pub.pem"), "k.pub.pem exists", "--force"),
    C("path-keygen-key-is-a-directory", "file",
      lambda t: ((t / "k.pem").mkdir(), ["manifest", "keygen", str(t / "k"), "--force"])[1],
      "k.pem is a directory"),
    C("path-manifest-over-a-user-file", "file", lambda t: manifest_over(t, a_file(t, "notes.json")),
      "notes.json", "not a poisonlab manifest", "--force"),
    C("path-manifest-is-a-directory", "file", lambda t: manifest_over(t, user_dir(t)), "is a directory"),
    C("path-poison-out-is-the-input", "file", lambda t: poison_into(t, t / "d.npz", digits_npz(t)),
      "d.npz", "is the input dataset"),
    C("path-poison-out-user-file", "file", lambda t: poison_into(t, digits_npz(t, "mine.npz")),
      "mine.npz", "not written by 'poisonlab poison'", "--force"),
    C("path-poison-out-is-a-directory", "file",
      lambda t: ((t / "dir.npz").mkdir(), poison_into(t, t / "dir.npz"))[1], "dir.npz", "is a directory"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_path_is_one_line(case, tmp_path: Path, capsys, monkeypatch):
    """The catalog's rule (test_bad_inputs.test_bad_input_is_one_line), and nothing of the user's changed."""
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    before = _snapshot(tmp_path)
    line = one_error_line(argv, capsys)
    for word in case.says:
        assert word in line, f"{word!r} missing from: {line[:500]}"
    changed = {p for p, v in before.items() if _snapshot(tmp_path).get(p) != v}
    assert not changed, f"refused, yet changed: {sorted(changed)}"


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every existing file's bytes (files the refusal must leave as they were)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- documented handling
def _run_named(tmp: Path, name: str) -> Path:
    """Run BASE named `name` from TMP; return the one directory it created under runs/."""
    assert cli(named(tmp, name)) == 0
    made = [p for p in (tmp / "runs").iterdir()]
    assert len(made) == 1 and made[0].is_dir() and (made[0] / "metrics.json").is_file()
    outside = {p.name for p in tmp.iterdir()} - {"runs", "config.yaml"}
    assert not outside, f"written outside runs/: {outside}"
    return made[0]


def check_name_with_separator(tmp: Path) -> None:
    assert _run_named(tmp, "team/experiment").name == "team_experiment"


def check_name_dotdot(tmp: Path) -> None:
    assert _run_named(tmp, "../../escape").name == "__.._escape"
    assert not (tmp.parent / "escape").exists()


def check_name_absolute(tmp: Path) -> None:
    assert _run_named(tmp, "/tmp/elsewhere").name == "_tmp_elsewhere"


def check_name_backslash_and_control(tmp: Path) -> None:
    assert _run_named(tmp, "a\\b\tc").name == "a_b_c"


def check_name_non_latin_kept(tmp: Path) -> None:
    assert _run_named(tmp, "実験-α").name == "実験-α"


def check_rerun_same_config_complete(tmp: Path) -> None:
    config = config_with(tmp)
    assert cli(run_args(tmp, config)) == 0
    stamp = (tmp / "run" / "metrics.json").stat().st_mtime_ns
    assert cli(run_args(tmp, config)) == 0
    assert (tmp / "run" / "metrics.json").stat().st_mtime_ns == stamp


def check_force_keeps_user_files(tmp: Path) -> None:
    assert cli(run_args(tmp, config_with(tmp))) == 0
    (tmp / "run" / "analysis.ipynb").write_text("{}")
    assert cli(run_args(tmp, config_with(tmp, ("seed", 2)), "--force")) == 0
    assert (tmp / "run" / "analysis.ipynb").read_text() == "{}"
    assert json.loads((tmp / "run" / "metrics.json").read_text())["seed"] == 2


def check_empty_directory_accepted(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    assert cli(["run", str(config_with(tmp)), "--out", str(tmp / "empty"), "--quiet"]) == 0
    assert (tmp / "empty" / "metrics.json").is_file()


def check_no_temp_files_left(tmp: Path) -> None:
    assert cli(run_args(tmp, config_with(tmp, ("output.report", True)))) == 0
    names = [p.name for p in (tmp / "run").rglob("*")]
    assert not [n for n in names if n.endswith(".tmp")], names


def check_private_key_is_private(tmp: Path) -> None:
    assert cli(["manifest", "keygen", str(tmp / "k")]) == 0
    assert stat.S_IMODE((tmp / "k.pem").stat().st_mode) == 0o600
    first = (tmp / "k.pem").read_bytes()
    assert cli(["manifest", "keygen", str(tmp / "k"), "--force"]) == 0
    assert (tmp / "k.pem").read_bytes() != first


def check_manifest_rewritten(tmp: Path) -> None:
    argv = manifest_over(tmp, tmp / "m.json")
    assert cli(argv) == 0 and cli(argv) == 0  # its own manifest is replaced without --force


HANDLED = [
    Handled("path-name-with-separator", "name", check_name_with_separator),
    Handled("path-name-dotdot", "name", check_name_dotdot),
    Handled("path-name-absolute", "name", check_name_absolute),
    Handled("path-name-backslash-control", "name", check_name_backslash_and_control),
    Handled("path-name-non-latin", "name", check_name_non_latin_kept),
    Handled("path-rerun-same-config", "rerun", check_rerun_same_config_complete),
    Handled("path-force-keeps-user-files", "rerun", check_force_keeps_user_files),
    Handled("path-out-empty-directory", "out", check_empty_directory_accepted),
    Handled("path-no-temp-files-left", "out", check_no_temp_files_left),
    Handled("path-keygen-private-key-mode", "file", check_private_key_is_private),
    Handled("path-manifest-own-file-rewritten", "file", check_manifest_rewritten),
]


@pytest.mark.parametrize("handled", [pytest.param(h, id=h.id) for h in HANDLED])
def test_documented_path_handling(handled: Handled, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handled.check(tmp_path)


def test_round_2_catalog_is_large_and_unique():
    from test_bad_inputs import CASES as ROUND_1, HANDLED as ROUND_1_HANDLED

    ids = [c.id for c in CASES] + [h.id for h in HANDLED]
    assert len(CASES) >= 30
    assert len(ids) == len(set(ids))
    assert not set(ids) & ({c.id for c in ROUND_1} | {h.id for h in ROUND_1_HANDLED})


def test_docs_section_lists_every_case():
    """docs/bad-inputs.md's section 'Round 2: output paths' has a row for every case here, and no other."""
    page = (ROOT / "docs" / "bad-inputs.md").read_text()
    assert "## Round 2: output paths" in page
    section = page.split("## Round 2: output paths", 1)[1].split("\n## ", 1)[0]
    ids = [c.id for c in CASES] + [h.id for h in HANDLED]
    missing = [i for i in ids if f"| `{i}` |" not in section]
    assert missing == []
    import re

    listed = set(re.findall(r"^\| `(path-[a-z0-9-]+)` \|", section, flags=re.M))
    assert listed == set(ids), sorted(listed ^ set(ids))
