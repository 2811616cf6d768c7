"""Shared terminal output: one rich Console on stdout, tables with consistent style."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], align: str = "right") -> Table:
    """A rich Table with the given header and rows; the first column left, the others aligned as asked."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else align, no_wrap=i == 0)
    for row in rows:
        t.add_row(*(str(v) for v in row))
    return t


def percent(value: float) -> str:
    """0.9731 -> '97.31%' (nan -> '-')."""
    return "-" if value != value else f"{100 * value:.2f}%"
