"""``poisonlab scan``: run one detector on a dataset (optionally with a model checkpoint), print a
table and write a report: the detection as JSON plus a PNG with the score histogram and the ROC.

A poisoned dataset is the npz written by ``poisonlab poison`` (arrays x, y, classes; read with
poisonlab.data's npz source) or a registered dataset name; ``--truth`` is an npz or npy holding a
boolean mask (array 'mask' in an npz). A model checkpoint is a safetensors file whose metadata
names the poisonlab model (``save_checkpoint`` writes it); the model is rebuilt with make_model and
the weights loaded, nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from poisonlab.console import console, percent, table
from poisonlab.data import load
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import make_model
from poisonlab.rundir import atomic_write_bytes

NAME = "scan"
HELP = "Scan a dataset (and optionally a model) for poison or backdoors with one detector; print and report."

META_KEYS = ("poisonlab.model", "poisonlab.input_shape", "poisonlab.num_classes", "poisonlab.params")


def save_checkpoint(model: torch.nn.Module, path, name: str, input_shape, num_classes: int,
                    params: dict | None = None) -> Path:
    """Write model weights as safetensors with the metadata make_model needs to rebuild it (atomic)."""
    from safetensors.torch import save

    meta = dict(zip(META_KEYS, (name, json.dumps(list(input_shape)), str(int(num_classes)), json.dumps(params or {}))))
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return _atomic_bytes(Path(path), save(tensors, metadata=meta))


def load_checkpoint(path) -> torch.nn.Sequential:
    """Rebuild a poisonlab model from a safetensors checkpoint written by save_checkpoint."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"model checkpoint {path} must be a .safetensors file; pickled checkpoints are refused")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(f"{path} is not a readable safetensors file: {err}") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataError(f"{path} lacks metadata {', '.join(missing)}; write checkpoints with save_checkpoint")
    model = make_model(meta["poisonlab.model"], tuple(json.loads(meta["poisonlab.input_shape"])),
                       int(meta["poisonlab.num_classes"]), **json.loads(meta["poisonlab.params"]))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise DataError(f"{path}: weights do not fit model '{meta['poisonlab.model']}': {str(err).splitlines()[0]}") from None
    return model.eval()


def _atomic_bytes(path: Path, data: bytes) -> Path:
    """Write bytes to path atomically (poisonlab.rundir)."""
    return atomic_write_bytes(path, data)


def plot_detection(detection, truth, path, title: str) -> Path:
    """PNG with the score histogram (split by truth when known) and the ROC curve; written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poisonlab.detect.base import evaluate_detection, roc_curve

    scores = detection.scores.numpy()
    fig, axes = plt.subplots(1, 2 if truth is not None else 1, figsize=(10 if truth is not None else 5, 3.6),
                             squeeze=False)
    ax = axes[0, 0]
    finite = scores[np.isfinite(scores)]
    bins = np.linspace(finite.min(), finite.max(), 50) if finite.size and finite.min() < finite.max() else 20
    if truth is None:
        ax.hist(finite, bins=bins, color="tab:blue")
    else:
        t = np.asarray(truth, dtype=bool)
        ax.hist(scores[~t], bins=bins, alpha=0.6, label=f"clean ({int((~t).sum())})", color="tab:blue")
        ax.hist(scores[t], bins=bins, alpha=0.6, label=f"poisoned ({int(t.sum())})", color="tab:red")
        ax.legend()
        fpr, tpr = roc_curve(detection.scores, t)
        ev = evaluate_detection(detection, t)
        rx = axes[0, 1]
        rx.plot(fpr, tpr, color="tab:red")
        rx.plot([0, 1], [0, 1], ls=":", color="grey")
        rx.scatter([ev.fpr], [ev.tpr], color="black", zorder=3, label=f"flags: TPR {ev.tpr:.3f}, FPR {ev.fpr:.3f}")
        rx.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (AUROC {ev.auroc:.4f})")
        rx.legend(loc="lower right")
    ax.set(xlabel="score (higher = more suspicious)", ylabel="count", title=title)
    ax.set_yscale("log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return _atomic_bytes(Path(path), buf.getvalue())


DATA_DETECTORS = ("activation_clustering", "spectral_signatures", "anomaly")


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="an .npz file (as written by 'poisonlab poison') or a dataset name")
    parser.add_argument("--data-dir", help="directory with the dataset files (named file-based datasets)")
    parser.add_argument("--part", help="which part to load, e.g. 'test' for the MNIST test set")
    parser.add_argument("--detector", required=True, help="detector name (see 'poisonlab list detectors')")
    parser.add_argument("--params", default="{}", help="detector parameters as JSON, e.g. '{\"orient\": true}'")
    parser.add_argument("--model", help="model checkpoint (.safetensors written by poisonlab)")
    parser.add_argument("--truth", help="poison mask: .npz with array 'mask' (the 'poisonlab poison' output) or .npy")
    parser.add_argument("--clean", help="held-out clean .npz (strip, neural_cleanse, roni, provenance)")
    parser.add_argument("--reference", help="previous model checkpoint (canary: report prediction changes)")
    parser.add_argument("--out", default=None, help="report directory (default runs/scan-<detector>)")


def _dataset(spec: str, args) -> Dataset:
    """A Dataset from an npz path or a registered name."""
    if spec.endswith(".npz"):
        return load("npz", path=spec)
    from poisonlab.commands.train_cmd import dataset_params

    args.dataset = spec
    return load(spec, **dataset_params(args))


def _truth(path: str, n: int) -> torch.Tensor:
    """The boolean poison mask from an npz (array 'mask') or npy file, checked against n samples."""
    from poisonlab.data.formats import read_npz

    p = Path(path)
    if p.suffix == ".npz":
        mask = read_npz(p, ("mask",))["mask"]
    elif p.suffix == ".npy":
        mask = np.load(p, allow_pickle=False)
    else:
        raise ConfigError(f"--truth {path} must be .npz (array 'mask') or .npy")
    if mask.shape != (n,):
        raise DataError(f"--truth {path} holds {mask.shape} values; expected ({n},), one per scanned item")
    return torch.from_numpy(mask.astype(bool))


def _scan(detector, name: str, data: Dataset, model, clean: Dataset | None, reference):
    """Call the detector's scan with the inputs its kind needs."""
    def need(what, value, flag):
        if value is None:
            raise ConfigError(f"detector '{name}' needs {what}; pass {flag}")
        return value

    if name in DATA_DETECTORS:
        return detector.scan(data, model)
    if name == "strip":
        return detector.scan(data, need("a model", model, "--model"), need("held-out clean images", clean, "--clean"))
    if name == "neural_cleanse":
        return detector.scan(need("a model", model, "--model"), clean if clean is not None else data)
    if name == "roni":
        return detector.scan(data, model, need("held-out clean data", clean, "--clean"))
    if name == "provenance":
        from poisonlab.data.formats import read_npz

        sources = read_npz(Path(need("an npz dataset with a 'source' array", data.meta.get("path"), "--dataset X.npz")),
                           ("source",))["source"]
        return detector.scan(data, sources, need("held-out clean data", clean, "--clean"), model)
    if name == "canary":
        raise ConfigError("detector 'canary' takes probes; use the Python API (poisonlab.detect.get('canary', x=..., y=...))")
    return detector.scan(data, model)


def run(args) -> int:
    from poisonlab.commands.poison_cmd import _params
    from poisonlab.detect import DETECTORS
    from poisonlab.detect.base import detection_record, tpr_at_fpr

    detector = DETECTORS.get(args.detector, **_params(args.params))
    data = _dataset(args.dataset, args)
    if args.dataset.endswith(".npz"):
        data = data.replace(meta={**data.meta, "path": args.dataset})
    model = load_checkpoint(args.model) if args.model else None
    clean = load("npz", path=args.clean) if args.clean else None
    reference = load_checkpoint(args.reference) if args.reference else None
    with console.status(f"scanning {data.name} ({len(data)} samples) with {args.detector}"):
        det = _scan(detector, args.detector, data, model, clean, reference)
    truth = _truth(args.truth, len(det)) if args.truth else None
    out = Path(args.out or f"runs/scan-{args.detector}")
    record = detection_record(args.detector, det, truth)
    rows = [("scanned", len(det)), ("flagged", det.num_flagged)]
    if truth is not None:
        tpr5, fpr5 = tpr_at_fpr(det.scores, truth, 0.05)
        rows += [("TPR", percent(record["tpr"])), ("FPR", percent(record["fpr"])),
                 ("precision", percent(record["precision"])), ("F1", f"{record['f1']:.4f}"),
                 ("AUROC", f"{record['auroc']:.4f}"), ("ROC: TPR at FPR <= 5%", f"{percent(tpr5)} (FPR {percent(fpr5)})")]
    console.print(table(f"{args.detector} on {data.name}", ["", "value"], rows))
    details = {k: v for k, v in det.details.items() if not isinstance(v, torch.Tensor)}
    record["details"] = details
    _atomic_bytes(out / "detection.json", json.dumps(record, default=float).encode())
    png = plot_detection(det, truth, out / "scores.png", f"{args.detector} on {data.name}")
    console.print(f"report: {out / 'detection.json'}, {png}")
    return 0
