"""``poisonlab scan``: run one detector on a dataset (optionally with a model checkpoint), print a
table and write a report: the detection as JSON plus a PNG with the score histogram and the ROC.

A poisoned dataset is the npz written by ``poisonlab poison`` (arrays x, y, classes; read with
poisonlab.data's npz source; an optional 'source' array gives each sample's source id) or a
registered dataset name; ``--truth`` is an npz or npy holding a boolean mask (array 'mask' in an
npz). A model checkpoint is the safetensors format of ``poisonlab.model_checkpoint``. What the
detector receives follows from what it inspects (``poisonlab.detect.run``); ``--clean`` is the
held-out clean set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from poisonlab.commands._device import add_device, chosen_device
from poisonlab.commands._options import load_dataset
from poisonlab.console import console, percent, table
from poisonlab.data import load
from poisonlab.errors import ConfigError, DataError
from poisonlab.model_checkpoint import load_checkpoint
from poisonlab.outdir import claim, output_dir
from poisonlab.rundir import atomic_write_bytes

NAME = "scan"
HELP = "Scan a dataset (and optionally a model) for poison or backdoors with one detector; print and report."

FLAGS = {"model": "--model", "clean": "--clean", "validation": "--clean", "data": "--dataset",
         "sources": "--dataset X.npz with a 'source' array"}


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="an .npz file (as written by 'poisonlab poison') or a dataset name")
    parser.add_argument("--data-dir", help="directory with the dataset files (named file-based datasets)")
    parser.add_argument("--part", help="which part to load, e.g. 'test' for the MNIST test set")
    parser.add_argument("--detector", required=True, help="detector name (see 'poisonlab list detectors')")
    parser.add_argument("--params", default="{}", help="detector parameters as JSON, e.g. '{\"orient\": true}'")
    parser.add_argument("--model", help="model checkpoint (.safetensors written by poisonlab)")
    parser.add_argument("--truth", help="poison mask: .npz with array 'mask' (the 'poisonlab poison' output) or .npy")
    parser.add_argument("--clean", help="held-out clean .npz: the validation set of data and source detectors"
                                        " (roni, provenance), the clean set of input and model detectors (strip,"
                                        " neural_cleanse)")
    parser.add_argument("--out", default=None, help="report directory (default runs/scan-<detector>)")
    add_device(parser, "auto")


def _truth(path: str, n: int) -> torch.Tensor:
    """The boolean poison mask from an npz (array 'mask') or npy file, checked against n samples."""
    from poisonlab.data.formats import read_npy, read_npz

    p = Path(path)
    if p.suffix == ".npz":
        mask = read_npz(p, ("mask",))["mask"]
    elif p.suffix == ".npy":
        mask = read_npy(p)
    else:
        raise ConfigError(f"--truth {path} must be .npz (array 'mask') or .npy")
    if mask.shape != (n,):
        raise DataError(f"--truth {path} holds {mask.shape} values; expected ({n},), one per scanned item")
    return torch.from_numpy(check_mask_values(mask, f"--truth {path}"))


def check_mask_values(mask: np.ndarray, where: str) -> np.ndarray:
    """mask as bool when it is bool, or integers / floats that are all 0 or 1 (not NaN, not 0.5: a cast
    would call any non-zero value poisoned); else a DataError naming the dtype or the first odd value."""
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype.kind not in "iuf":
        raise DataError(f"{where} has dtype {mask.dtype}; accepted: bool (or 0/1 integers)")
    odd = ~np.isin(mask, (0, 1))
    if odd.any():
        raise DataError(f"{where} holds {mask[odd][0].item()!r} at {int(np.argmax(odd))}; accepted: 0/1 or bool values")
    return mask.astype(bool)


def _sources(spec: str) -> np.ndarray | None:
    """The 'source' array of an npz dataset (one source id per sample), or None when there is none."""
    if not spec.endswith(".npz"):
        return None
    from poisonlab.data.formats import read_npz

    with np.load(spec, allow_pickle=False) as npz:
        has = "source" in npz.files
    return read_npz(Path(spec), ("source",))["source"] if has else None


def run(args) -> int:
    from poisonlab.commands._options import json_params
    from poisonlab.detect import run as detect
    from poisonlab.detect.base import detection_record, tpr_at_fpr
    from poisonlab.report.plots import detection as detection_png

    detector = detect.build(args.detector, json_params(args.params), detect.FROM_FILES, "detector ",
                            "in 'poisonlab scan' (probes: use the Python API, poisonlab.detect.get)")
    out = claim(output_dir(args.out, None, f"scan-{args.detector}"), "scan")  # before any work: refused early
    data = load_dataset(args.dataset, args)
    model = load_checkpoint(args.model).to(chosen_device(args.device)) if args.model else None
    clean = load("npz", path=args.clean) if args.clean else None
    inputs = detect.inputs_for(detector.inspects, data=data, model=model, held_out=clean,
                               sources=_sources(args.dataset) if detector.inspects == "sources" else None)
    with console.status(f"scanning {data.name} ({len(data)} samples) with {args.detector}"):
        det = detect.scan(args.detector, detector, inputs, how=FLAGS)
    truth = _truth(args.truth, len(det)) if args.truth else None
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
    atomic_write_bytes(out / "detection.json", json.dumps(record, default=float).encode())
    png = atomic_write_bytes(out / "scores.png", detection_png(det.scores.numpy(), det.flagged.numpy(),
                                                               None if truth is None else truth.numpy(),
                                                               f"{args.detector} on {data.name}"))
    console.print(f"report: {out / 'detection.json'}, {png}")
    return 0
