"""poisonlab sweep --executor ray (poisonlab/sweep_ray.py) on a local Ray with two workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from poisonlab.cli import main
from poisonlab.sweep import run_sweep
from tests.test_sweep_stacked import SWEEP

ray = pytest.importorskip("ray", reason="ray is not installed (it arrives with poisonlab[flower])")

OPTIONS = {"report": False, "memory_budget": None, "force": False, "device": None}


def _metrics(out: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/metrics.json")}


def test_ray_sweep_gathers_the_cells_results_and_skips_finished_ones(tmp_path):
    from poisonlab.sweep_ray import ray_executor

    doc = {**SWEEP, "federated": {**SWEEP["federated"], "rounds": 2},
           "grid": {**SWEEP["grid"], "federated.aggregator": [{"name": "median"}]}}
    executor = ray_executor(OPTIONS, None, cpus=1, gpus=0, local_cpus=2)
    rows = run_sweep(doc, tmp_path / "ray", None, log=lambda _: None, executor=executor)
    assert not ray.is_initialized(), "the local Ray the sweep started is shut down after it"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(config), "--out", str(tmp_path / "local"), "--stack", "1"]) == 0
    remote, local = _metrics(tmp_path / "ray"), _metrics(tmp_path / "local")
    assert sorted(remote) == sorted(local) and len(local) == 3
    for cell, metrics in local.items():  # Ray's workers run 1 thread: equal up to float rounding
        for got, want in zip(remote[cell]["history"], metrics["history"]):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert (tmp_path / "ray" / cell / "manifest.json").is_file() and (tmp_path / "ray" / cell / "cell.json").is_file()
    assert [r["clean_accuracy"] for r in rows] == pytest.approx(
        [r["clean_accuracy"] for r in run_sweep(doc, tmp_path / "ray", None, log=lambda _: None,
                                                executor=lambda *_: pytest.fail("a finished cell ran again"))])


def test_an_address_nothing_answers_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    for address, message in [("127.0.0.1:1", "nothing answers there"), ("nohost", "is not an address")]:
        assert main(["sweep", str(config), "--out", str(tmp_path / "o"), "--executor", "ray",
                     "--address", address]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cells_that_differ_only_in_defenses_share_one_task_and_one_trained_model(tmp_path, monkeypatch):
    """share_key groups a leaderboard's cells by attack x seed; run_cells trains the group's models once."""
    from poisonlab import centralized
    from poisonlab.config.load import parse
    from poisonlab.sweep import expand_grid
    from poisonlab.sweep_ray import run_cells, share_key

    doc = {"name": "lb", "data": {"dataset": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 1},
           "output": {"report": False},
           "grid": {"seed": [0, 1], "poison": [[{"name": "backdoor", "params": {"target": 0, "rate": 0.1, "trigger": "patch"}}]],
                    "defend.defenses": [[{"name": "fine_pruning", "params": {"epochs": 0}}],
                                        [{"name": "fine_pruning", "params": {"epochs": 0, "fraction": 0.5}}]]}}
    configs = [parse(cell.doc) for cell in expand_grid(doc)]
    keys = [share_key(c) for c in configs]
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2], "one group per seed, not per defense"
    fed = parse({k: v for k, v in SWEEP.items() if k != "grid"})
    assert share_key(fed) != share_key(fed.model_copy(update={"seed": fed.seed + 1}))
    trained, real_train = [], centralized.train
    monkeypatch.setattr(centralized, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    results, error = run_cells(configs[:2], OPTIONS)
    assert error is None and len(results) == 2
    assert len(trained) == 2, f"the clean and the poisoned model are trained once for both cells, not {len(trained)} times"
    assert results[0][0]["defense"]["baseline"] == results[1][0]["defense"]["baseline"]
    assert "metrics.json" in results[1][1]
