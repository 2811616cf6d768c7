"""Every detector follows one calling convention (detect/base.py Detector) and one runner (detect/run.py)."""

import inspect

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import DETECTORS, Detector, get
from poisonlab.detect import run as detect
from poisonlab.detect.base import INPUTS, INSPECTS
from poisonlab.errors import ConfigError

SCAN_KEYWORDS = ["data", "model", "clean", "validation", "sources"]


def build(name: str):
    return get(name, x=torch.zeros(2, 3), y=torch.tensor([0, 1])) if name == "canary" else get(name)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_one_class_keyword_only_one_scan_signature(name):
    cls = DETECTORS.entry(name).factory
    assert inspect.isclass(cls), f"{name} is registered through a factory, not its class"
    params = list(inspect.signature(cls).parameters.values())
    assert all(p.kind is p.KEYWORD_ONLY for p in params), f"{name}: constructor parameters must be keyword-only"
    assert cls.inspects in INSPECTS and set(cls.requires) <= set(INPUTS)
    detector = build(name)
    assert isinstance(detector, Detector)
    scan = inspect.signature(detector.scan).parameters.values()
    assert [p.name for p in scan] == SCAN_KEYWORDS
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None for p in scan)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_missing_required_input_is_one_line_naming_the_detector(name):
    detector = build(name)
    with pytest.raises(ConfigError, match=f"detector '{name}' needs {INPUTS[detector.requires[0]]}") as err:
        detector.scan()
    assert "\n" not in str(err.value) and f"scan({detector.requires[0]}=...)" in str(err.value)


def test_where_a_detector_runs_follows_what_it_inspects():
    in_run, in_scan = detect.inspecting(detect.IN_EXPERIMENT), detect.inspecting(detect.FROM_FILES)
    for e in DETECTORS.entries():
        assert (e.name in in_run) == (e.factory.inspects in ("data", "inputs", "model"))
        assert (e.name in in_scan) == (e.factory.inspects != "probes")
    assert "roni" in in_run and "roni" in in_scan  # the two old name lists disagreed on roni
    with pytest.raises(ConfigError, match=r"detect.3.name: 'provenance' inspects sources and does not run inside"
                                          r" an experiment; accepted here: (abs, )?activation_clustering"):
        detect.build("provenance", {}, detect.IN_EXPERIMENT, "detect.3.name: ", "inside an experiment")
    assert isinstance(detect.build("roni", {"steps": 3}, detect.IN_EXPERIMENT), Detector)


def test_inputs_follow_what_the_detector_inspects():
    data, model, held = object(), object(), object()
    assert detect.inputs_for("data", data=data, model=model, held_out=held) == \
        {"data": data, "model": model, "validation": held, "sources": None}
    assert detect.inputs_for("inputs", data=data, model=model, held_out=held) == \
        {"data": data, "model": model, "clean": held}
    assert detect.inputs_for("model", data=data, model=model) == {"model": model, "clean": data}
    with pytest.raises(ConfigError, match="inspects='probes'"):
        detect.inputs_for("probes", model=model)


def test_the_runner_names_the_flag_to_pass():
    with pytest.raises(ConfigError, match="detector 'strip' needs a model; pass --model"):
        detect.scan("strip", get("strip"), {"data": torch.zeros(1, 1, 2, 2)}, how={"model": "--model"})


class Stamp:
    """A stand-in backdoor: target 0, triggered copies set every pixel to 1."""

    target = 0

    def triggered(self, data: Dataset, seed: int) -> Dataset:
        return data.replace(x=torch.ones_like(data.x))


def tiny_experiment(backdoor=Stamp) -> detect.Experiment:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 4, 4, generator=g), torch.arange(40) % 2
    data = Dataset(x, y, ("a", "b"), "tiny")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    mask = torch.arange(40) < 4
    return detect.Experiment(data, mask, model, data.subset(torch.arange(10)), 0, backdoor)


def test_experiment_records_per_inspects():
    exp = tiny_experiment()
    rec = detect.run_in_experiment("anomaly", {"method": "zscore"}, exp)
    assert rec["detector"] == "anomaly" and rec["truth"] == exp.mask.tolist()
    rec = detect.run_in_experiment("strip", {"n_overlays": 2}, exp)
    assert rec["truth"] == [False] * 10 + [True] * 5  # 10 test inputs, then triggered copies of the 5 not of class 0
    rec = detect.run_in_experiment("neural_cleanse", {"steps": 2, "samples": 8}, exp)
    assert rec["truth"] == [True, False]  # one score per label; the target is label 0
    with pytest.raises(ConfigError, match="detect.1.name: 'strip' needs a backdoor poison"):
        detect.run_in_experiment("strip", {}, tiny_experiment(lambda: None), "detect.1.name: ")
