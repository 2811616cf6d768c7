"""A real Flower deployment on loopback where a SuperNode is killed mid-run: the run completes, the drop is marked.

One SuperLink, 4 SuperNodes (LocalDeployment, insecure loopback), 2 rounds of digits + logistic regression,
server-side checkpoints every round. Once round 1's checkpoint exists, the SuperNode of client 2 and its
ClientApp processes are killed (SIGKILL, by process id). Checks: the run ends with exit code 0 and both rounds
in its history; round 1 dropped nobody; round 2 marks client 2 as dropped with the reason (no reply before the
round timeout, or the SuperLink's "node unavailable"), and the other clients' replies are applied.
Slow (about a minute: Flower starts one ClientApp process per message, and the dead node costs a round timeout).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from poisonlab.flower.deployment import LocalDeployment, descendants, write_app  # noqa: E402

EXPERIMENT = {"name": "flower-faults", "seed": 0, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
              "federated": {"clients": 4, "rounds": 2, "local": {"epochs": 2, "batch_size": 32, "lr": 0.2},
                            "aggregator": {"name": "mean"}}}
VICTIM = 2  # the client whose SuperNode is killed


def kill_when(path, proc, stop: threading.Event, timeout: float = 150.0) -> None:
    """SIGKILL proc and its descendants once path exists (round 1 is done)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.2)
    if stop.is_set() or not path.exists():
        return
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_supernode_killed_mid_run_is_dropped_and_the_run_completes(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 4} for i in range(4)]
    out, ckpt = tmp_path / "history.json", tmp_path / "ckpt"
    dep = LocalDeployment(tmp_path / "deploy", nodes)
    stop = threading.Event()
    try:
        dep.start()
        victim = dep.procs[1 + VICTIM]  # procs: the SuperLink, then SuperNode 0..3
        killer = threading.Thread(target=kill_when, args=(ckpt / "checkpoint.json", victim, stop), daemon=True)
        killer.start()
        app = write_app(tmp_path / "app", {"experiment": json.dumps(EXPERIMENT), "output": str(out),
                                           "min-nodes": 4, "timeout": 30.0, "min-replies": 2,
                                           "checkpoint-every": 1, "checkpoint-dir": str(ckpt)})
        result = dep.run(app, timeout=240)
        assert result.returncode == 0, result.stdout.decode()[-2000:]
    finally:
        stop.set()
        dep.stop()
    assert dep.alive() == [], f"processes left running: {dep.alive()}"
    assert out.exists(), (tmp_path / "deploy" / "flwr-run.log").read_text()[-2000:]
    history = json.loads(out.read_text())["history"]
    assert [h["round"] for h in history] == [0, 1], "the run completes"
    assert history[0]["dropped"] == [] and history[0]["sampled"] == [0, 1, 2, 3]
    drops = [d for h in history[1:] for d in h["dropped"] if d["client"] == VICTIM]
    assert drops, history
    assert all("timeout" in d["reason"] or "unavailable" in d["reason"] for d in drops), drops
    last = history[-1]
    assert last["applied"] is True and VICTIM not in last["selected"] and set(last["selected"]) == {0, 1, 3}
    assert last["clean_accuracy"] >= 0.8
