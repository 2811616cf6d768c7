"""The Poison base: every registered poison subclasses it, its defaults, and what each poison overrides."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS, Poison, make_poison

ROOT = Path(__file__).resolve().parents[1]
PATTERN = {"name": "pattern", "params": {}}
BUILT = {
    "label_flip": dict(source=7, target=1, fraction=0.5),
    "feature_noise": dict(fraction=0.1),
    "backdoor": dict(trigger=PATTERN, target=2, rate=0.1, sources=[4, 5]),
    "semantic_backdoor": dict(source=7, target=1),
    "external": dict(folder="photos", label=3),
    "feature_collision": dict(base_class=2),
    "hidden_trigger": dict(source=3, target=5),
    "dba": dict(trigger=PATTERN, piece=1, pieces=2, target=4, rate=0.2),
    "edge_case": dict(path="photos", target=6),
    "clean_label_backdoor": dict(trigger="sig", target=3, rate=0.5),
    "label_consistent": dict(target=3),
    "low_frequency": dict(target=1),
    "sleeper_agent": dict(source=5, target=2),
    "trojannn": dict(target=4),
    "wanet": dict(target=0, rate=0.1),
    "witches_brew": dict(victim=0, target=1),
    "blind_backdoor": dict(target=3),
    "adversarial_embedding": dict(target=2),
    "bullseye_polytope": dict(base_class=4),
    "latent_backdoor": dict(target=5),
    "input_aware": dict(target=1),
    "lira": dict(target=2),
    "ssba": dict(target=3),
    "poison_ink": dict(target=4),
}


def test_every_registered_poison_is_a_poison_named_as_registered():
    assert sorted(BUILT) == POISONS.names()
    for entry in POISONS.entries():
        assert issubclass(entry.factory, Poison) and entry.factory.name == entry.name
        assert isinstance(POISONS.get(entry.name, **BUILT[entry.name]), Poison)


def test_what_each_poison_declares():
    got = {name: POISONS.get(name, **params) for name, params in BUILT.items()}
    assert {n for n, p in got.items() if p.has_trigger} == {
        "backdoor", "semantic_backdoor", "feature_collision", "hidden_trigger", "dba", "edge_case",
        "clean_label_backdoor", "label_consistent", "low_frequency", "sleeper_agent", "trojannn", "wanet", "witches_brew",
        "blind_backdoor", "adversarial_embedding", "bullseye_polytope", "latent_backdoor",
        "input_aware", "lira", "ssba", "poison_ink"}
    assert {n for n, p in got.items() if p.requires_model} == {
        "feature_collision", "hidden_trigger", "label_consistent", "low_frequency", "sleeper_agent", "trojannn",
        "witches_brew", "bullseye_polytope", "latent_backdoor"}
    assert {n for n, p in got.items() if p.trains_model} == {"blind_backdoor", "adversarial_embedding"}
    assert {n: p.flip_pairs for n, p in got.items() if p.flip_pairs} == {
        "label_flip": ((7, 1),), "backdoor": ((4, 2), (5, 2)), "semantic_backdoor": ((7, 1),),
        "hidden_trigger": ((3, 5),), "sleeper_agent": ((5, 2),)}
    assert {n: (p.source, p.target) for n, p in got.items()} == {
        "label_flip": (7, 1), "feature_noise": (None, None), "backdoor": (None, 2), "semantic_backdoor": (7, 1),
        "external": (None, 3), "feature_collision": (None, 2), "hidden_trigger": (3, 5), "dba": (None, 4),
        "edge_case": (None, 6), "clean_label_backdoor": (None, 3), "label_consistent": (None, 3),
        "low_frequency": (None, 1), "sleeper_agent": (5, 2), "trojannn": (None, 4), "wanet": (None, 0),
        "witches_brew": (None, 1), "blind_backdoor": (None, 3), "adversarial_embedding": (None, 2),
        "bullseye_polytope": (None, 4), "latent_backdoor": (None, 5), "input_aware": (None, 1), "lira": (None, 2),
        "ssba": (None, 3), "poison_ink": (None, 4)}


def test_label_flip_pairs_only_when_targeted_from_one_class():
    assert POISONS.get("label_flip", fraction=0.5).flip_pairs == ()
    assert POISONS.get("label_flip", target=1, fraction=0.5).flip_pairs == ()
    assert POISONS.get("label_flip", source=3, fraction=0.5).flip_pairs == ()
    assert POISONS.get("backdoor", trigger=PATTERN, target=0, rate=0.1).flip_pairs == ()


def test_base_defaults(digits):
    flip = POISONS.get("label_flip", fraction=0.1)
    assert flip.bind(object()) is flip and flip.probe(digits) is None and not flip.has_trigger
    with pytest.raises(ConfigError, match="poison 'label_flip' has no trigger"):
        flip.triggered(digits, 0)


def test_required_source_and_target_fields_stay_required():
    sig = inspect.signature(POISONS.entry("semantic_backdoor").factory)
    assert sig.parameters["source"].default is inspect.Parameter.empty
    assert sig.parameters["target"].default is inspect.Parameter.empty
    with pytest.raises(ConfigError, match="needs parameter 'source'"):
        POISONS.get("semantic_backdoor", target=1)

    @dataclass(frozen=True)
    class Targeted(Poison):
        target: int

        def apply(self, data, seed=0):
            return data

    with pytest.raises(TypeError):
        Targeted()
    assert Targeted(3).target == 3 and Targeted(3).source is None


def test_make_poison_takes_a_poison_or_a_spec_only():
    flip = POISONS.get("label_flip", fraction=0.1)
    assert make_poison(flip) is flip

    class DuckTyped:
        def apply(self, data, seed=0):
            return data

    with pytest.raises(ConfigError, match="poisonlab.poison.base.Poison"):
        make_poison(DuckTyped())


def test_registries_are_complete_from_their_leaf_modules_alone():
    code = ("from poisonlab.poison.registry import POISONS, TRIGGERS; from poisonlab.data.registry import SOURCES;"
            " print(POISONS.names(), TRIGGERS.names(), 'synthetic' in SOURCES)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert "'dba', 'edge_case'" in out and "'dba_piece', 'features'" in out and out.strip().endswith("True")
