"""End to end through the CLI: run, sweep (rerun does no work), demo; each writes what it promises."""

from __future__ import annotations

import json

import yaml

from poisonlab.cli import main

SWEEP = {
    "name": "tiny-sweep",
    "data": {"dataset": "digits"},
    "model": {"name": "logistic"},
    "federated": {"clients": 6, "rounds": 2, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1}},
    "grid": {
        "federated.adversary": [{"clients": 1, "attack": {"name": "sign_flip"}},
                                {"clients": 1, "attack": {"name": "scale", "params": {"gamma": 5.0}}}],
        "federated.aggregator": [{"name": "mean"}, {"name": "median"}, {"name": "krum", "params": {"f": 1}}],
        "seed": [0, 1],
    },
}


def test_sweep_2_attacks_x_3_defenses_x_2_seeds_and_rerun_does_no_work(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--no-report"]) == 0
    cells = sorted(out.glob("*/metrics.json"))
    assert len(cells) == 12
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    summary = (out / "summary.md").read_text()
    assert "| sign_flip | mean | 2 |" in summary.replace("  ", " ")
    assert "adversary \\ aggregator" in summary  # the attack x defense matrix
    capsys.readouterr()
    assert main(["sweep", str(config), "--out", str(out), "--no-report"]) == 0
    log = capsys.readouterr().out
    assert log.count("finished already") == 12 and "running" not in log
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps


def test_run_writes_the_run_directory(tmp_path, capsys):
    doc = {k: v for k, v in SWEEP.items() if k != "grid"}
    doc["federated"]["adversary"] = {"clients": 1, "attack": {"name": "scale"}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--set", "federated.rounds=3"]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "history.csv", "model.safetensors", "report.html", "manifest.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["kind"] == "federated"
    assert 0.0 <= metrics["final"]["clean_accuracy"] <= 1.0
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert set(manifest) >= {"metrics.json", "report.html", "model.safetensors"}
    assert "clean accuracy" in capsys.readouterr().out


def test_demo_prints_a_row_per_rule_and_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    for rule in ("mean", "median", "trimmed_mean", "krum", "norm_clip", "flame", "foolsgold"):
        assert f"│ {rule}" in out, rule
    header = out.split("┡")[0]  # the report's flag columns (rich may wrap a column name over two lines)
    assert "precision" in header and "recall" in header and "honest" not in header
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
