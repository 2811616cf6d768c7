"""Start a Flower deployment on this machine (one SuperLink, N SuperNodes), secured, for docs, tests and labs.

    with LocalDeployment(workdir, node_configs=[{"partition-id": i, "num-partitions": 4} for i in range(4)]) as dep:
        app = write_app(workdir / "app", {"experiment": json.dumps(experiment), "output": str(out)})
        dep.run(app, timeout=120)

What it runs (docs/flower.md gives the same steps by hand, for several machines):
  python -m poisonlab.flower.certificates certs --hosts HOST --nodes N      (unless certificates are given)
  flower-superlink --ssl-ca-certfile certs/ca.crt --ssl-certfile certs/server.crt --ssl-keyfile certs/server.key
                   --enable-supernode-auth --host HOST --port P --disable-runtime-dependency-installation
  flwr supernode register certs/node-i.pub local                              (i = 0..N-1)
  flower-supernode --root-certificates certs/ca.crt --auth-supernode-private-key certs/node-i.key
                   --superlink 127.0.0.1:P --port Q_i --node-config node-i.toml
  flwr run APP local --stream      (FLWR_HOME/config.toml: [superlink.local] address, root-certificates)
With insecure=True the SuperLink, SuperNodes and CLI run with --insecure / insecure = true instead, and a
warning line says so. ``stop()`` (also on exit of the ``with`` block, whatever happened) terminates every
process it started and their descendants (Flower's SuperExec and app processes), waits a bounded time, then
kills survivors, by process id. Logs go to files in the work directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from poisonlab import progress
from poisonlab.errors import ConfigError, ResourceError
from poisonlab.flower import require_flwr
from poisonlab.flower.certificates import Certificates, check_hosts, make_certificates

require_flwr()
import tomli_w  # noqa: E402  (a dependency of flwr)

HOST = "127.0.0.1"
SERVERAPP = "poisonlab.flower.apps:serverapp"
CLIENTAPP = "poisonlab.flower.apps:clientapp"


def free_port(host: str = HOST) -> int:
    """A TCP port on host (an address of this machine) that is free right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_host(host: str) -> str:
    """The bind address: an IP address or a DNS name (ConfigError naming a bad one)."""
    return check_hosts([host])[0] if host not in ("0.0.0.0", "::") else host


def _certificates(value, nodes: int) -> Certificates | None:
    """A Certificates (absolute paths) from a directory (its files must exist) or a Certificates; None stays None."""
    if value is None:
        return None
    if isinstance(value, Certificates):
        return Certificates(value.directory.resolve(), value.nodes)
    certs = Certificates(Path(value).resolve(), nodes)
    missing = [str(p) for p in (certs.ca_cert, certs.server_cert, certs.server_key) if not p.is_file()]
    if missing:
        raise ConfigError(f"certificates directory {value} lacks {', '.join(missing)}; accepted: a directory made"
                          " by python -m poisonlab.flower.certificates")
    return certs


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
    """One SuperLink and len(node_configs) SuperNodes on this machine, secured unless insecure=True; stopped on exit.

    host: the address the SuperLink binds (default 127.0.0.1; "0.0.0.0" or a LAN address so that SuperNodes on
    other machines can reach it; the local SuperNodes and the CLI connect through 127.0.0.1 then);
    port: the SuperLink's port (0: a free one);
    certificates: a directory made by poisonlab.flower.certificates (ca.crt, server.crt/.key, node-<i>.key/.pub),
    or a Certificates; None: a throw-away set is made (replaced) in workdir/certs for host (and loopback) and the
    local nodes (with host 0.0.0.0, give certificates made for the names remote SuperNodes use);
    node_auth: Flower's SuperNode authentication (--enable-supernode-auth): only registered public keys are
    admitted; each local SuperNode i runs with node-<i>.key and its node-<i>.pub is registered before it starts;
    allowed_keys: more public key files (OpenSSH) to register, for SuperNodes on other machines;
    insecure: plain HTTP, no node authentication (one warning line is printed).
    The processes run in workdir: paths inside node_configs (npz, data-dir) should be absolute.
    """

    def __init__(self, workdir: Path, node_configs: list[dict], startup_timeout: float = 60.0, *,
                 host: str = HOST, port: int = 0, certificates=None, node_auth: bool = True,
                 allowed_keys=(), insecure: bool = False):
        self.workdir = Path(workdir).resolve()  # the processes run there: every path they get is absolute
        self.node_configs = [dict(c) for c in node_configs]
        self.startup_timeout = startup_timeout
        self.host, self.port = check_host(host), int(port)
        self.insecure, self.node_auth = bool(insecure), bool(node_auth) and not insecure
        self.allowed_keys = [Path(k) for k in allowed_keys]
        if self.insecure and (certificates is not None or self.allowed_keys):
            raise ConfigError("insecure=True with certificates or allowed_keys; accepted: one or the other")
        if self.allowed_keys and not self.node_auth:
            raise ConfigError("allowed_keys without node authentication (node_auth=False); accepted: node_auth=True")
        self.certificates = _certificates(certificates, len(self.node_configs))
        self.procs: list[subprocess.Popen] = []
        self.nodes: list[subprocess.Popen] = []
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

    @property
    def address(self) -> str:
        """host:port where this machine's SuperNodes and the flwr CLI reach the SuperLink."""
        host = HOST if self.host in ("0.0.0.0", "::") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        """Make certificates if needed, start the SuperLink, wait until it listens, register the node keys,
        then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.insecure:
            progress.warn("the Flower deployment runs WITHOUT TLS and node authentication (insecure=True):"
                          " anyone who reaches the port can join and read the models")
        elif self.certificates is None:
            self.certificates = make_certificates(self.workdir / "certs", [self.host], len(self.node_configs),
                                                  force=True)
        self.port = self.port or free_port(self.host)
        self._spawn("superlink", [_bin("flower-superlink"), *self.superlink_security(), "--host", self.host,
                                  "--port", str(self.port), "--disable-runtime-dependency-installation"])
        self._wait_listening(self.port)
        self._write_flwr_config()
        if self.node_auth:  # every key at once (one flwr CLI process each)
            self.register(*self.allowed_keys, *(self.certificates.node_public_key(i)
                                                for i in range(len(self.node_configs))))
        for i, node_config in enumerate(self.node_configs):
            self.start_node(i, node_config, register=False)

    def superlink_security(self) -> list[str]:
        """The SuperLink's TLS and node-authentication flags."""
        if self.insecure:
            return ["--insecure"]
        c = self.certificates
        flags = ["--ssl-ca-certfile", str(c.ca_cert), "--ssl-certfile", str(c.server_cert),
                 "--ssl-keyfile", str(c.server_key)]
        return flags + (["--enable-supernode-auth"] if self.node_auth else [])

    def node_security(self, key: Path | None) -> list[str]:
        """A SuperNode's TLS (root certificate) and authentication (private key) flags."""
        if self.insecure:
            return ["--insecure"]
        flags = ["--root-certificates", str(self.certificates.ca_cert)]
        return flags + (["--auth-supernode-private-key", str(key)] if self.node_auth and key is not None else [])

    def start_node(self, index: int, node_config: dict, key: Path | None = None,
                   register: bool = True) -> subprocess.Popen:
        """Start SuperNode `index` with node_config (written as node-<index>.toml) and its key (default
        node-<index>.key of the certificates), registering the key's .pub first when register is True."""
        key = Path(key).resolve() if key is not None else None if self.insecure else self.certificates.node_key(index)
        if self.node_auth and register:
            self.register(key.with_suffix(".pub"))
        path = self.workdir / f"node-{index}.toml"
        path.write_text(tomli_w.dumps(node_config))
        proc = self._spawn(f"supernode-{index}", [_bin("flower-supernode"), *self.node_security(key),
                                                  "--superlink", self.address, "--host", HOST,
                                                  "--port", str(free_port()), "--node-config", str(path)])
        self.nodes.append(proc)
        return proc

    def register(self, *public_keys: Path) -> None:
        """Allow SuperNodes' public keys on the SuperLink (``flwr supernode register KEY local``, all at once)."""
        public_keys = tuple(Path(k).resolve() for k in public_keys)
        for key in public_keys:
            if not Path(key).is_file():
                raise ConfigError(f"public key file {key} does not exist; accepted: an OpenSSH EC public key"
                                  " (node-<i>.pub from poisonlab.flower.certificates)")
        procs = [(key, subprocess.Popen([_bin("flwr"), "supernode", "register", str(key), "local"], env=self.env,
                                        cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
                 for key in public_keys]
        failed = []
        for key, proc in procs:
            try:
                output, _ = proc.communicate(timeout=self.startup_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                lines = output.decode(errors="replace").strip().splitlines()
                failed.append(f"{key} (exit {proc.returncode}: {lines[-1] if lines else 'no output'})")
        if failed:
            raise ResourceError(f"flwr supernode register failed for {'; '.join(failed)}")

    def list_nodes(self) -> list[dict]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls local --format json``): node-id, status, ..."""
        out = subprocess.run([_bin("flwr"), "supernode", "ls", "local", "--format", "json"], env=self.env,
                             cwd=self.workdir, capture_output=True, timeout=self.startup_timeout)
        try:
            return list(json.loads(out.stdout)["nodes"])
        except (ValueError, KeyError, TypeError):
            text = (out.stdout + out.stderr).decode(errors="replace").strip().splitlines()
            raise ResourceError(f"flwr supernode ls failed (exit {out.returncode}):"
                                f" {text[-1] if text else 'no output'}") from None

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
        host = self.address.rsplit(":", 1)[0].strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                raise ResourceError(f"flower-superlink exited with code {self.procs[0].returncode};"
                                    f" see {self.workdir / 'superlink.log'}")
            with socket.socket(family, socket.SOCK_STREAM) as s:
                if s.connect_ex((host, port)) == 0:
                    return
            time.sleep(0.2)
        raise ResourceError(f"flower-superlink did not listen on {self.address} within {self.startup_timeout}s")

    def _write_flwr_config(self) -> None:
        """$FLWR_HOME/config.toml: the 'local' connection the flwr CLI uses (with the CA certificate)."""
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        local = {"address": self.address, "insecure": True} if self.insecure else \
            {"address": self.address, "root-certificates": str(self.certificates.ca_cert.resolve())}
        config = {"superlink": {"default": "local", "local": local}}
        (home / "config.toml").write_text(tomli_w.dumps(config))

    # ---------------------------------------------------------------- run
    def run(self, app_dir: Path, timeout: float = 300.0, run_config: dict | None = None) -> subprocess.CompletedProcess:
        """``flwr run app_dir local --stream`` (blocks until the run ends or timeout seconds pass)."""
        cmd = [_bin("flwr"), "run", str(Path(app_dir).resolve()), "local", "--stream"]
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
