"""What every report figure draws from, without a plotting library: a run as drawn (Entry), the run
colours, the colours that mean honest / malicious / flagged, and the rounds to shade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from poisonlab.report import data

ATTACKER = "#D55E00"   # Okabe-Ito vermillion: malicious clients in every figure
HONEST = "#7f7f7f"
FLAGGED = "#0072B2"    # Okabe-Ito blue
MAX_CONFUSIONS = 4
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]
TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
         "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
         "#17becf", "#9edae5"]
"""matplotlib's 'tab10' and 'tab20' colour maps (tests/test_report_svg.py checks them against matplotlib)."""


class Entry(NamedTuple):
    """One run as drawn: its display name, its colour and its metrics.json document."""

    name: str
    color: str
    run: dict


def palette(n: int) -> list[str]:
    """n colour-blind-friendly colours: matplotlib 'tab10', then 'tab20' beyond ten runs."""
    colors = TAB10 if n <= 10 else TAB20
    return [colors[i % len(colors)] for i in range(n)]


def attack_rounds(entries: Sequence[Entry]) -> list[int]:
    """Rounds in which an attacker took part, to shade: [] unless every run with a history agrees on
    them and they are not all of its rounds (shading everything would say nothing)."""
    found, everything = set(), set()
    for e in entries:
        records = data.history(e.run)
        if not records:
            continue
        found.add(tuple(data.round_label(r, i) for i, r in enumerate(records) if data.attackers_present(r)))
        everything.add(len(records))
    if len(found) != 1:
        return []
    rounds = list(next(iter(found)))
    return rounds if len(rounds) < min(everything) else []


def jitter(rounds: np.ndarray) -> np.ndarray:
    """Deterministic horizontal spread (within +-0.3 of a round) so points of one round do not overlap."""
    offsets = np.zeros(len(rounds))
    for r in sorted(set(rounds.tolist())):  # np.unique's values; np.unique would import numpy.ma (~15 ms)
        idx = np.flatnonzero(rounds == r)
        offsets[idx] = np.linspace(-0.3, 0.3, len(idx)) if len(idx) > 1 else 0.0
    return offsets
