"""Jupyter rendering (poisonlab.notebook): datasets, detections, centralized results and runs as escaped HTML."""

from __future__ import annotations

import torch

from poisonlab.centralized import CentralizedResult
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection
from poisonlab.notebook import Runs


def test_dataset_renders_counts_per_class_and_escapes_its_name():
    data = Dataset(torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 1, 2, 2]), ("a", "b", "<c>"), name="<script>x</script>")
    html = data._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a: 1, b: 2, &lt;c&gt;: 2" in html
    assert html.count("data:image/png;base64,") == 1  # the first images


def test_tabular_dataset_has_no_image_strip():
    html = Dataset(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), ("x", "y"))._repr_html_()
    assert "<td>samples</td><td>4</td>" in html and "data:image/png" not in html


def test_detection_renders_counts_and_a_histogram():
    det = Detection(torch.tensor([0.1, 0.2, 5.0, 0.3]), torch.tensor([False, False, True, False]))
    html = det._repr_html_()
    assert "<td>items scored</td><td>4</td>" in html and "<td>flagged</td><td>1</td>" in html
    assert "0.1 / 0.2 / 5" in html  # min / median (torch: the lower of the two middle values) / max
    assert "data:image/png;base64," in html


def _result(**changes) -> CentralizedResult:
    values = dict(clean_accuracy=0.9, clean_accuracy_clean_model=0.95, loss=0.3,
                  per_class_accuracy=[0.9, 0.8], per_class_accuracy_clean_model=[0.95, 0.95],
                  confusion=[[9, 1], [2, 8]], confusion_clean_model=[[10, 0], [1, 9]],
                  attack_success_rate=0.97, attack_success_rate_clean_model=0.01, flips={"1->0": 7},
                  flips_clean_model={"1->0": 1}, class_names=["0", "1"], poison_count=40, train_size=400,
                  injection={"mode": "concat"}, poison_info=[], wall_time=1.0)
    return CentralizedResult(**{**values, **changes})


def test_centralized_result_shows_clean_and_poisoned_side_by_side():
    html = _result()._repr_html_()
    assert "40 of 400 training rows poisoned" in html
    assert "<td>clean accuracy</td><td>95.00%</td><td>90.00%</td>" in html
    assert "<td>attack success rate</td><td>1.00%</td><td>97.00%</td>" in html
    assert "<td>flips 1-&gt;0</td><td>1</td><td>7</td>" in html
    assert "data:image/png;base64," in html  # the per-class change


def test_unmeasured_asr_reads_not_measured():
    html = _result(attack_success_rate=None, attack_success_rate_clean_model=None)._repr_html_()
    assert "<td>attack success rate</td><td>not measured</td><td>not measured</td>" in html


def test_runs_table_and_curves():
    run = {"name": "x", "kind": "federated", "final": {"clean_accuracy": 0.5, "attack_success_rate": 0.25},
           "history": [{"round": 0, "clean_accuracy": 0.4, "attack_success_rate": 0.3},
                       {"round": 1, "clean_accuracy": 0.5, "attack_success_rate": 0.25}]}
    html = Runs(run, names=["<b>"])._repr_html_()
    assert "<td>&lt;b&gt;</td><td>federated</td><td>50.00%</td><td>25.00%</td>" in html
    assert html.count("data:image/png;base64,") == 1
    assert "data:image/png" not in Runs({"name": "c", "kind": "centralized", "final": {}})._repr_html_()
