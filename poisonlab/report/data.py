"""Reading metrics.json documents defensively: every accessor tolerates missing keys, nulls and NaN.

A report is drawn after a long run, so a partial or older document must never crash it. The
functions here turn one run dict (the metrics.json layout, see docs/report.md) into plain numpy
arrays and numbers; anything absent or malformed comes back as NaN, None or an empty array,
and the caller shows "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def num(value) -> float:
    """A finite float, or nan for None, NaN, inf, bools, strings and anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def as_dict(value) -> dict:
    """value if it is a mapping, else an empty dict."""
    return dict(value) if isinstance(value, Mapping) else {}


def as_list(value) -> list:
    """value as a list if it is a sequence (not a string), else an empty list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return []
    return list(value)


def int_set(value) -> set[int]:
    """The integer client ids in a list (non-integers are dropped)."""
    return {int(v) for v in as_list(value) if isinstance(v, (int, np.integer)) and not isinstance(v, bool)}


def run_name(run: Mapping, index: int) -> str:
    """The run's name, or 'run <index+1>' when it has none."""
    name = run.get("name") if isinstance(run, Mapping) else None
    return str(name) if name not in (None, "") else f"run {index + 1}"


def final(run: Mapping) -> dict:
    """The run's `final` block (empty dict when absent)."""
    return as_dict(as_dict(run).get("final"))


def history(run: Mapping) -> list[dict]:
    """The per-round records that are dicts (empty for a centralized run)."""
    return [r for r in as_list(as_dict(run).get("history")) if isinstance(r, Mapping)]


def detections(run: Mapping) -> list[dict]:
    """The run's detection records that are dicts."""
    return [d for d in as_list(as_dict(run).get("detections")) if isinstance(d, Mapping)]


def series(run: Mapping, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, values) of history[key] with only finite points kept (null/NaN rounds dropped)."""
    rounds, values = [], []
    for i, record in enumerate(history(run)):
        r = num(record.get("round"))
        v = num(record.get(key))
        if not math.isnan(v):
            rounds.append(i if math.isnan(r) else r)
            values.append(v)
    return np.asarray(rounds, dtype=float), np.asarray(values, dtype=float)


def round_label(record: Mapping, index: int) -> int:
    """The record's round number, or its position when the number is missing."""
    r = num(record.get("round"))
    return index if math.isnan(r) else int(r)


def sampled_ids(record: Mapping) -> set[int]:
    """Clients that took part in a round: `sampled`, else the union of the other id lists."""
    ids = int_set(record.get("sampled"))
    return ids or int_set(record.get("malicious")) | int_set(record.get("flagged")) | int_set(record.get("selected"))


def attackers_present(record: Mapping) -> set[int]:
    """Malicious clients that took part in a round (all listed ones when `sampled` is missing)."""
    malicious = int_set(record.get("malicious"))
    present = sampled_ids(record)
    return malicious & present if present else malicious


def has_flags(run: Mapping) -> bool:
    """True when the history records who was flagged (even if nobody was, e.g. plain FedAvg)."""
    return any("flagged" in r and isinstance(r.get("flagged"), list) for r in history(run))


@dataclass(frozen=True)
class FlagTally:
    """Attackers flagged over all rounds: pooled true/false positives and missed attackers."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp), nan when nothing was flagged."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        """tp / (tp + fn), nan when no attacker took part."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")


def flag_tally(run: Mapping) -> FlagTally | None:
    """Pool flagged vs malicious over the rounds that record flags; None when none do.

    Only clients sampled in a round count, so an attacker who sat the round out is not missed.
    """
    if not has_flags(run):
        return None
    tp = fp = fn = 0
    for record in history(run):
        if not isinstance(record.get("flagged"), list):
            continue
        flagged = int_set(record.get("flagged"))
        malicious = attackers_present(record)
        tp += len(flagged & malicious)
        fp += len(flagged - malicious)
        fn += len(malicious - flagged)
    return FlagTally(tp, fp, fn)


def num_clients(run: Mapping) -> int:
    """Number of clients: config federated.clients if an int, else 1 + the largest id seen."""
    configured = as_dict(as_dict(as_dict(run).get("config")).get("federated")).get("clients")
    seen = [max(ids) for r in history(run) if (ids := sampled_ids(r) | int_set(r.get("malicious")))]
    largest = max(seen) + 1 if seen else 0
    if isinstance(configured, int) and not isinstance(configured, bool) and configured >= largest:
        return configured
    return largest


def flag_matrix(run: Mapping) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """(status, attacker, rounds) for the round x client heatmap, or None without flag records.

    status[r, c]: 0 = not sampled, 1 = sampled and not flagged, 2 = flagged.
    attacker[r, c]: True where client c was a (sampled) attacker in round r.
    """
    if not has_flags(run):
        return None
    records = history(run)
    k = num_clients(run)
    if k == 0:
        return None
    status = np.zeros((len(records), k), dtype=np.int8)
    attacker = np.zeros((len(records), k), dtype=bool)
    for i, record in enumerate(records):
        present = [c for c in sampled_ids(record) if 0 <= c < k]
        status[i, present] = 1
        status[i, [c for c in int_set(record.get("flagged")) if 0 <= c < k]] = 2
        attacker[i, [c for c in int_set(record.get("malicious")) if 0 <= c < k]] = True
    attacker &= status > 0
    return status, attacker, [round_label(r, i) for i, r in enumerate(records)]


def norm_points(run: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(round, norm, is_malicious) for every finite client update norm in the history.

    Norms align with `sampled` (norm i belongs to sampled[i]); when the lengths differ the
    clients cannot be told apart and every point is marked honest.
    """
    rounds, norms, bad = [], [], []
    for i, record in enumerate(history(run)):
        values = [num(v) for v in as_list(record.get("update_norms"))]
        ids = as_list(record.get("sampled"))
        malicious = int_set(record.get("malicious"))
        aligned = len(ids) == len(values)
        for j, v in enumerate(values):
            if not math.isnan(v):
                rounds.append(round_label(record, i))
                norms.append(v)
                bad.append(aligned and ids[j] in malicious)
    return np.asarray(rounds, dtype=float), np.asarray(norms, dtype=float), np.asarray(bad, dtype=bool)


def detection_arrays(detection: Mapping) -> tuple[np.ndarray, np.ndarray] | None:
    """(scores, truth) of a detection record, or None when unusable (lengths differ, NaN, one class)."""
    scores = np.asarray([num(s) for s in as_list(detection.get("scores"))], dtype=float)
    raw_truth = as_list(detection.get("truth"))
    if len(scores) == 0 or len(scores) != len(raw_truth) or np.isnan(scores).any():
        return None
    truth = np.asarray([bool(t) for t in raw_truth], dtype=bool)
    if truth.all() or not truth.any():
        return None
    return scores, truth


def class_names(run: Mapping, n: int) -> list[str]:
    """final.class_names if it has n entries, else '0'..'n-1'."""
    names = [str(c) for c in as_list(final(run).get("class_names"))]
    return names if len(names) == n else [str(i) for i in range(n)]


def confusion(run: Mapping, key: str = "confusion") -> np.ndarray | None:
    """final[key] (default the clean-input confusion matrix) as a square int array, or None when absent,
    ragged, not square, negative or not finite."""
    rows = as_list(final(run).get(key))
    try:
        cm = np.asarray([[num(v) for v in as_list(row)] for row in rows], dtype=float)
    except ValueError:  # ragged rows
        return None
    if cm.ndim != 2 or cm.shape[0] == 0 or cm.shape[0] != cm.shape[1] or np.isnan(cm).any() or (cm < 0).any():
        return None
    return cm.astype(np.int64)


def per_class(run: Mapping, key: str = "per_class_accuracy") -> np.ndarray:
    """final[key] (default the final model's per-class accuracy) as floats (NaN where missing)."""
    return np.asarray([num(v) for v in as_list(final(run).get(key))], dtype=float)


def counts(value) -> list[int] | None:
    """A list of non-negative integer counts, or None when anything in it is not one."""
    items = as_list(value)
    if not items or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in items):
        return None
    return [int(v) for v in items]


def count(value) -> int | None:
    """A non-negative integer count, or None."""
    found = counts([value])
    return found[0] if found else None
