"""When an adversary acts (the YAML's `adversary.schedule` and the engine's Schedule): one definition."""

from __future__ import annotations

from pydantic import Field, model_validator

from poisonlab.config.base import Section


class Schedule(Section):
    """When an adversary acts: rounds start <= r < end (end None = forever) with (r - start) % every == 0,
    or exactly the listed rounds when rounds is given (single shot: rounds=(r,))."""

    label = "schedule"

    start: int = Field(0, ge=0)
    end: int | None = Field(None, ge=0)
    every: int = Field(1, ge=1)
    rounds: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _end_after_start(self) -> Schedule:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end={self.end} is before start={self.start}; accepted: end >= start, or null")
        return self

    def active(self, round: int) -> bool:
        """True if the adversary acts in this 0-based round."""
        if self.rounds is not None:
            return round in self.rounds
        in_window = round >= self.start and (self.end is None or round < self.end)
        return in_window and (round - self.start) % self.every == 0

    def last_round(self) -> int | None:
        """The last round in which it acts (None if it never stops)."""
        if self.rounds is not None:
            return max(self.rounds) if self.rounds else None
        if self.end is None:
            return None
        return self.start + ((self.end - 1 - self.start) // self.every) * self.every
