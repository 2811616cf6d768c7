"""Start-up: the CLI parser and `--help` import no heavy library; `poisonlab list` reads its catalog
from a cache file keyed by the package source, equal to the live registries (poisonlab.catalog_cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poisonlab import catalog_cache
from poisonlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "flwr")


def _heavy_imported(code: str, env: dict | None = None) -> list[str]:
    """Run code in a fresh interpreter; the heavy libraries it imported (printed as JSON at exit)."""
    probe = (f"import sys, json\n{code}\n"
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_parser_and_help_import_no_heavy_library():
    code = ("import contextlib, io\nfrom poisonlab import cli\ncli.build_parser()\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        cli.main(['--help'])\n    except SystemExit:\n        pass\n"
            "assert 'train' in out.getvalue() and 'sweep' in out.getvalue()\n")
    assert _heavy_imported(code) == []


def test_the_probe_sees_a_heavy_import():
    assert "torch" in _heavy_imported("import poisonlab.model_spec")


def test_list_from_a_warm_cache_imports_no_heavy_library(tmp_path):
    env = {"POISONLAB_CACHE": str(tmp_path)}
    code = ("import contextlib, io\nfrom poisonlab import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert cli.main(['list', 'aggregators', 'krum', '--markdown']) == 0\n"
            "assert '| `f` | `1` | `int` | integers [0, inf) |' in out.getvalue()\n")
    assert "torch" in _heavy_imported(code, env)  # the first run builds the catalog from the registries
    assert len(list(tmp_path.glob("catalog-*.json"))) == 1
    assert _heavy_imported(code, env) == []  # the second reads it


def test_the_cached_catalog_equals_the_live_one(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path))
    live = catalog_cache.build()
    assert catalog_cache.load() == live  # built and written
    assert catalog_cache.load() == live  # read back
    assert live["aggregators"].entry("krum").params[0] == ("f", "1", "int", "integers [0, inf)")


@pytest.mark.parametrize("damaged", ['{"aggregators": {"kind": 1}}', "{}", "[1]", "not json"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch, capsys, damaged):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path))
    path = tmp_path / f"catalog-{catalog_cache.source_key()}.json"
    path.write_text(damaged)
    assert main(["list", "aggregators", "--markdown"]) == 0
    assert "| `krum` |" in capsys.readouterr().out
    assert set(json.loads(path.read_text())) == set(catalog_cache.build())


def test_the_key_changes_with_the_source(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(catalog_cache, "PACKAGE", tmp_path)
    before = catalog_cache.source_key()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert catalog_cache.source_key() != before
