"""Run a poisonlab federated experiment on Flower's simulation engine (Ray backend).

``run_simulation(experiment)`` takes the experiment in the YAML's shape (an ExperimentConfig, a
dict or its JSON string; the built-in engine's ``Federation`` is built for it: same data, seeds,
adversaries, aggregator, see prepared.py) or a ``Federation`` object itself, and runs it with poisonlab's ServerApp
(RobustStrategy, the engine's evaluation) and ClientApps on ``flwr.simulation.run_simulation``,
one virtual SuperNode per client. It returns the per-round history in the shape of the built-in
engine's metrics.json entries (RoundRecord.to_dict, plus ``flagged_nodes`` and ``rejected``).

The prepared experiment goes to the Ray object store once; each actor reads it once. Ray is
started with a bounded number of CPUs and is shut down at the end, whatever happens.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from typing import Any

import torch

from poisonlab import progress
from poisonlab.errors import ConfigError
from poisonlab.fl.buffers import load_buffers
from poisonlab.flower import require_flwr

require_flwr()

_CACHE: dict[str, Any] = {}


class RaySource:
    """source(settings) -> the Prepared experiment held in Ray's object store (read once per process)."""

    def __init__(self, ref):
        self.ref = ref

    def __call__(self, settings: dict):
        key = self.ref.hex()
        if key not in _CACHE:
            import ray

            _CACHE.clear()
            _CACHE[key] = ray.get(self.ref)
        return _CACHE[key]


def run_simulation(experiment: Any, *, num_cpus: int = 2, client_cpus: float = 1.0, client_gpus: float | None = None,
                   verbose: bool = False, resume: bool = False) -> dict:
    """Run the experiment on Flower's simulation engine.

    Returns {"history": [metrics.json history entries], "params": final flat global model (d,),
    "buffers": its buffers, "model": a copy of the engine's model holding both, "wall_time": seconds}.

    num_cpus: CPUs Ray may use (its actor pool runs num_cpus / client_cpus ClientApps at once);
    client_cpus: CPUs reserved per ClientApp actor; client_gpus: GPUs reserved per ClientApp actor (None: the
    config's federated.client_gpus; above 0 the experiment's device must be CUDA, and Ray gets every visible GPU).
    wall_time includes Ray's start-up. Checkpoints: the federation config's checkpoint_every / checkpoint_dir
    (server-side, flower/resume.py); resume=True continues from the checkpoint in checkpoint_dir (ConfigError
    without a checkpoint_dir). A diverged run raises DivergedError (poisonlab/divergence.py).
    """
    import ray
    from flwr.simulation import run_simulation as flwr_run_simulation

    from poisonlab.flower.apps import client_app, server_app
    from poisonlab.fl.federation import Federation
    from poisonlab.flower.prepared import Prepared, experiment_json, prepare

    started = time.perf_counter()
    if isinstance(experiment, Federation):  # the built-in engine's own inputs, already assembled
        prepared = Prepared(experiment, experiment.config.rounds)
    else:
        prepared = prepare(experiment_json(experiment))
    histories: list[dict] = []
    gpus = client_gpu_share(prepared.federation, client_gpus)
    num_gpus = torch.cuda.device_count() if gpus > 0 else 0
    backend = {"init_args": {"num_cpus": int(num_cpus), "num_gpus": num_gpus, "include_dashboard": False},
               "client_resources": {"num_cpus": float(client_cpus), "num_gpus": gpus}}
    _quiet(verbose)
    progress.step(f"starting Flower's simulation (Ray) for {prepared.num_clients} clients, {prepared.rounds} rounds",
                  last=True)
    try:
        _start_ray(int(num_cpus), verbose, num_gpus)
        source = RaySource(ray.put(prepared))
        flwr_run_simulation(server_app=server_app({"resume": bool(resume)}, sink=histories.append,
                                                  source=lambda s: prepared),
                            client_app=client_app(source=source), num_supernodes=prepared.num_clients,
                            backend_name="ray", backend_config=backend, verbose_logging=verbose)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if not histories:
        raise ConfigError("the Flower simulation ended without a history; see the Flower log above")
    if "error" in histories[0]:
        raise histories[0]["error"]
    model = copy.deepcopy(prepared.federation.model)
    torch.nn.utils.vector_to_parameters(histories[0]["params"].clone(), model.parameters())
    load_buffers(model, histories[0].get("buffers", {}))
    return {"history": histories[0]["history"], "params": histories[0]["params"], "model": model,
            "buffers": histories[0].get("buffers", {}),
            "wall_time": time.perf_counter() - started}


def client_gpu_share(federation, client_gpus: float | None) -> float:
    """GPUs per ClientApp: client_gpus, or the federation config's client_gpus; above 0 only when the federation
    runs on CUDA (its model and data are there, and the ClientApps must see a GPU to read them); 0 refuses a
    federation on CUDA (a ClientApp without a GPU cannot read its tensors)."""
    share = float(federation.config.client_gpus if client_gpus is None else client_gpus)
    on_cuda = federation.device.type == "cuda"
    if share < 0 or (share > 0) != on_cuda:
        raise ConfigError(f"client_gpus={share} with the federation on {federation.device}; accepted: client_gpus > 0"
                          " with device cuda, 0 with device cpu")
    return share


def _start_ray(num_cpus: int, verbose: bool, num_gpus: int = 0) -> None:
    """ray.init with num_cpus and num_gpus, no dashboard, one torch thread per actor, poisonlab importable."""
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=verbose,
             logging_level=logging.INFO if verbose else logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1",
                                       "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}})


#: Flower's log lines that are not news to a poisonlab user: its run_simulation entry point being deprecated
#: (poisonlab drives the simulation through it; see docs/flower.md) and FedAvg's note that client evaluation is off
#: (poisonlab evaluates on the server).
NOT_NEWS = ("DEPRECATED FEATURE", "FEATURE UPDATE", "fraction_evaluate is set to 0.0")


class _NotNews(logging.Filter):
    """Drops Flower's log records that start with one of NOT_NEWS."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage()).lstrip()
        return not any(message.startswith(text) for text in NOT_NEWS)


def _quiet(verbose: bool) -> None:
    """Flower logs every round at INFO; keep its warnings only unless verbose, less the NOT_NEWS ones; Ray's
    future warning about GPU environment variables is answered by setting the variable it asks for."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flwr_logger = logging.getLogger("flwr")
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _NotNews) for f in flwr_logger.filters):
        flwr_logger.addFilter(_NotNews())
