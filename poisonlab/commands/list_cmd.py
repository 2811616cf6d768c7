"""``poisonlab list KIND [NAME]``: every registered component of a kind with its parameters and reference.

``poisonlab list KIND NAME`` shows one component's parameters (default, type, accepted range);
``poisonlab list all --markdown`` prints the whole catalog as markdown (docs/catalog.md is made this way).
The parameters come from poisonlab.catalog.parameters: the signature the registry validates against
and the ranges the component's own checks enforce. They are read through poisonlab.catalog_cache,
which keeps the catalog in a file named by the package's source hash, so listing does not import PyTorch.
"""

from __future__ import annotations

from poisonlab import catalog_cache
from poisonlab.catalog import KINDS
from poisonlab.console import console, table
from poisonlab.errors import ConfigError

NAME = "list"
HELP = ("List datasets, models, triggers, poisons, attacks, aggregators, detectors or partitions, with their "
        "parameters and references.")


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=sorted(KINDS) + ["all"], help="what to list")
    parser.add_argument("name", nargs="?", help="one component: its parameters with defaults and accepted ranges")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead")


def run(args) -> int:
    if args.name is not None:
        return _one(args)
    kinds = sorted(KINDS) if args.kind == "all" else [args.kind]
    catalog = catalog_cache.load()
    for kind in kinds:
        rows = [(e.name, e.summary, params_text(e.params), e.reference) for e in catalog[kind].entries()]
        if args.markdown:
            print(markdown(kind, rows))
        else:
            console.print(table(f"{kind} ({len(rows)})", ["name", "what it does", "parameters", "reference"],
                                rows, align="left"))
    return 0


def _one(args) -> int:
    """One component: its summary, reference and a row per parameter."""
    if args.kind == "all":
        raise ConfigError(f"'list all {args.name}' names no kind; accepted: list KIND NAME with KIND one of "
                          f"{', '.join(sorted(KINDS))}")
    entry = catalog_cache.load()[args.kind].entry(args.name)
    rows = list(entry.params)
    if args.markdown:
        lines = [f"## {args.kind}: `{entry.name}`", "", _cell(entry.summary), "", f"Reference: {_cell(entry.reference)}",
                 "", "| parameter | default | type | accepted |", "|---|---|---|---|"]
        lines += [f"| `{n}` | `{d}` | `{t}` | {_cell(a)} |" for n, d, t, a in rows]
        print("\n".join(lines))
        return 0
    console.print(f"{args.kind} '{entry.name}': {entry.summary}\nreference: {entry.reference}")
    if rows:
        console.print(table("parameters", ["parameter", "default", "type", "accepted"], rows, align="left"))
    else:
        console.print("parameters: none")
    return 0


def params_text(params) -> str:
    """'f=1 in integers [0, inf), chunk_bytes=268435456': each parameter's default, with its range when checked
    (params: (name, default, type, accepted) tuples)."""
    parts = [f"{name}={default}" + (f" in {accepted}" if accepted != "-" else "") for name, default, _, accepted in params]
    return ", ".join(parts) or "-"


def markdown(kind: str, rows: list[tuple[str, str, str, str]]) -> str:
    """A '## kind' heading and a name | what it does | parameters | reference table."""
    lines = [f"## {kind}", "", "| name | what it does | parameters (default, accepted) | reference |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {_cell(s)} | {_cell(p)} | {_cell(r)} |" for n, s, p, r in rows]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Escape the pipe so a formula like ||x|| stays inside its markdown cell."""
    return text.replace("|", "\\|")
