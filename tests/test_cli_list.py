"""`poisonlab list`: every kind lists its components with a reference; docs/catalog.md is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.catalog import KINDS, registry
from poisonlab.cli import main


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_component_has_a_summary_and_a_reference(kind):
    entries = registry(kind).entries()
    assert entries, f"no {kind} registered"
    for entry in entries:
        assert entry.summary and entry.reference, f"{kind} '{entry.name}' lacks a summary or a reference"


def test_list_prints_one_row_per_component(capsys):
    assert main(["list", "aggregators", "--markdown"]) == 0
    out = capsys.readouterr().out
    names = registry("aggregators").names()
    assert sum(line.startswith("| `") for line in out.splitlines()) == len(names)
    assert "| `krum` |" in out and "Blanchard" in out


def test_docs_catalog_matches_the_registries(capsys):
    main(["list", "all", "--markdown"])
    generated = capsys.readouterr().out
    catalog = (Path(__file__).resolve().parents[1] / "docs" / "catalog.md").read_text()
    assert catalog.endswith(generated), "docs/catalog.md is stale: regenerate it with `poisonlab list all --markdown`"


def test_unknown_kind_is_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "aggregatorz"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aggregatorz" in err[0]
