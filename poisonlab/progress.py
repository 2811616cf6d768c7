"""What the user sees while poisonlab works: progress lines and warnings, one line each, on stderr.

Progress is off unless a caller turns it on (``with progress.shown(not quiet):``; run_experiment and
the CLI commands do), so library calls stay silent. Inside, long steps report themselves:
``progress.step("epoch 3/10: loss 0.21")`` prints ``poisonlab: <phase>: epoch 3/10: loss 0.21``
when at least MIN_INTERVAL seconds passed since the last line (or when ``last=True``), so a fast
step prints nothing and a slow one is never silent. ``with progress.phase("clean model"):`` names
what the steps belong to. The switch is module state, not a context variable, because Flower's
simulation runs the server's rounds in another thread of the same process.

``warn(text)`` always prints ``poisonlab: warning: text`` (quiet or not): a warning is about the
result, not the progress.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

MIN_INTERVAL = 1.0
"""Seconds between two progress lines (tests set 0 to see every line)."""

_lock = threading.Lock()
_state = {"on": False, "phase": [], "last": 0.0}


@contextmanager
def shown(on: bool = True):
    """Show (or, with on=False, hide) progress lines inside the block; restores the previous setting."""
    with _lock:
        before = _state["on"]
        _state["on"] = bool(on)
        _state["last"] = time.monotonic()
    try:
        yield
    finally:
        with _lock:
            _state["on"] = before


def enabled() -> bool:
    """True when progress lines are shown."""
    return bool(_state["on"])


@contextmanager
def phase(name: str):
    """Name the steps inside the block (nested phases are joined with ', ')."""
    _state["phase"].append(name)
    try:
        yield
    finally:
        _state["phase"].pop()


def step(text: str, last: bool = False) -> None:
    """One progress line (rate-limited to MIN_INTERVAL unless last) when progress is shown."""
    if not _state["on"]:
        return
    now = time.monotonic()
    with _lock:
        if not last and now - _state["last"] < MIN_INTERVAL:
            return
        _state["last"] = now
    where = ", ".join(_state["phase"])
    _emit(f"poisonlab: {where + ': ' if where else ''}{text}")


def warn(text: str) -> None:
    """A warning line, shown whether or not progress is."""
    _emit(f"poisonlab: warning: {text}")


def _emit(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # stderr closed under us: progress is never worth a crash
        pass


def eta(done: int, total: int, elapsed: float) -> str:
    """'ETA 3 min 20 s' for total items when done of them took elapsed seconds ('' before the first)."""
    if done <= 0 or total <= done:
        return ""
    seconds = elapsed / done * (total - done)
    return f"ETA {duration(seconds)}"


def duration(seconds: float) -> str:
    """12.3 -> '12.3 s', 200 -> '3 min 20 s', 7300 -> '2 h 1 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
