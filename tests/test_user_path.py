"""The user's path (issue #23), re-tried as the issue describes it: each numbered finding behaves as a user expects.

Small settings throughout (digits, a logistic or tiny CNN model, one or two epochs/rounds): seconds each.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from poisonlab import progress
from poisonlab.cli import main

CENTRALIZED = {
    "name": "tiny-backdoor",
    "seed": 0,
    "data": {"dataset": "digits"},
    "model": {"name": "cnn", "params": {"channels": [4, 8], "hidden": 16}},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "poison": [{"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 2}},
                                               "target": 0, "rate": 0.1}}],
}

FEDERATED = {
    "name": "tiny-fl",
    "data": {"dataset": "digits"},
    "model": {"name": "logistic"},
    "federated": {"clients": 6, "rounds": 2, "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
                  "adversary": {"clients": 1, "attack": {"name": "scale", "params": {"gamma": 5.0}}}},
    "output": {"report": False},
}


def write(tmp: Path, doc: dict, name: str = "c.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- 1. one model file: run -> scan
def test_run_writes_a_model_that_scan_load_checkpoint_and_fine_tuning_take(tmp_path):
    from poisonlab.builders import load_split
    from poisonlab.config.load import parse
    from poisonlab.model_checkpoint import load_checkpoint
    from poisonlab.training import TrainConfig, evaluate, fine_tune

    doc = {**CENTRALIZED, "output": {"report": False}}
    code, _, err = cli(["run", str(write(tmp_path, doc)), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, err
    model_path = tmp_path / "run" / "model.safetensors"
    model = load_checkpoint(model_path)  # the file run wrote, rebuilt from its own metadata
    _, test_set = load_split(parse(doc))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert evaluate(model, test_set).accuracy == pytest.approx(metrics["final"]["clean_accuracy"], abs=1e-12)
    tuned = fine_tune(model, test_set.subset(list(range(64))), TrainConfig(epochs=1, lr=0.01))
    assert not torch.equal(next(tuned.parameters()), next(model.parameters()))

    from poisonlab.data.sources import save_npz

    save_npz(test_set, tmp_path / "test.npz")
    code, out, err = cli(["scan", "--dataset", str(tmp_path / "test.npz"), "--detector", "spectral_signatures",
                          "--model", str(model_path), "--out", str(tmp_path / "scan")])
    assert code == 0, err
    assert "lacks metadata" not in err
    record = json.loads((tmp_path / "scan" / "detection.json").read_text())
    assert len(record["scores"]) == len(test_set) and (tmp_path / "scan" / "scores.png").is_file()


def test_train_out_writes_the_same_model_format(tmp_path):
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz
    from poisonlab.model_checkpoint import load_checkpoint
    from poisonlab.training import evaluate

    code, out, err = cli(["train", "--dataset", "digits", "--model", "logistic", "--epochs", "1",
                          "--out", str(tmp_path / "t")])
    assert code == 0, err
    model = load_checkpoint(tmp_path / "t" / "model.safetensors")
    _, test_set = load("digits").split(0.2, seed=0)
    accuracy = evaluate(model, test_set).accuracy
    assert f"test accuracy: {100 * accuracy:.2f}%" in out  # the file holds the model the command evaluated
    save_npz(test_set, tmp_path / "test.npz")
    assert cli(["scan", "--dataset", str(tmp_path / "test.npz"), "--detector", "spectral_signatures",
                "--model", str(tmp_path / "t" / "model.safetensors"), "--out", str(tmp_path / "scan")])[0] == 0


def test_a_checkpoint_of_a_user_factory_is_refused_in_one_line_never_imported(tmp_path):
    from torch import nn

    from poisonlab.errors import DataError
    from poisonlab.model_checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(nn.Linear(3, 2), tmp_path / "m.safetensors", "evil_module:factory", (3,), 2)
    with pytest.raises(DataError, match="never imports code"):
        load_checkpoint(path)


# ---------------------------------------------------------------- 2. re-runs: same config, another config
def test_rerun_same_config_says_complete_and_recomputes_nothing(tmp_path):
    config, out = write(tmp_path, FEDERATED), tmp_path / "run"
    assert cli(["run", str(config), "--out", str(out), "--quiet"])[0] == 0
    stamp = (out / "metrics.json").stat().st_mtime_ns
    progress.MIN_INTERVAL, before = 0.0, progress.MIN_INTERVAL
    try:
        code, stdout, err = cli(["run", str(config), "--out", str(out)])
    finally:
        progress.MIN_INTERVAL = before
    assert code == 0
    assert "holds this config's finished run; nothing to recompute" in err
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert "clean accuracy" in stdout  # the stored figures are shown


def test_rerun_another_config_is_refused_with_a_hint_and_force_replaces(tmp_path):
    out = tmp_path / "run"
    assert cli(["run", str(write(tmp_path, FEDERATED)), "--out", str(out), "--quiet"])[0] == 0
    (out / "my-notes.txt").write_text("mine")
    other = write(tmp_path, {**FEDERATED, "seed": 3}, "other.yaml")
    code, _, err = cli(["run", str(other), "--out", str(out), "--quiet"])
    assert code == 2 and err.count("\n") == 1
    assert "holds a run of another config (it differs at seed)" in err and "--force" in err and "--out" in err
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0  # untouched
    assert cli(["run", str(other), "--out", str(out), "--quiet", "--force"])[0] == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 3
    assert (out / "my-notes.txt").read_text() == "mine"  # a user's file is kept


def test_default_directory_rerun_of_a_howto_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["run", str(write(tmp_path, FEDERATED)), "--quiet"])[0] == 0
    code, _, err = cli(["run", str(write(tmp_path, FEDERATED)), "--quiet", "--set", "federated.rounds=1"])
    assert code == 2 and "runs/tiny-fl holds a run of another config" in err and "federated.rounds" in err


def test_an_attack_that_never_fires_warns_at_start_and_bannered_in_the_report(tmp_path):
    doc = json.loads(json.dumps(FEDERATED))
    doc["federated"]["adversary"]["schedule"] = {"start": 5}
    doc["output"] = {"report": True}
    code, _, err = cli(["run", str(write(tmp_path, doc)), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    warning_lines = [line for line in err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1
    assert "federated.adversary.schedule never fires within the 2 configured rounds" in warning_lines[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["warnings"] and "never fires" in metrics["warnings"][0]
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'role="alert"' in page and "never fires" in page


def test_a_firing_attack_gives_no_warning():
    from poisonlab.config.ignored import never_firing_adversaries
    from poisonlab.config.load import parse

    assert never_firing_adversaries(parse(FEDERATED)) == []
    assert never_firing_adversaries(parse(CENTRALIZED)) == []


# ---------------------------------------------------------------- 5. progress on long steps
@pytest.fixture
def every_line(monkeypatch):
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)


def test_centralized_run_shows_epochs_of_both_models_and_detectors(tmp_path, every_line):
    doc = {**CENTRALIZED, "detect": [{"name": "spectral_signatures"}], "output": {"report": False}}
    code, _, err = cli(["run", str(write(tmp_path, doc)), "--out", str(tmp_path / "run")])
    assert code == 0, err
    assert "poisonlab: clean model: epoch 1/2: loss" in err
    assert "poisonlab: poisoned model: epoch 2/2: loss" in err
    assert "detector spectral_signatures:" in err and "flagged (" in err
    code, _, quiet_err = cli(["run", str(write(tmp_path, doc)), "--out", str(tmp_path / "run2"), "--quiet"])
    assert code == 0 and "epoch" not in quiet_err


def test_neural_cleanse_reports_its_optimisation(every_line, capsys):
    from poisonlab.detect import get
    from poisonlab.models import make_model

    model = make_model("cnn", (1, 8, 8), 3, channels=[2, 2], hidden=4)
    with progress.shown():
        get("neural_cleanse", steps=3, samples=8).scan(model=model, clean=torch.rand(8, 1, 8, 8))
    err = capsys.readouterr().err
    assert "step 3/3:" in err and "of 3 classes have a trigger" in err


def test_progress_is_off_outside_a_shown_block(every_line, capsys):
    progress.step("not shown")
    with progress.shown(False):
        progress.step("not shown either")
    assert capsys.readouterr().err == ""
    progress.warn("a warning is always shown")
    assert capsys.readouterr().err == "poisonlab: warning: a warning is always shown\n"


def test_sweep_shows_each_cells_result_and_an_eta(tmp_path):
    doc = json.loads(json.dumps(FEDERATED))
    doc["federated"]["rounds"] = 1
    doc["grid"] = {"seed": [0, 1, 2]}
    code, out, err = cli(["sweep", str(write(tmp_path, doc)), "--out", str(tmp_path / "s"), "--no-report"])
    assert code == 0, err
    assert "[1/3] done in" in out and "clean acc." in out and "ASR" in out
    assert "2 to go, ETA" in out and "1 to go, ETA" in out
    assert "[3/3] done in" in out and "0 to go" not in out


def test_eta_and_duration():
    assert progress.eta(0, 10, 5.0) == ""
    assert progress.eta(2, 10, 20.0) == "ETA 1 min 20 s"
    assert progress.eta(10, 10, 20.0) == ""
    assert progress.duration(7300) == "2 h 1 min"


def test_makefile_setup_says_what_it_installs():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "pip install -q" not in makefile
    assert makefile.count("poisonlab set-up") >= 3


# ---------------------------------------------------------------- 6. the Python API honours POISONLAB_THREADS
def test_run_experiment_applies_poisonlab_threads(monkeypatch):
    from poisonlab import threads
    from poisonlab.config.load import parse
    from poisonlab.experiment import run_experiment

    monkeypatch.setattr(threads, "_explicit", {"set": False})
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    monkeypatch.setenv("POISONLAB_THREADS", str(target))
    try:
        doc = json.loads(json.dumps(FEDERATED))
        doc["federated"]["rounds"] = 1
        run_experiment(parse(doc), None, quiet=True)
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)


def test_an_explicit_thread_count_wins_over_the_environment(monkeypatch):
    from poisonlab import threads

    monkeypatch.setattr(threads, "_explicit", {"set": False})
    before = torch.get_num_threads()
    monkeypatch.setenv("POISONLAB_THREADS", "3")
    try:
        threads.apply_threads(2)
        assert threads.apply_threads() is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- 7. the smaller items
def test_piping_into_a_closed_reader_ends_quietly(tmp_path):
    import subprocess
    import sys

    script = ("import sys\nfrom poisonlab.cli import main\n"
              "sys.exit(main(['list', 'all', '--markdown']))\n")
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -1", shell=True, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_config_diff_shows_a_key_once_never_absent_beside_its_own_subkeys():
    from poisonlab.report.html import config_diff, flatten

    base = flatten({"seed": 0, "federated": None, "model": {"name": "cnn", "params": {}}})
    mine = flatten({"seed": 1, "federated": {"clients": 5}, "model": {"name": "cnn", "params": {"hidden": 8}}})
    diff = config_diff(base, mine)
    assert diff == {"seed": 1, "federated.clients": 5, "model.params.hidden": 8}
    back = config_diff(mine, base)
    assert back == {"seed": 0, "federated": None, "model.params": {}}


def test_federated_report_config_leaves_out_unused_centralized_sections():
    from poisonlab.report.html import used_config

    fl = {"kind": "federated", "config": {"name": "x", "train": {"epochs": 1}, "poison": [], "injection": {},
                                          "federated": {"clients": 2}}}
    assert set(used_config(fl)) == {"name", "federated"}
    central = {"kind": "centralized", "config": {"name": "x", "train": {"epochs": 1}, "federated": None}}
    assert set(used_config(central)) == {"name", "train", "federated"}


@pytest.mark.parametrize("flagged", [[[5], [5, 1]], [[], []], [[1], [2]]])
def test_demo_row_shows_the_reports_precision_and_recall(flagged):
    from poisonlab.commands.demo_cmd import _row
    from poisonlab.report.html import _flag_rates

    history = [{"round": r, "sampled": [1, 2, 5], "malicious": [5], "flagged": f} for r, f in enumerate(flagged)]
    metrics = {"final": {"clean_accuracy": 0.9, "attack_success_rate": 0.1}, "history": history, "wall_time": 1.0}
    _, _, _, precision, recall, _ = _row("krum", metrics)
    report_precision, report_recall, _ = _flag_rates(metrics)
    if "nobody flagged" in report_precision:
        assert precision == "nobody flagged"
    else:
        assert precision == report_precision
    assert recall == report_recall


def test_a_non_latin_run_name_draws_without_font_warnings():
    import numpy as np

    from poisonlab.report.charts import accuracy_asr
    from poisonlab.report.entry import Entry
    from poisonlab.report.plots import confusion_panels

    run = {"name": "実験-ب", "kind": "federated",
           "history": [{"round": 0, "clean_accuracy": 0.5, "attack_success_rate": 0.1},
                       {"round": 1, "clean_accuracy": 0.6, "attack_success_rate": 0.2}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = accuracy_asr([Entry("実験-ب 🙂", "#0072B2", run)])  # SVG: the browser picks the fonts
        png = confusion_panels([("実験-ب 🙂", np.eye(2, dtype=int), ["猫", "ب"])])  # matplotlib's fallback fonts
    assert svg is not None and "実験-ب 🙂" in svg
    assert png[:4] == b"\x89PNG"
    assert not [w for w in caught if "missing from font" in str(w.message)], [str(w.message) for w in caught]


def test_fltrust_without_server_data_names_the_config_key(tmp_path):
    doc = json.loads(json.dumps(FEDERATED))
    doc["federated"]["aggregator"] = {"name": "fltrust"}
    code, _, err = cli(["run", str(write(tmp_path, doc)), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert "federated.server_data.root_size" in err and "ctx.extras" not in err.split("(Python API")[0]
