"""Running into a run directory that already exists: same config resumes or is complete; another config is refused.

Issue #23.2: re-running a how-to's commands used to overwrite the previous run without a word. Now
``run_experiment`` asks :func:`prepare_run_dir` first:

- a new or empty directory: a fresh run;
- a run of the SAME config (the resolved config without its ``output`` section, and the engine):
  ``complete`` when its metrics.json and manifest.json exist (nothing is recomputed), else ``resume``
  (a federated run continues from its last checkpoint; a centralized one starts again);
- a run of ANOTHER config: refused with the first differing keys and the hint ``--out DIR`` (a new
  run) or ``--force`` (replace: poisonlab's own files are removed, a user's files are kept);
- a directory holding files poisonlab did not write, or a file: refused by ``outdir.claim``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.outdir import claim, marker_of, usable, written_by_poisonlab

RUN_FILES = ("config.yaml", "metrics.json", "history.csv", "model.safetensors", "report.html", "manifest.json")
"""The files a run writes (outputs.write_run_dir); with checkpoints/ they are what --force removes."""


def run_identity(config, engine: str) -> dict:
    """What makes two runs the same: the resolved config without `output`, and the engine."""
    return {"config": config.model_dump(mode="json", exclude={"output"}), "engine": engine}


def prepare_run_dir(out: Path, config, engine: str = "builtin", force: bool = False) -> str:
    """Claim out for this run; return 'new', 'resume' or 'complete' (see the module docstring)."""
    out = usable(out)
    identity = run_identity(config, engine)
    state = "new"
    if out.is_dir() and written_by_poisonlab(out):
        stored = _stored_identity(out)
        if stored is not None and stored != identity:
            if not force:
                changed = [k.removeprefix("config.") for k in changed_keys(stored, identity)]
                raise ConfigError(f"{out} holds a run of another config (it differs at {', '.join(changed[:3])});"
                                  " accepted: --out DIR for a new run, or --force to replace it")
            remove_run_files(out)
        elif stored is not None:
            state = "complete" if _complete(out) and not force else "resume"
            if force:
                remove_run_files(out)
                state = "new"
    claim(out, "run", extra=identity)
    return state


def _stored_identity(out: Path) -> dict | None:
    """The identity recorded in the marker, or (a run of an older poisonlab) read from metrics.json."""
    marker = marker_of(out)
    if marker is not None and "config" in marker:
        return {"config": marker["config"], "engine": marker.get("engine", "builtin")}
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict):
        return None
    config = {k: v for k, v in metrics["config"].items() if k != "output"}
    return {"config": config, "engine": metrics.get("engine", "builtin")}


def _complete(out: Path) -> bool:
    return (out / "metrics.json").is_file() and (out / "manifest.json").is_file()


def stored_metrics(out: Path) -> dict:
    """The metrics document of a complete run."""
    return json.loads((Path(out) / "metrics.json").read_text())


def remove_run_files(out: Path) -> None:
    """Remove what a run wrote (RUN_FILES, checkpoints/, the marker); any other file stays."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / "checkpoints").is_dir():
        shutil.rmtree(out / "checkpoints")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted key paths where two JSON documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "(root)"]
