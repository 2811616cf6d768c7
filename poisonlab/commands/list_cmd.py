"""``poisonlab list KIND``: every registered component of a kind, one line each, with its reference.

``poisonlab list all --markdown`` prints the whole catalog as markdown (docs/catalog.md is made this way).
"""

from __future__ import annotations

from poisonlab.catalog import KINDS, registry
from poisonlab.console import console, table

NAME = "list"
HELP = "List datasets, models, triggers, poisons, attacks, aggregators, detectors or partitions, with references."


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=sorted(KINDS) + ["all"], help="what to list")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead")


def run(args) -> int:
    kinds = sorted(KINDS) if args.kind == "all" else [args.kind]
    for kind in kinds:
        rows = [(e.name, e.summary, e.reference) for e in registry(kind).entries()]
        if args.markdown:
            print(markdown(kind, rows))
        else:
            console.print(table(f"{kind} ({len(rows)})", ["name", "what it does", "reference"], rows, align="left"))
    return 0


def markdown(kind: str, rows: list[tuple[str, str, str]]) -> str:
    """A '## kind' heading and a name | what it does | reference table."""
    lines = [f"## {kind}", "", "| name | what it does | reference |", "|---|---|---|"]
    lines += [f"| `{n}` | {_cell(s)} | {_cell(r)} |" for n, s, r in rows]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Escape the pipe so a formula like ||x|| stays inside its markdown cell."""
    return text.replace("|", "\\|")
