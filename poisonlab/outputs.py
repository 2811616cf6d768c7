"""The run directory's contents: the metrics document's header and the files written atomically.

config.yaml (resolved), metrics.json (keys documented in docs/report.md), history.csv, model.safetensors,
report.html and manifest.json (SHA-256 of every file); the atomic writers are rundir.py's.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from safetensors.torch import save as save_safetensors

from poisonlab.config.schema import ExperimentConfig
from poisonlab.rundir import atomic_write_bytes, atomic_write_text, unsynced, write_csv, write_json, write_manifest


def base_metrics(config: ExperimentConfig) -> dict:
    """The metrics document's header: name, kind, seed, the resolved config; empty sections."""
    return {"name": config.name, "kind": config.kind, "seed": config.seed, "final": {}, "history": [],
            "detections": [], "config": config.model_dump(mode="json")}


def write_run_dir(out: Path, config: ExperimentConfig, metrics: dict, model, report: bool = True,
                  input_shape=None, num_classes: int | None = None) -> None:
    """Write the run directory atomically: config, metrics, history, model, report, manifest (only the manifest
    is fsynced; every file is renamed into place whole, rundir.py).

    With input_shape and num_classes the model is written in the checkpoint format of
    model_checkpoint.py (weights plus the metadata that rebuilds it), so `poisonlab scan --model
    runs/<run>/model.safetensors`, load_checkpoint, fine-tuning and mitigation take it as it is.
    """
    out.mkdir(parents=True, exist_ok=True)
    with unsynced():  # renamed into place whole; the fsynced manifest below records their hashes (rundir.py)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        if model is not None and input_shape is not None and num_classes is not None:
            from poisonlab.model_checkpoint import save_checkpoint

            save_checkpoint(model, out / "model.safetensors", config.model.name, input_shape, num_classes,
                            config.model.params)
        elif model is not None:
            tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            atomic_write_bytes(out / "model.safetensors", save_safetensors(tensors))
        if metrics.get("history"):
            write_csv(out / "history.csv", [_flat_round(r) for r in metrics["history"]])
        if report:
            from poisonlab.report import write_report

            write_report(out / "report.html", [metrics], title=config.name)
        write_json(out / "metrics.json", metrics)
    write_manifest(out)


def _flat_round(record: dict) -> dict:
    """A history entry with list fields kept as JSON cells and flips spread into columns."""
    row = {k: v for k, v in record.items() if k != "flips"}
    row.update({f"flips {k}": v for k, v in (record.get("flips") or {}).items()})
    return row
