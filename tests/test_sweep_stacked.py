"""Stacked sweep cells (poisonlab/sweep_exec.py, fl/cohort.py): trained together, the same results as alone."""

from __future__ import annotations

import json

import pytest
import yaml

from poisonlab.cli import main
from poisonlab.fl.cohort import Cohort

SWEEP = {
    "name": "stacked",
    "data": {"dataset": "digits"},
    "model": {"name": "mlp", "params": {"hidden": [16]}},
    "federated": {"clients": 6, "rounds": 3, "local": {"epochs": 1, "batch_size": 16, "lr": 0.1, "momentum": 0.9},
                  "partition": {"name": "dirichlet", "params": {"alpha": 0.5}}},
    "grid": {
        "federated.adversary": [None, {"clients": 2, "poison": {"name": "label_flip", "params": {"fraction": 1.0}}},
                                {"clients": 1, "attack": {"name": "scale", "params": {"gamma": 5.0}}}],
        "federated.aggregator": [{"name": "mean"}, {"name": "median"}],
    },
}


def _sweep(tmp_path, name: str, *options: str) -> dict:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / name
    assert main(["sweep", str(config), "--out", str(out), *options]) == 0
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/metrics.json")}


def test_stacked_cells_give_the_results_of_each_cell_alone(tmp_path, monkeypatch):
    sizes = []
    together = Cohort._train_together
    monkeypatch.setattr(Cohort, "_train_together", lambda self, group: (sizes.append(len(group)), together(self, group))[1])
    stacked = _sweep(tmp_path, "stacked", "--stack", "6")
    assert sizes and max(sizes) == 6, "the 6 cells' clients must train in one stacked call per round"
    alone = _sweep(tmp_path, "alone", "--stack", "1")
    assert len(sizes) == 3 * 1, "--stack 1 trains each cell alone, through fl/local.py"
    assert sorted(stacked) == sorted(alone) and len(alone) == 6
    for cell, metrics in alone.items():
        got = [(h["clean_accuracy"], h["loss"], h["flagged"]) for h in stacked[cell]["history"]]
        want = [(h["clean_accuracy"], h["loss"], h["flagged"]) for h in metrics["history"]]
        assert got == want, cell
        assert stacked[cell]["final"]["confusion"] == metrics["final"]["confusion"]


def test_stacked_sweep_skips_finished_cells(tmp_path, capsys):
    _sweep(tmp_path, "s", "--stack", "4")
    capsys.readouterr()
    _sweep(tmp_path, "s", "--stack", "4")
    log = capsys.readouterr().out
    assert log.count("finished already") == 6 and "running" not in log


@pytest.mark.parametrize("options, message", [
    (["--executor", "dask"], "--executor 'dask' is not known; accepted: local, ray"),
    (["--address", "ray://x:1"], "--address 'ray://x:1' needs --executor ray"),
    (["--stack", "0"], "--stack 0 is not valid; accepted: 1 to 1000 cells"),
    (["--executor", "ray", "--cpus-per-cell", "nan"], "--cpus-per-cell nan is not valid"),
])
def test_bad_executor_options_are_one_line_errors(tmp_path, capsys, options, message):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    assert main(["sweep", str(config), "--out", str(tmp_path / "o"), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_centralized_cells_run_one_after_another_under_the_default_executor(tmp_path):
    doc = {"name": "central", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
           "train": {"epochs": 1}, "grid": {"seed": [0, 1]}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(config), "--out", str(tmp_path / "c")]) == 0
    cells = [json.loads(p.read_text()) for p in (tmp_path / "c").glob("*/metrics.json")]
    assert len(cells) == 2 and all(0.5 < c["final"]["clean_accuracy"] <= 1 for c in cells)
