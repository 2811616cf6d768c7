"""The tutorial scenario on Flower's deployment engine beside the built-in engine and Flower's simulation.

    .venv/bin/python benchmarks/flower_deployment.py --quick      # 2 rounds (a few minutes on 2 busy cores)
    .venv/bin/python benchmarks/flower_deployment.py              # the tutorial's 30 rounds

The scenario: configs/fl-tutorial-backdoor.yaml (20 clients of synthetic tabular data, MLP 32-64-10, E=3,
2 attackers with a feature-trigger backdoor boosted x10, FedAvg), rounds shortened by --rounds / --quick.
Three engines, each timed end to end as a user waits, the same experiment and seed:
- built-in: build the Federation (data, partition, poisons, model) and run it in this process;
- Flower simulation: poisonlab.flower.run_simulation (Ray start-up and shutdown included, --num-cpus CPUs);
- Flower deployment: a secured LocalDeployment on loopback (throw-away certificates, TLS, node authentication:
  20 keys registered), 20 SuperNodes each with its own npz (the engine's partition of that client, written
  before the clock starts), the ServerApp with node-data=true loading only the test set; from making the
  certificates to the end of ``flwr run`` (processes stopped after).
Prints each engine's time, its ratio to the built-in engine, and the last round's clean accuracy and ASR.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from poisonlab.config.load import load_config
from poisonlab.data.sources import save_npz
from poisonlab.flower.deployment import LocalDeployment, write_app
from poisonlab.flower.prepared import build_federation, experiment_json, parse_experiment
from poisonlab.flower.simulation import run_simulation

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fl-tutorial-backdoor.yaml"


def scenario(rounds: int) -> str:
    """The tutorial experiment with `rounds` rounds, as canonical JSON."""
    config = load_config(CONFIG).model_dump(mode="json")
    config["federated"]["rounds"] = rounds
    return experiment_json(config)


def builtin(exp: str) -> tuple[float, dict]:
    start = time.perf_counter()
    last = build_federation(parse_experiment(exp)).run().history[-1].to_dict()
    return time.perf_counter() - start, last


def simulation(exp: str, num_cpus: int) -> tuple[float, dict]:
    start = time.perf_counter()
    out = run_simulation(exp, num_cpus=num_cpus)
    return time.perf_counter() - start, out["history"][-1]


def deployment(exp: str, workdir: Path, timeout: float) -> tuple[float, dict]:
    """The scenario on a secured loopback deployment with data on each node (see the module docstring)."""
    fed = build_federation(parse_experiment(exp))
    sites = [save_npz(data, workdir / f"site-{c}" / "data.npz") for c, data in enumerate(fed.clients)]
    test = save_npz(fed.test, workdir / "server" / "test.npz")
    out = workdir / "history.json"
    nodes = [{"partition-id": c, "npz": str(site)} for c, site in enumerate(sites)]
    start = time.perf_counter()
    with LocalDeployment(workdir / "deploy", nodes) as dep:
        app = write_app(workdir / "app", {"experiment": exp, "output": str(out), "min-nodes": len(nodes),
                                          "timeout": timeout, "node-data": True, "test-npz": str(test)})
        result = dep.run(app, timeout=timeout)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"the deployment run failed (exit {result.returncode}); see {workdir / 'deploy'}")
    return seconds, json.loads(out.read_text())["history"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds (default 30, the tutorial's)")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for Ray in the simulation (default 2)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the deployment run may take")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each Ray actor and each ClientApp process (OMP_NUM_THREADS=1)
    exp = scenario(2 if args.quick else args.rounds)
    rounds = json.loads(exp)["federated"]["rounds"]
    rows = [("built-in", *builtin(exp)), ("Flower simulation", *simulation(exp, args.num_cpus))]
    with tempfile.TemporaryDirectory(prefix="poisonlab-deploy-") as tmp:
        rows.append(("Flower deployment (TLS, node auth)", *deployment(exp, Path(tmp), args.timeout)))
    base = rows[0][1]
    print(f"tutorial backdoor scenario, 20 clients, {rounds} rounds, seed 0:")
    for name, seconds, last in rows:
        print(f"  {name:36s} {seconds:8.2f} s  {seconds / base:7.1f}x built-in  clean accuracy"
              f" {100 * last['clean_accuracy']:.2f}%  ASR {100 * last['attack_success_rate']:.2f}%")


if __name__ == "__main__":
    main()
