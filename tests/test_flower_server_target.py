"""The ServerApp's federation (nodes bring their own data) scores the ASR against the same target as the built-in
engine: a target map for all-to-all backdoors, not the poison's raw 'all_to_all' (flower/prepared.py)."""

from poisonlab.builders import build_federation, load_split
from poisonlab.config import parse
from poisonlab.flower.prepared import server_federation


def config(target):
    patch = {"name": "patch", "params": {"size": 2}}
    fed = {"clients": 4, "sample": 1.0, "rounds": 1,
           "adversary": {"clients": 1, "poison": {"name": "backdoor",
                                                  "params": {"trigger": patch, "target": target, "rate": 0.5}}}}
    return parse({"seed": 0, "device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "mlp"},
                  "federated": fed})


def test_all_to_all_is_scored_against_its_target_map_on_the_server_as_in_the_engine():
    cfg = config("all_to_all")
    train_set, test_set = load_split(cfg)
    server = server_federation(cfg, test_set, None, None)
    engine = build_federation(cfg, train_set, test_set, None, quiet=True)
    assert server.config.target == engine.config.target == tuple((c + 1) % 10 for c in range(10))


def test_a_single_target_stays_an_int():
    cfg = config(3)
    _, test_set = load_split(cfg)
    assert server_federation(cfg, test_set, None, None).config.target == 3
