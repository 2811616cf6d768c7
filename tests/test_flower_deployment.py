"""A real Flower deployment on loopback, secured: TLS on the SuperLink, node authentication, 4 SuperNodes each
with its own data folder (an npz the test writes), and one SuperNode whose key is not registered.

The experiment: digits + logistic regression, 4 clients, 2 rounds, client 3 an adversary boosting its update
x10, aggregated by median audited by update-norm and cosine robust z-scores. Each site's npz holds exactly
the built-in engine's partition of that client; the ServerApp (node-data=true) loads only the test set.
Checks: the unregistered node is refused (it exits with Flower's "Failed to activate SuperNode" and the
SuperLink lists only the 4 registered nodes); the run completes over TLS; the booster is flagged every round;
the final clean accuracy is within 2 points of the same config on the built-in engine; every process the
test started (and their descendants) is gone afterwards. Slow (Flower starts one ClientApp process per
message: about a minute on an idle 2-core machine).
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from poisonlab.data.sources import save_npz  # noqa: E402
from poisonlab.flower.certificates import make_certificates  # noqa: E402
from poisonlab.flower.deployment import LocalDeployment, write_app  # noqa: E402
from poisonlab.flower.prepared import experiment_json, prepare  # noqa: E402

EXPERIMENT = {"name": "flower-loopback", "seed": 0, "data": {"dataset": "digits"}, "model": {"name": "logistic"},
              "federated": {"clients": 4, "rounds": 2, "local": {"epochs": 2, "batch_size": 16, "lr": 0.2},
                            "adversary": {"clients": [3], "attack": {"name": "scale", "params": {"gamma": 10.0}}},
                            "aggregator": {"name": "audited",
                                           "params": {"rule": "median", "exclude_rounds": 0, "reputation": 1.0}}}}


def write_sites(engine, folder):
    """One data folder per site with the engine's partition of that client, and the server's test set."""
    sites = []
    for c, data in enumerate(engine.federation.clients):
        sites.append(save_npz(data, folder / f"site-{c}" / "data.npz"))
    return sites, save_npz(engine.federation.test, folder / "server" / "test.npz")


@pytest.mark.slow
def test_tls_node_auth_and_data_on_each_node_match_the_builtin_engine(tmp_path):
    exp_json = experiment_json(EXPERIMENT)
    engine = prepare(exp_json)
    builtin = engine.federation.run().history[-1].clean_accuracy
    sites, test_npz = write_sites(engine, tmp_path)
    certs = make_certificates(tmp_path / "certs", nodes=5)  # node-4's key is never registered
    nodes = [{"partition-id": c, "npz": str(site), "role": "scale" if c == 3 else "honest"}
             for c, site in enumerate(sites)]
    out = tmp_path / "history.json"
    dep = LocalDeployment(tmp_path / "deploy", nodes, certificates=certs)
    try:
        dep.start()
        intruder = dep.start_node(4, {"partition-id": 0, "npz": str(sites[0])}, register=False)
        deadline = time.monotonic() + 60
        while intruder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert intruder.returncode not in (None, 0)
        assert "Failed to activate SuperNode" in (tmp_path / "deploy" / "supernode-4.log").read_text()
        app = write_app(tmp_path / "app", {"experiment": exp_json, "output": str(out), "min-nodes": 4,
                                           "timeout": 120.0, "node-data": True, "test-npz": str(test_npz)})
        result = dep.run(app, timeout=300)
        assert result.returncode == 0, result.stdout.decode()[-2000:]
        assert len(dep.list_nodes()) == 4
    finally:
        dep.stop()
    assert dep.alive() == [], f"processes left running: {dep.alive()}"
    assert "Uvicorn running on https://" in (tmp_path / "deploy" / "superlink.log").read_text()
    assert out.exists(), (tmp_path / "deploy" / "flwr-run.log").read_text()[-2000:]
    history = json.loads(out.read_text())["history"]
    assert [h["round"] for h in history] == [0, 1]
    for h in history:
        assert h["sampled"] == [0, 1, 2, 3] and h["malicious"] == [3]
        assert 3 in h["flagged"], h
        assert h["rejected"] == []
        assert h["update_norms"][3] > 5 * max(h["update_norms"][:3])  # the boost is visible
    assert abs(history[-1]["clean_accuracy"] - builtin) <= 0.02, (history[-1]["clean_accuracy"], builtin)
    assert history[-1]["clean_accuracy"] >= 0.8


def test_secure_by_default_insecure_only_when_asked_with_one_warning(tmp_path, monkeypatch, capsys):
    certs = make_certificates(tmp_path / "certs", nodes=1)
    dep = LocalDeployment(tmp_path / "d", [{"partition-id": 0}], certificates=tmp_path / "certs")
    assert dep.superlink_security() == ["--ssl-ca-certfile", str(certs.ca_cert), "--ssl-certfile",
                                        str(certs.server_cert), "--ssl-keyfile", str(certs.server_key),
                                        "--enable-supernode-auth"]
    assert dep.node_security(certs.node_key(0)) == ["--root-certificates", str(certs.ca_cert),
                                                    "--auth-supernode-private-key", str(certs.node_key(0))]
    wide = LocalDeployment(tmp_path / "w", [], host="0.0.0.0", port=9100, certificates=certs)
    assert wide.address == "127.0.0.1:9100"
    insecure = LocalDeployment(tmp_path / "i", [{"partition-id": 0}], insecure=True)
    assert insecure.superlink_security() == insecure.node_security(None) == ["--insecure"]

    def no_processes(name, cmd):
        raise RuntimeError("stop before starting Flower")

    monkeypatch.setattr(insecure, "_spawn", no_processes)
    with pytest.raises(RuntimeError, match="stop before"):
        insecure.start()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["poisonlab: warning: the Flower deployment runs WITHOUT TLS and node authentication"
                     " (insecure=True): anyone who reaches the port can join and read the models"]


def test_bad_deployment_settings_are_one_line_errors(tmp_path):
    from poisonlab.errors import ConfigError

    cases = [({"insecure": True, "certificates": tmp_path}, "insecure=True with certificates"),
             ({"certificates": tmp_path}, "lacks .*ca.crt"),
             ({"host": "http://x"}, "host 'http://x'"),
             ({"allowed_keys": ["k.pub"], "node_auth": False}, "allowed_keys without node authentication")]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            LocalDeployment(tmp_path / "d", [], **kwargs)
