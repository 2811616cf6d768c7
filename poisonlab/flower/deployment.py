"""Start a local Flower deployment (one SuperLink, N SuperNodes on 127.0.0.1) for docs and tests.

    with LocalDeployment(workdir, node_configs=[{"partition-id": i, "num-partitions": 4} for i in range(4)]) as dep:
        app = write_app(workdir / "app", {"experiment": json.dumps(experiment), "output": str(out)})
        dep.run(app, timeout=120)

What it runs (see docs/flower.md for the same steps by hand):
  flower-superlink --insecure --port P --disable-runtime-dependency-installation
  flower-supernode --insecure --superlink 127.0.0.1:P --port Q_i --node-config node_i.toml   (i = 0..N-1)
  flwr run APP local --stream        (FLWR_HOME/config.toml: [superlink.local] address = "127.0.0.1:P")
Every process binds to 127.0.0.1 on a free port. ``stop()`` (also on exit of the ``with``
block, whatever happened) terminates every process it started and their descendants (Flower's
SuperExec and app processes), waits a bounded time, then kills survivors, by process id.
Logs go to files in the work directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from poisonlab.errors import ConfigError, ResourceError
from poisonlab.flower import require_flwr

require_flwr()
import tomli_w  # noqa: E402  (a dependency of flwr)

HOST = "127.0.0.1"
SERVERAPP = "poisonlab.flower.apps:serverapp"
CLIENTAPP = "poisonlab.flower.apps:clientapp"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_app(app_dir: Path, run_config: dict, name: str = "poisonlab-app") -> Path:
    """Write a Flower app directory (pyproject.toml) whose components are poisonlab's apps.

    run_config becomes [tool.flwr.app.config] (values: str, int, float, bool; the experiment as a
    JSON string under 'experiment').
    """
    bad = {k: v for k, v in run_config.items() if not isinstance(v, (str, int, float, bool))}
    if bad:
        raise ConfigError(f"run config values {bad} are not TOML scalars; accepted: str, int, float, bool")
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": name, "version": "1.0.0", "description": "poisonlab on Flower",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "poisonlab",
                                  "components": {"serverapp": SERVERAPP, "clientapp": CLIENTAPP},
                                  "config": dict(run_config)}}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    (app_dir / "poisonlab_app.py").write_text(
        '"""The components live in poisonlab.flower.apps; this module only marks the app directory."""\n')
    return app_dir


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else the name on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _children(pid: int) -> list[int]:
    """Direct children of pid (from /proc; empty where /proc is unavailable)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.parent.name))
    return out


def descendants(pid: int) -> list[int]:
    """All descendants of pid (children, grandchildren, ...)."""
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


class LocalDeployment:
    """One SuperLink and len(node_configs) SuperNodes on 127.0.0.1, stopped on exit."""

    def __init__(self, workdir: Path, node_configs: list[dict], startup_timeout: float = 60.0):
        self.workdir = Path(workdir)
        self.node_configs = [dict(c) for c in node_configs]
        self.startup_timeout = startup_timeout
        self.port = 0
        self.procs: list[subprocess.Popen] = []
        self.known: set[int] = set()
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, "FLWR_HOME": str(self.workdir / "flwr-home"), "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        """Start the SuperLink, wait until it listens, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._spawn("superlink", [_bin("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port),
                                  "--disable-runtime-dependency-installation"])
        self._wait_listening(self.port)
        for i, node_config in enumerate(self.node_configs):
            path = self.workdir / f"node-{i}.toml"
            path.write_text(tomli_w.dumps(node_config))
            self._spawn(f"supernode-{i}", [_bin("flower-supernode"), "--insecure", "--superlink",
                                           f"{HOST}:{self.port}", "--host", HOST, "--port", str(free_port()),
                                           "--node-config", str(path)])
        self._write_flwr_config()

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        self.known.add(proc.pid)
        return proc

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                raise ResourceError(f"flower-superlink exited with code {self.procs[0].returncode};"
                                    f" see {self.workdir / 'superlink.log'}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex((HOST, port)) == 0:
                    return
            time.sleep(0.2)
        raise ResourceError(f"flower-superlink did not listen on {HOST}:{port} within {self.startup_timeout}s")

    def _write_flwr_config(self) -> None:
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {"default": "local", "local": {"address": f"{HOST}:{self.port}", "insecure": True}}}
        (home / "config.toml").write_text(tomli_w.dumps(config))

    # ---------------------------------------------------------------- run
    def run(self, app_dir: Path, timeout: float = 300.0, run_config: dict | None = None) -> subprocess.CompletedProcess:
        """``flwr run app_dir local --stream`` (blocks until the run ends or timeout seconds pass)."""
        cmd = [_bin("flwr"), "run", str(app_dir), "local", "--stream"]
        if run_config:
            cmd += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
        log = self.workdir / "flwr-run.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                    start_new_session=True)
            self.procs.append(proc)
            self.known.add(proc.pid)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._track()
                self._terminate([proc.pid, *descendants(proc.pid)])
                raise ResourceError(f"flwr run did not finish within {timeout}s; see {log}") from None
        return subprocess.CompletedProcess(cmd, code, log.read_bytes(), b"")

    # ---------------------------------------------------------------- stop
    def _track(self) -> None:
        """Remember every live descendant of the started processes (Flower detaches some of them)."""
        for proc in self.procs:
            self.known.update(descendants(proc.pid))

    def stop(self, grace: float = 10.0) -> None:
        """Terminate every started process and its descendants; kill what is left after grace seconds."""
        self._track()
        self._terminate(sorted(self.known), grace)
        for proc in self.procs:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass

    def _terminate(self, pids: list[int], grace: float = 10.0) -> None:
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            for proc in self.procs:
                proc.poll()  # reap our direct children
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.poll()

    def alive(self) -> list[int]:
        """Pids of started processes (and tracked descendants) still running."""
        for proc in self.procs:
            proc.poll()
        return [p for p in sorted(self.known) if _alive(p)]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _toml_value(value) -> str:
    """A TOML literal for a --run-config override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if "'" in str(value):
        raise ConfigError(f"run config value {value!r} contains a single quote; accepted: strings without it")
    return f"'{value}'"
