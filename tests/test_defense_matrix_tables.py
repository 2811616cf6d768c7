"""benchmarks/defense_matrix_tables.py: the doc's tables parse back to the values written, and the config's grid
matches the doc (every row and column of configs/defense-matrix.yaml has its place in docs/defense-matrix.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    """A benchmarks/ script as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_tables_round_trip_and_cover_the_grid():
    tables = load("defense_matrix_tables")
    doc = yaml.safe_load((ROOT / tables.CONFIG).read_text())
    page = (ROOT / tables.DOC).read_text()
    shown = tables.kept(page)
    assert len(shown) > 500
    written = tables.tables(doc, shown)
    assert tables.kept(written) == shown
    rows = {line.split("|")[1].strip() for line in written.splitlines() if line.startswith("| ")} - {
        "adversary \\ aggregator"}
    assert len(rows) == len(doc["grid"][tables.ADVERSARY]) == 26
    assert written in page  # the doc's tables are the generator's output for the values they show
    assert {rule for _, rule in shown} <= {tables._short(r) for r in doc["grid"][tables.AGGREGATOR]}


def test_part_keeps_the_full_grids_cell_names():
    from poisonlab.sweep import expand_grid

    part = load("defense_matrix_part")
    doc = yaml.safe_load((ROOT / part.CONFIG).read_text())
    cut = part.part(doc, ["stale", "backdoor+threedfed"], ["mean", "bucketing+krum"])
    full = {c.slug: c.doc for c in expand_grid(doc)}
    cells = expand_grid(cut)
    assert len(cells) == 4 and all(full[c.slug] == c.doc for c in cells)


def test_a_diverged_cell_reads_as_nan_with_its_round_only_under_its_own_digest(tmp_path):
    import json

    from poisonlab.sweep import config_digest, expand_grid

    tables = load("defense_matrix_tables")
    doc = yaml.safe_load((ROOT / tables.CONFIG).read_text())
    cell = next(c for c in expand_grid(doc) if tables._short(c.settings[tables.AGGREGATOR]) == "median")
    (tmp_path / cell.slug).mkdir()
    marker = tmp_path / cell.slug / tables.MARKER
    error = "federated training diverged in round 5: the global model's test loss is nan; likely cause: ..."
    marker.write_text(json.dumps({"digest": config_digest(cell.doc), "error": error}))
    label = tables._short(cell.settings[tables.ADVERSARY])
    assert tables.computed(doc, tmp_path) == {(label, "median"): "NaN (r5)"}
    marker.write_text(json.dumps({"digest": "another config", "error": error}))
    assert tables.computed(doc, tmp_path) == {}
