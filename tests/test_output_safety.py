"""Output safety, unit by unit: safe names (outdir.safe_name), claiming a directory (outdir.claim), the
re-run decision (rerun.prepare_run_dir), an unfinished run resuming by itself, and the CLI's last line of
defence for OSError and closed pipes. The catalog cases are in tests/test_bad_inputs_paths.py."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from poisonlab.config.load import parse
from poisonlab.errors import ConfigError
from poisonlab.outdir import MARKER, MAX_NAME_BYTES, claim, default_dir, safe_name, written_by_poisonlab
from poisonlab.rerun import RUN_FILES, prepare_run_dir

DOC = {"name": "x", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
       "federated": {"clients": 4, "rounds": 2, "checkpoint_every": 1,
                     "local": {"epochs": 1, "batch_size": 64, "lr": 0.05}},
       "output": {"report": False}}


@pytest.mark.parametrize("name, safe", [
    ("plain-name_1.0", "plain-name_1.0"), ("a/b", "a_b"), ("a\\b", "a_b"), ("..", "_"), (".hidden", "_hidden"),
    ("../x", "__x"), ("/abs/path", "_abs_path"), ("tab\there", "tab_here"), ("  padded  ", "padded"),
    ("実験", "実験"), ("x" * MAX_NAME_BYTES, "x" * MAX_NAME_BYTES),
])
def test_safe_name_is_one_component_inside_runs(name, safe):
    assert safe_name(name) == safe
    path = default_dir(name)
    assert path.parent == Path("runs") and path.name == safe and path.name not in (".", "..")


@pytest.mark.parametrize("name, says", [("", "empty"), (" \t ", "empty"), ("a\x00b", "NUL"),
                                        ("x" * (MAX_NAME_BYTES + 1), "at most 200 bytes"),
                                        ("é" * 101, "202 bytes")])
def test_unsafe_names_are_refused(name, says):
    with pytest.raises(ConfigError, match=says):
        safe_name(name)


def test_claim_accepts_new_empty_and_own_directories_and_writes_a_marker(tmp_path):
    assert claim(tmp_path / "new" / "deeper", "run").is_dir()
    (tmp_path / "empty").mkdir()
    claim(tmp_path / "empty", "run")
    assert json.loads((tmp_path / "empty" / MARKER).read_text()) == {"kind": "run"}
    (tmp_path / "empty" / "metrics.json").write_text("{}")
    claim(tmp_path / "empty", "run")  # its own files: fine


def test_claim_refuses_files_and_user_directories_without_touching_them(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ConfigError, match="existing file"):
        claim(tmp_path / "f", "run")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match="'thesis.tex'"):
        claim(tmp_path / "d", "run")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["thesis.tex"]


def test_claim_refuses_a_directory_of_another_kind(tmp_path):
    claim(tmp_path / "r", "run")
    with pytest.raises(ConfigError, match="holds a poisonlab run output, not a sweep"):
        claim(tmp_path / "r", "sweep")


def test_older_run_directories_and_killed_runs_count_as_poisonlabs(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")
    assert not written_by_poisonlab(tmp_path / "old")  # metrics.json alone could be anyone's
    (tmp_path / "old" / "config.yaml").write_text("name: x\n")
    assert written_by_poisonlab(tmp_path / "old")
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    (tmp_path / "killed" / "checkpoints" / "checkpoint.json").write_text("{}")
    assert written_by_poisonlab(tmp_path / "killed")


def test_prepare_run_dir_states(tmp_path):
    config, other = parse(DOC), parse({**DOC, "seed": 1})
    out = tmp_path / "run"
    assert prepare_run_dir(out, config) == "new"
    assert prepare_run_dir(out, config) == "resume"  # same config, not finished
    for name in ("metrics.json", "manifest.json"):
        (out / name).write_text("{}")
    assert prepare_run_dir(out, config) == "complete"
    assert prepare_run_dir(out, parse({**DOC, "output": {"report": True}})) == "complete"  # output does not count
    with pytest.raises(ConfigError, match=r"differs at seed\);.*--force"):
        prepare_run_dir(out, other)
    with pytest.raises(ConfigError, match="differs at engine"):
        prepare_run_dir(out, config, engine="flower")
    (out / "notes.md").write_text("mine")
    assert prepare_run_dir(out, other, force=True) == "new"
    assert not any((out / name).exists() for name in RUN_FILES)
    assert (out / "notes.md").read_text() == "mine"
    assert prepare_run_dir(out, other) == "resume"


def test_an_unfinished_run_of_the_same_config_resumes_by_itself(tmp_path, monkeypatch):
    from poisonlab import progress
    from poisonlab.experiment import run_experiment

    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    out = tmp_path / "run"
    first = run_experiment(parse(DOC), out, quiet=True)
    (out / "metrics.json").unlink()  # as if killed after the last checkpoint, before the final files
    (out / "manifest.json").unlink()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        again = run_experiment(parse(DOC), out)
    assert "resuming the unfinished run" in err.getvalue()
    assert [r["round"] for r in again["history"]] == [0, 1]
    assert again["final"]["clean_accuracy"] == first["final"]["clean_accuracy"]


def test_resume_on_a_centralized_run_warns(tmp_path):
    from poisonlab.experiment import run_experiment

    doc = {"name": "c", "data": {"dataset": "digits"}, "model": {"name": "logistic"},
           "train": {"epochs": 1}, "output": {"report": False}}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run_experiment(parse(doc), tmp_path / "run", resume=True, quiet=True)
    assert "warning: --resume: no checkpoint" in err.getvalue() and "centralized runs have no checkpoints" in err.getvalue()


def test_an_os_error_anywhere_in_a_command_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    import poisonlab.commands.list_cmd as list_cmd
    from poisonlab.cli import main

    where = str(tmp_path / "x")
    for error, line in ((PermissionError(errno.EACCES, "Permission denied", where), f"permission denied: {where}"),
                        (OSError(errno.EROFS, "Read-only file system", where), f"cannot use {where}: Read-only file system")):
        def fails(args, error=error):
            raise error

        monkeypatch.setattr(list_cmd, "run", fails)
        assert main(["list", "models"]) == 2
        assert capsys.readouterr().err == f"poisonlab: error: {line}\n"


def test_a_broken_pipe_ends_quietly(monkeypatch, capsys):
    import poisonlab.commands.list_cmd as list_cmd
    from poisonlab.cli import main

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(list_cmd, "run", closed)
    assert main(["list", "models"]) == 1
    assert capsys.readouterr().err == ""


def test_private_keys_are_written_0600_and_results_0644(tmp_path):
    import stat

    from poisonlab.rundir import atomic_write_bytes

    assert stat.S_IMODE(atomic_write_bytes(tmp_path / "a", b"x").stat().st_mode) == 0o644
    assert stat.S_IMODE(atomic_write_bytes(tmp_path / "k", b"x", mode=0o600).stat().st_mode) == 0o600
