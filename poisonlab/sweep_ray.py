"""``poisonlab sweep --executor ray``: a sweep's cells as Ray tasks, on a local Ray or an existing cluster.

Ray arrives with Flower's simulation extra (``pip install poisonlab[flower]``). Each unfinished cell is one task
reserving --cpus-per-cell CPUs and --gpus-per-cell GPUs; the task runs ``run_experiment`` in a temporary
directory on whichever node Ray picks and returns the run directory's files, which the driver writes into the
cell's directory. So a cluster needs no shared filesystem, only poisonlab installed on its nodes. The driver
claims each cell directory first (rerun.prepare_run_dir: another config's run is refused unless --force) and
gathers the results as they finish into the same summary and report (poisonlab/sweep.py). A task that fails
with a poisonlab error stops the sweep with that error's one line; finished cells keep their files.

Cells that differ only in their defenses (a leaderboard's attack x seed, `defend.defenses` in the grid) share
one trained clean and poisoned model when they run in one process (shared_builds.py), so they go to Ray as ONE
task that runs them one after another (share_key): run one per task, each cell would train both models again.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import warnings
from pathlib import Path

from poisonlab.errors import ConfigError, PoisonlabError


def ray_executor(options: dict, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                 local_cpus: int | None = None):
    """An executor (poisonlab/sweep_exec.py) running each task on Ray: an existing cluster at address, or a
    local Ray started with local_cpus CPUs (None: every core of this machine) and shut down afterwards."""
    def run(_run_one, tasks):
        ray = require_ray()
        started = _connect(ray, address, local_cpus)
        try:
            yield from _gather(ray, tasks, options, cpus, gpus)
        finally:
            if started:
                ray.shutdown()

    return run


ADDRESS_HELP = "a running cluster's address (ray://HOST:10001, HOST:6379 or auto) or no --address for a local Ray"


def check_address(address: str | None, timeout: float = 3.0) -> None:
    """ConfigError unless address is None, 'auto', or [ray://]HOST:PORT accepting TCP connections (Ray itself
    retries an unreachable address for minutes)."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} is not an address; accepted: {ADDRESS_HELP}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"--address {address!r}: nothing answers there ({err.strerror or type(err).__name__});"
                          f" accepted: {ADDRESS_HELP}") from None


def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray; accepted: pip install 'poisonlab[flower]' (Flower's"
                          " simulation extra brings ray), or --executor local") from None
    return ray


def _connect(ray, address: str | None, local_cpus: int | None) -> bool:
    """Connect to the cluster at address or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    settings = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        warnings.filterwarnings("ignore", category=FutureWarning, module="ray")  # Ray's tips, not poisonlab's
        if address is None:
            ray.init(num_cpus=local_cpus or os.cpu_count(), **settings)
        else:
            ray.init(address=address, **settings)
    except Exception as err:  # noqa: BLE001 - whatever Ray raises for an address it cannot reach
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        where = f"the Ray cluster at --address {address!r}" if address else "a local Ray"
        raise ConfigError(f"could not start {where} ({first}); accepted: {ADDRESS_HELP}") from None
    return True


def _gather(ray, tasks, options: dict, cpus: float, gpus: float):
    """Submit every task (claiming its directory first), then yield (index, metrics) as each finishes."""
    from poisonlab.rerun import prepare_run_dir, stored_metrics

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_cells)
    groups: dict[str, list[int]] = {}
    for i, (config, cell_dir) in enumerate(tasks):
        if prepare_run_dir(cell_dir, config, "builtin", options.get("force", False)) == "complete":
            yield i, stored_metrics(cell_dir)  # its files were written already: nothing to run
            continue
        groups.setdefault(share_key(config), []).append(i)
    pending = {remote.remote([tasks[i][0] for i in members], options): members for members in groups.values()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        members = pending.pop(ready[0])
        try:
            results, error = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, PoisonlabError):
                raise cause from None
            raise
        for i, (metrics, files) in zip(members, results):
            write_files(tasks[i][1], files)
            yield i, metrics
        if error is not None:
            raise error


def share_key(config) -> str:
    """Cells with equal keys share their trained models in one process: the config but for its defenses.
    Federated cells (whose grid varies the rule, the attack, the data) each get a key of their own."""
    doc = config.model_dump(mode="json")
    if config.kind == "federated" or not isinstance(doc.get("defend"), dict):
        return json.dumps(doc, sort_keys=True)
    return json.dumps({**doc, "defend": {k: v for k, v in doc["defend"].items() if k != "defenses"}}, sort_keys=True)


def run_cells(configs: list, options: dict) -> tuple[list[tuple[dict, dict[str, bytes]]], PoisonlabError | None]:
    """One Ray task: the cells one after another in one sharing() context (their models trained once); each
    cell's (metrics, {relative path: bytes}). A poisonlab error stops the task; the cells done before it are
    returned with it, so the driver keeps their files."""
    from poisonlab.shared_builds import sharing

    results = []
    with sharing():
        for config in configs:
            try:
                results.append(run_cell(config, options))
            except PoisonlabError as err:
                return results, err
    return results, None


def run_cell(config, options: dict) -> tuple[dict, dict[str, bytes]]:
    """(metrics, {relative path: bytes}) of one cell's run_experiment, run in a temporary directory."""
    from poisonlab.experiment import run_experiment
    from poisonlab.outdir import MARKER

    run_options = {k: v for k, v in options.items() if k != "force"}
    with tempfile.TemporaryDirectory(prefix="poisonlab-cell-") as tmp:
        out = Path(tmp) / "cell"
        metrics = run_experiment(config, out, quiet=True, **run_options)
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
                 if p.is_file() and p.name != MARKER}
    return metrics, files


def write_files(cell_dir: Path, files: dict[str, bytes]) -> None:
    """The task's run directory files written into cell_dir (atomically each; the manifest last)."""
    from poisonlab.rundir import atomic_write_bytes

    for name in sorted(files, key=lambda n: n == "manifest.json"):
        path = (cell_dir / name).resolve()
        if cell_dir.resolve() not in path.parents:
            raise ConfigError(f"a Ray task returned the file {name!r} outside its cell directory; accepted: run files")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, files[name])
