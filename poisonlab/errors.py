"""The error hierarchy: every user mistake is a PoisonlabError with a one-line message.

The message names the offending value and what would be accepted; the CLI prints it as
one line and exits 2 (no traceback). Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Iterable, Iterator


class PoisonlabError(Exception):
    """A user mistake or untrusted input that poisonlab refuses, with a one-line reason.

    The message is kept on one line whatever it quotes (a key or name holding a line break is shown
    with the break escaped as \\n), so every caller, not only the CLI, gets one line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (args[0].replace("\r", "\\r").replace("\n", "\\n"),)
        super().__init__(*args)


class ConfigError(PoisonlabError, ValueError):
    """A bad parameter, option or experiment configuration."""


class DataError(PoisonlabError, ValueError):
    """A data file, dataset or update that cannot be used (corrupt, wrong shape, unsafe)."""


class DivergedError(PoisonlabError):
    """Training whose loss became NaN or Inf (divergence.py): the run stops instead of reporting chance accuracy."""


class ResourceError(PoisonlabError):
    """A request that would exceed a stated memory or time budget."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """The error for a name not in a registry: names it, suggests the nearest, lists all."""
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    shown = name if len(str(name)) <= 80 else f"{str(name)[:77]}..."
    return ConfigError(f"{kind} '{shown}' is not known;{hint} known: {', '.join(choices)}")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """Raise ConfigError unless low <= value <= high (open ends when asked); return value."""
    lo = "" if low is None else f"{'(' if low_open else '['}{low}"
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    accepted = f"{lo or '(-inf'}, {hi or 'inf)'}"
    record_range(name, accepted)
    bad = value != value  # NaN
    if low is not None:
        bad = bad or (value <= low if low_open else value < low)
    if high is not None:
        bad = bad or (value >= high if high_open else value > high)
    if bad:
        raise ConfigError(f"{name}={value!r} is out of range; accepted: {accepted}")
    return value


# ---------------------------------------------------------------- the accepted ranges, for `poisonlab list`
_RECORDER: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar("ranges", default=None)


def record_range(name: str, accepted: str) -> None:
    """Note that parameter `name` was checked against `accepted` (only inside recorded_ranges()).

    Every range check calls this, so `poisonlab list` shows the ranges the checks themselves enforce
    (poisonlab.catalog builds a component with its defaults inside recorded_ranges()).
    """
    found = _RECORDER.get()
    if found is not None:
        found.append((name, accepted))


@contextlib.contextmanager
def recorded_ranges() -> Iterator[list[tuple[str, str]]]:
    """Collect (parameter name, accepted range) for every range check run inside the block."""
    token = _RECORDER.set([])
    try:
        yield _RECORDER.get()
    finally:
        _RECORDER.reset(token)
