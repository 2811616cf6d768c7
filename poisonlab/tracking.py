"""Optional experiment tracking: a finished run directory logged to MLflow (``--track mlflow``).

One MLflow run per poisonlab run (per cell in a sweep), logged from what the run wrote:
- params: the resolved config flattened to dotted keys (``federated.aggregator.name``), values as text;
- metrics: every numeric field of each history record at step = its round (``clean_accuracy``,
  ``attack_success_rate``, ...); the final figures as ``final.<name>`` (per-class accuracy as
  ``final.per_class_accuracy.<class>``, label flips as ``final.flips.<a_b>``); each detector's
  ``detection.<name>.tpr`` / ``.fpr``; ``wall_time``;
- artifacts: the run directory's files (report.html, metrics.json, history.csv, config.yaml, model,
  manifest), without checkpoints;
- tags: poisonlab version, kind, engine, seed, the run directory and, in a sweep, the cell.

Where it goes is MLflow's own business: MLFLOW_TRACKING_URI (a server, ``sqlite:///mlflow.db``, ...)
and MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID; the experiment is "poisonlab" when none is named.
Logging starts only after the run directory is complete, so a tracking failure (server down, bad URI)
loses nothing: the error says in one line that the results are on disk.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError, PoisonlabError

TRACKERS = ("mlflow",)
DEFAULT_EXPERIMENT = "poisonlab"
PARAM_LIMIT = 6000  # MLflow's longest param value; longer values are cut and end in "..."
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # MLflow's log_batch limits per call


class TrackingError(PoisonlabError):
    """Logging a finished run to a tracking server failed (the run directory itself is complete)."""


def check_tracker(name: str | None) -> None:
    """Refuse an unknown tracker, or mlflow when it is not installed, before any work starts."""
    if name is None:
        return
    if name not in TRACKERS:
        raise ConfigError(f"--track {name!r} is not known; accepted: {', '.join(TRACKERS)}")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("--track mlflow needs the mlflow package, which is not installed; accepted: "
                          "pip install 'poisonlab[mlflow]' (or mlflow)") from None


def track_run(name: str | None, run_dir: str | Path, config_doc: dict, metrics: dict,
              tags: dict[str, str] | None = None, run_name: str | None = None) -> str | None:
    """Log a finished run directory to the tracker; returns where it went (None when name is None).
    run_name defaults to the experiment's name."""
    if name is None:
        return None
    check_tracker(name)
    return log_to_mlflow(Path(run_dir), config_doc, metrics, tags or {}, run_name or str(metrics.get("name", "run")))


def log_to_mlflow(run_dir: Path, config_doc: dict, metrics: dict, tags: dict[str, str], run_name: str) -> str:
    """One MLflow run with the config as params, the history and final figures as metrics, the files as
    artifacts; marked FAILED if logging breaks half-way. Returns 'mlflow run <id> (experiment <name>, <uri>)'."""
    import mlflow
    from mlflow.entities import Metric, Param

    uri = mlflow.get_tracking_uri()
    try:
        client = mlflow.MlflowClient()
        experiment_id, experiment = _experiment(client)
        run = client.create_run(experiment_id, run_name=run_name, tags={**run_tags(metrics, run_dir), **tags})
    except Exception as err:  # noqa: BLE001 -- any client failure becomes one line, results are on disk
        raise _failure(uri, run_dir, err) from None
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flat_params(config_doc).items()]
        now = int(time.time() * 1000)
        records = [Metric(k, v, now, step) for k, v, step in metric_records(metrics)]
        for i in range(0, len(params), BATCH_PARAMS):
            client.log_batch(run_id, params=params[i:i + BATCH_PARAMS])
        for i in range(0, len(records), BATCH_METRICS):
            client.log_batch(run_id, metrics=records[i:i + BATCH_METRICS])
        for path in artifact_files(run_dir):
            parent = path.parent.relative_to(run_dir).as_posix()
            client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)
    except Exception as err:  # noqa: BLE001
        _end(client, run_id, "FAILED")
        raise _failure(uri, run_dir, err) from None
    _end(client, run_id, "FINISHED")
    return f"mlflow run {run_id} (experiment {experiment}, {uri})"


def _experiment(client) -> tuple[str, str]:
    """The experiment named by MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME, else 'poisonlab' (created if new)."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        exp = client.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"])
        return exp.experiment_id, exp.name
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = client.get_experiment_by_name(name)
    return (exp.experiment_id if exp is not None else client.create_experiment(name)), name


def _end(client, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001 -- the first error is the one worth reporting
        pass


def _failure(uri: str, run_dir: Path, err: Exception) -> TrackingError:
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return TrackingError(f"logging to MLflow at {uri} failed ({type(err).__name__}: {first}); the run directory "
                         f"{run_dir} is complete; accepted: a reachable MLFLOW_TRACKING_URI")


def run_tags(metrics: dict, run_dir: Path) -> dict[str, str]:
    """poisonlab's tags on every tracked run."""
    from poisonlab import __version__

    tags = {"poisonlab.version": __version__, "poisonlab.run_dir": str(run_dir.resolve())}
    for key in ("kind", "engine", "seed"):
        if metrics.get(key) is not None:
            tags[f"poisonlab.{key}"] = str(metrics[key])
    return tags


def flat_params(doc: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as {dotted.key: text}; lists as JSON; values cut to MLflow's 6,000 characters."""
    if isinstance(doc, dict) and doc:
        out: dict[str, str] = {}
        for key, value in doc.items():
            out.update(flat_params(value, f"{prefix}{key}."))
        return out
    text = json.dumps(doc, default=str) if isinstance(doc, (list, tuple, dict)) else str(doc)
    if len(text) > PARAM_LIMIT:
        text = text[:PARAM_LIMIT - 3] + "..."
    return {metric_key(prefix.rstrip(".")): text}


def metric_records(metrics: dict) -> list[tuple[str, float, int]]:
    """(key, value, step) for the history (step = round), the final figures, detections and wall time."""
    out: list[tuple[str, float, int]] = []
    history = metrics.get("history") or []
    for i, record in enumerate(history):
        step = int(record.get("round", record.get("epoch", i)))
        out += [(k, v, step) for k, v in _numbers(record, "") if k not in ("round", "epoch")]
    last = int(history[-1].get("round", len(history) - 1)) if history else 0
    final = dict(metrics.get("final") or {})
    classes = final.pop("class_names", None) or []
    per_class = final.pop("per_class_accuracy", None) or []
    out += [(k, v, last) for k, v in _numbers(final, "final.")]
    for i, acc in enumerate(per_class):
        name = classes[i] if i < len(classes) else i
        out += [(k, v, last) for k, v in _numbers({str(name): acc}, "final.per_class_accuracy.")]
    for det in metrics.get("detections") or []:
        name = det.get("detector", "detector")
        out += [(k, v, last) for k, v in _numbers({"tpr": det.get("tpr"), "fpr": det.get("fpr")},
                                                  f"detection.{name}.")]
    if isinstance(metrics.get("wall_time"), (int, float)):
        out.append(("wall_time", float(metrics["wall_time"]), last))
    return out


def _numbers(record: dict, prefix: str) -> list[tuple[str, float]]:
    """The numeric fields of a record (nested dicts flattened; bools, lists and None skipped)."""
    out = []
    for key, value in record.items():
        if isinstance(value, dict):
            out += _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((metric_key(f"{prefix}{key}"), float(value)))
    return out


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric or param key: letters, digits, _ - . / and spaces (others -> '_')."""
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


def artifact_files(run_dir: Path) -> list[Path]:
    """The run directory's files, without checkpoints (they can be large and are for resuming only)."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and "checkpoints" not in p.relative_to(run_dir).parts)
