"""``poisonlab list KIND``: every registered component of a kind, one line each, with its reference."""

from __future__ import annotations

from poisonlab.catalog import KINDS, registry
from poisonlab.console import console, table

NAME = "list"
HELP = "List datasets, models, triggers, poisons, attacks, aggregators or detectors, with references."


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=sorted(KINDS), help="what to list")


def run(args) -> int:
    reg = registry(args.kind)
    rows = [(e.name, e.summary, e.reference) for e in reg.entries()]
    console.print(table(f"{args.kind} ({len(rows)})", ["name", "what it does", "reference"], rows))
    return 0
