"""Write a part of the defense matrix's grid as its own sweep config, to fill the matrix a part at a time.

    python benchmarks/defense_matrix_part.py --attacks mpaf stale --rules mean krum > runs/part.yaml
    poisonlab sweep runs/part.yaml --out runs/defense-matrix

The part keeps configs/defense-matrix.yaml's base document and takes a subset of each grid list, so its
cells have the full grid's directory names and config digests: a later `poisonlab sweep
configs/defense-matrix.yaml --out runs/defense-matrix` skips them. Adversaries are named by their label
(the attack's name, poison+attack for a poisoned one, none); rules by their name (a chain: a+b).
Run it from the repository root (the config's data_dir is relative to it).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from poisonlab.sweep import _short

CONFIG = "configs/defense-matrix.yaml"
ADVERSARY, AGGREGATOR = "federated.adversary", "federated.aggregator"


def pick(values: list, names: list[str] | None, key: str) -> list:
    """The grid values whose labels are in names (all of them for None), in the grid's order; unknown names refused."""
    if names is None:
        return values
    labels = [_short(v) for v in values]
    unknown = sorted(set(names) - set(labels))
    if unknown:
        sys.exit(f"{key}: {', '.join(unknown)} not in {CONFIG}; accepted: {', '.join(labels)}")
    return [v for v, label in zip(values, labels) if label in names]


def part(doc: dict, attacks: list[str] | None, rules: list[str] | None) -> dict:
    """The config document with its grid cut to the named adversaries and rules."""
    grid = doc["grid"]
    out = dict(doc)
    out["grid"] = {ADVERSARY: pick(grid[ADVERSARY], attacks, "--attacks"),
                   AGGREGATOR: pick(grid[AGGREGATOR], rules, "--rules")}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="+", help="adversary labels (default: all rows)")
    parser.add_argument("--rules", nargs="+", help="rule labels (default: all columns)")
    parser.add_argument("--config", default=CONFIG)
    args = parser.parse_args(argv)
    with open(args.config) as f:
        doc = yaml.safe_load(f)
    yaml.safe_dump(part(doc, args.attacks, args.rules), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
