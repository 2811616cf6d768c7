"""A real Flower deployment on loopback: one SuperLink, 4 SuperNodes (one malicious, boosting its update).

3 rounds of digits + logistic regression with RobustStrategy (median, audited by update-norm and
cosine robust z-scores). Checks: the run completes, the malicious node (partition 3) is flagged
in every round, the global model's clean accuracy stays high (>= 0.8; chance is 0.1), and every
process the test started (and their descendants) is gone afterwards.
Slow (tens of seconds: Flower starts one ClientApp process per message).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from poisonlab.flower.deployment import LocalDeployment, write_app  # noqa: E402

EXPERIMENT = {"name": "flower-loopback", "seed": 0, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
              "federated": {"clients": 4, "rounds": 3, "local": {"epochs": 2, "batch_size": 16, "lr": 0.2},
                            "aggregator": {"name": "audited",
                                           "params": {"rule": "median", "exclude_rounds": 0, "reputation": 1.0}}}}


@pytest.mark.slow
def test_loopback_superlink_and_four_supernodes_flag_the_booster(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 4} for i in range(4)]
    nodes[3].update(role="malicious", attack=json.dumps({"name": "scale", "params": {"gamma": 10.0}}))
    out = tmp_path / "history.json"
    dep = LocalDeployment(tmp_path / "deploy", nodes)
    try:
        dep.start()
        app = write_app(tmp_path / "app", {"experiment": json.dumps(EXPERIMENT), "output": str(out),
                                           "min-nodes": 4, "timeout": 120.0, "trust-reported-roles": True})
        result = dep.run(app, timeout=240)
        assert result.returncode == 0, result.stdout.decode()[-2000:]
    finally:
        dep.stop()
    assert dep.alive() == [], f"processes left running: {dep.alive()}"
    assert out.exists(), (tmp_path / "deploy" / "flwr-run.log").read_text()[-2000:]
    history = json.loads(out.read_text())["history"]
    assert [h["round"] for h in history] == [0, 1, 2]
    for h in history:
        assert h["sampled"] == [0, 1, 2, 3] and h["malicious"] == [3]
        assert 3 in h["flagged"], h
        assert h["rejected"] == []
        assert h["update_norms"][3] > 5 * max(h["update_norms"][:3])  # the boost is visible
    assert history[-1]["clean_accuracy"] >= 0.8
