"""--track mlflow: what a finished run logs (read back through MLflow's client), and the failure paths."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from poisonlab.cli import main
from poisonlab.errors import ConfigError
from poisonlab.tracking import PARAM_LIMIT, check_tracker, flat_params, metric_key, metric_records

mlflow = pytest.importorskip("mlflow")

RUN = {
    "name": "tracked-run",
    "data": {"dataset": "digits"},
    "model": {"name": "logistic"},
    "federated": {"clients": 6, "rounds": 3, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
                  "adversary": {"clients": 1, "attack": {"name": "scale"}},
                  "aggregator": {"name": "median"}, "checkpoint_every": 1},
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow file store for the test (MLflow 3 wants the opt-in for file stores)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "poisonlab-test")
    return mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())


def _config(tmp_path, doc=RUN):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _only_run(client):
    exp = client.get_experiment_by_name("poisonlab-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_logs_config_history_finals_and_files(tmp_path, store, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out), "--quiet", "--track", "mlflow"]) == 0
    assert "tracked: mlflow run" in capsys.readouterr().out
    run = _only_run(store)
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked-run"
    params = run.data.params
    assert params["federated.aggregator.name"] == "median" and params["federated.rounds"] == "3"
    assert params["seed"] == "0" and params["federated.adversary.attack.name"] == "scale"
    logged = store.get_metric_history(run.info.run_id, "clean_accuracy")
    assert [(m.step, m.value) for m in sorted(logged, key=lambda m: m.step)] == \
        [(r["round"], pytest.approx(r["clean_accuracy"])) for r in metrics["history"]]
    assert run.data.metrics["final.clean_accuracy"] == pytest.approx(metrics["final"]["clean_accuracy"])
    assert run.data.metrics["wall_time"] == pytest.approx(metrics["wall_time"])
    assert len([k for k in run.data.metrics if k.startswith("final.per_class_accuracy.")]) == 10
    assert run.data.tags["poisonlab.kind"] == "federated" and run.data.tags["poisonlab.engine"] == "builtin"
    files = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.html", "history.csv", "config.yaml", "manifest.json"} <= files
    assert (out / "checkpoints").is_dir() and "checkpoints" not in files  # resuming state is not uploaded


def test_sweep_logs_one_run_per_cell_tagged_with_the_cell(tmp_path, store):
    doc = {**RUN, "name": "tracked-sweep", "grid": {"federated.aggregator": [{"name": "mean"}, {"name": "median"}]}}
    doc["federated"] = {**RUN["federated"], "rounds": 1, "checkpoint_every": 0}
    assert main(["sweep", str(_config(tmp_path, doc)), "--out", str(tmp_path / "sw"), "--no-report",
                 "--track", "mlflow"]) == 0
    exp = store.get_experiment_by_name("poisonlab-test")
    runs = store.search_runs([exp.experiment_id])
    cells = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert sorted(r.info.run_name for r in runs) == cells and len(cells) == 2
    assert {r.data.tags["poisonlab.cell"] for r in runs} == set(cells)
    assert {r.data.params["federated.aggregator.name"] for r in runs} == {"mean", "median"}


def test_unreachable_server_is_one_line_and_keeps_the_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out), "--quiet", "--track", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "logging to MLflow at http://127.0.0.1:9 failed" in err
    assert f"{out} is complete" in err
    assert json.loads((out / "metrics.json").read_text())["kind"] == "federated"


def test_missing_mlflow_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError, match=r"poisonlab\[mlflow\]"):
        check_tracker("mlflow")
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out), "--track", "mlflow"]) == 2
    assert "needs the mlflow package" in capsys.readouterr().err and not out.exists()
    check_tracker(None)  # no tracking asked: nothing to check


def test_flat_params_dots_keys_keeps_lists_as_json_and_cuts_long_values():
    doc = {"a": {"b": 1, "c": {"d": None}}, "grid": [1, "x"], "long": "y" * (PARAM_LIMIT + 50), "empty": {}}
    flat = flat_params(doc)
    assert flat["a.b"] == "1" and flat["a.c.d"] == "None" and flat["grid"] == '[1, "x"]'
    assert len(flat["long"]) == PARAM_LIMIT and flat["long"].endswith("...")
    assert flat["empty"] == "{}"


def test_metric_records_steps_nesting_and_what_is_skipped():
    metrics = {
        "history": [{"round": 0, "clean_accuracy": 0.5, "flagged": [1], "applied": True, "precision": None},
                    {"round": 4, "clean_accuracy": 0.75, "flips": {"7->1": 3}}],
        "final": {"clean_accuracy": 0.8, "class_names": ["cat", "dog"], "per_class_accuracy": [0.7, 0.9],
                  "confusion": [[1, 0], [0, 1]], "attackers": [0]},
        "detections": [{"detector": "strip", "tpr": 1.0, "fpr": 0.25}],
        "wall_time": 2.5,
    }
    got = {(k, s): v for k, v, s in metric_records(metrics)}
    assert got == {("clean_accuracy", 0): 0.5, ("clean_accuracy", 4): 0.75, ("flips.7-_1", 4): 3.0,
                   ("final.clean_accuracy", 4): 0.8, ("final.per_class_accuracy.cat", 4): 0.7,
                   ("final.per_class_accuracy.dog", 4): 0.9, ("detection.strip.tpr", 4): 1.0,
                   ("detection.strip.fpr", 4): 0.25, ("wall_time", 4): 2.5}
    assert metric_key("a>b:c d/e") == "a_b_c d/e"
