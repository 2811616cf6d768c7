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


def test_list_kind_name_shows_defaults_types_and_ranges(capsys):
    assert main(["list", "aggregators", "krum"]) == 0
    out = capsys.readouterr().out
    assert "Blanchard" in out
    row = next(line for line in out.splitlines() if line.startswith("│ f "))
    assert "1" in row and "int" in row and "integers [0, inf)" in row


def test_list_one_component_as_markdown(capsys):
    assert main(["list", "detectors", "strip", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| `frr` | `0.01` | `float` | (0.0, 1.0) |" in out
    assert "| `mode` | `'add'` | `str` | - |" in out


def test_list_unknown_component_is_one_line(capsys):
    assert main(["list", "aggregators", "krumm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "krumm" in err[0] and "krum" in err[0]


def _outside(accepted: str) -> list[float]:
    """Values just outside an interval as parameters() writes it ('[0.0, 1.0]', '(0, inf)', 'integers [1, inf)')."""
    text = accepted.removeprefix("integers ").strip()
    lo_text, hi_text = (part.strip() for part in text[1:-1].split(","))
    step = 1 if accepted.startswith("integers") else 1e-6
    values = []
    if lo_text not in ("-inf", ""):
        lo = float(lo_text)
        values.append(lo if text[0] == "(" else lo - step)
    if hi_text not in ("inf", ""):
        hi = float(hi_text)
        values.append(hi if text[-1] == ")" else hi + step)
    return values


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"datasets", "models"}))
def test_every_listed_range_is_the_one_the_component_enforces(kind):
    """A value just outside each listed range is refused by the registry (the list shows the real check)."""
    from poisonlab.catalog import parameters
    from poisonlab.errors import ConfigError

    checked = 0
    for entry in registry(kind).entries():
        for p in parameters(kind, entry.name):
            if p.accepted == "-":
                continue
            for value in _outside(p.accepted):
                value = int(value) if p.accepted.startswith("integers") else value
                with pytest.raises(ConfigError):
                    registry(kind).get(entry.name, **{p.name: value})
                checked += 1
    if kind in ("aggregators", "attacks", "detectors", "partitions"):
        assert checked >= 3, f"too few {kind} ranges recorded ({checked})"
