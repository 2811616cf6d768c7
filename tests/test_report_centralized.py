"""The centralized report: what the runner records (checked against definitions), the sections that tell
the story (baseline vs poisoned, the backdoor on triggered inputs, the poison, examples, detectors),
"not run" where nothing was computed, the banner hook, and the page in headless Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from poisonlab.config import parse
from poisonlab.experiment import run_experiment
from poisonlab.report import html as report_html
from poisonlab.report import write_report
from poisonlab.report.record import png_b64, poison_classes, poisoned_examples, triggered_examples
from tests import browser

TARGET = 0
DOC = {"name": "central-test", "seed": 0, "data": {"dataset": "digits", "test_fraction": 0.25},
       "model": {"name": "cnn"}, "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
       "poison": [{"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {
           "size": 2, "color": [1.0], "position": "bottom-right"}}, "target": TARGET, "rate": 0.1}}],
       "detect": [{"name": "activation_clustering"}]}
SECTIONS = ["Summary", "Clean baseline vs poisoned model", "The backdoor: predictions on triggered inputs",
            "The poison", "Examples: clean vs poisoned", "Detection quality", "Detection ROC curves",
            "Confusion matrix", "Config"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("central") / "run"
    run_experiment(parse(copy.deepcopy(DOC)), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def page(run_dir) -> str:
    return (run_dir / "report.html").read_text(encoding="utf-8")


def section(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def decode(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im)


# ------------------------------------------------------------------ what the runner records

def test_triggered_confusion_agrees_with_the_attack_success_rate(metrics):
    fin = metrics["final"]
    assert fin["attack_target"] == TARGET
    n_test = int(np.sum(fin["confusion"]))
    for cm_key, asr_key in (("confusion_triggered", "attack_success_rate"),
                            ("confusion_triggered_clean_model", "attack_success_rate_clean_model")):
        cm = np.asarray(fin[cm_key])
        assert cm.sum() == n_test  # a patch backdoor stamps every test input
        others = np.arange(len(cm)) != TARGET  # ASR: true class not the target, predicted as the target
        assert cm[others, TARGET].sum() / cm[others].sum() == pytest.approx(fin[asr_key])
    assert fin["attack_success_rate"] > fin["attack_success_rate_clean_model"] + 0.3


def test_poison_classes_and_examples_are_recorded(metrics):
    fin = metrics["final"]
    touched = fin["poison_classes"]
    assert sum(touched["trained_as"]) == fin["poison_count"] == touched["trained_as"][TARGET]
    assert sum(touched["original"]) == fin["poison_count"] and touched["original"][TARGET] == 0
    assert touched["added"] == 0
    rows = fin["examples"]["poisoned"]
    assert 0 < len(rows) <= 8 and [r["row"] for r in rows] == sorted(r["row"] for r in rows)
    for r in rows:
        clean, stamped = decode(r["clean"]), decode(r["poisoned"])
        assert clean.shape == stamped.shape == (8, 8) and r["poisoned_label"] == TARGET != r["label"]
        assert (stamped[-2:, -2:] == 255).all()                            # the white 2x2 patch, bottom-right
        np.testing.assert_array_equal(clean[:-2], stamped[:-2])            # the rest of the image untouched
    for t in fin["examples"]["triggered"]:
        assert t["label"] != TARGET and t["clean"] and t["triggered"]
        assert {t["predicted"], t["predicted_clean_model"]} <= set(range(10))


def test_poison_classes_by_hand():
    clean_y = torch.tensor([0, 1, 1, 2])
    poisoned_y = torch.tensor([0, 0, 1, 0, 2, 0])      # rows 4 and 5 were appended
    mask = torch.tensor([False, True, False, True, False, True])
    found = poison_classes(clean_y, poisoned_y, mask, 3)
    assert found == {"original": [0, 1, 1], "trained_as": [3, 0, 0], "added": 1}


def test_examples_pair_only_what_has_a_clean_original():
    x = torch.rand(4, 1, 3, 3)
    px = torch.cat([x, torch.rand(1, 1, 3, 3)])
    rows = poisoned_examples(x, torch.tensor([1, 2, 3, 4]), px, torch.tensor([1, 0, 3, 4, 0]),
                             torch.tensor([False, True, False, False, True]))
    assert [(r["row"], r["label"], r["poisoned_label"]) for r in rows] == [(1, 2, 0), (4, None, 0)]
    assert rows[0]["clean"] and rows[1]["clean"] is None
    test_y = torch.tensor([0, 1, 2])
    pred, pred0 = torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2])
    aligned = triggered_examples(x[:3], test_y, x[:3], test_y, 0, pred, pred0)
    assert [e["label"] for e in aligned] == [1, 2] and all(e["clean"] for e in aligned)  # target row skipped
    held_out = triggered_examples(x[:3], test_y, x[:2], torch.tensor([1, 2]), 0, pred, pred0)
    assert all(e["clean"] is None for e in held_out)  # not the test set stamped row by row: no pairing


def test_png_keeps_the_pixels():
    image = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])  # values above 1 are clipped
    np.testing.assert_array_equal(decode(png_b64(image)), [[0, 128], [255, 255]])
    rgb = torch.rand(3, 4, 5)
    assert decode(png_b64(rgb)).shape == (4, 5, 3)
    assert png_b64(torch.rand(2, 4, 4)) is None  # two channels are not an image


# ------------------------------------------------------------------ the page

def test_every_section_of_the_story_is_there(page):
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    assert "could not be drawn" not in page and "<h2>Per-class accuracy</h2>" not in page  # drawn beside the baseline


def test_baseline_table_shows_the_recorded_numbers_and_their_change(page, metrics):
    fin = metrics["final"]
    table = section(page, "baseline")
    acc = re.search(r"<td>clean test accuracy</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", table).groups()
    assert acc[0] == f"{100 * fin['clean_accuracy_clean_model']:.2f}%"
    assert acc[1] == f"{100 * fin['clean_accuracy']:.2f}%"
    assert acc[2] == f"{100 * (fin['clean_accuracy'] - fin['clean_accuracy_clean_model']):+.2f} pp"
    asr = re.search(r"<td>attack success rate \(triggered test inputs\)</td><td>(.*?)</td><td>(.*?)</td>", table)
    assert asr.groups() == (f"{100 * fin['attack_success_rate_clean_model']:.2f}%",
                            f"{100 * fin['attack_success_rate']:.2f}%")
    per_class = table.split("<h3>Per-class accuracy on clean test inputs</h3>", 1)[1]
    for c in range(10):
        b, p = fin["per_class_accuracy_clean_model"][c], fin["per_class_accuracy"][c]
        assert f"<td>{c}</td><td>{100 * b:.2f}%</td><td>{100 * p:.2f}%</td>" in per_class


def test_poison_and_examples_sections(page, metrics):
    fin = metrics["final"]
    poison = section(page, "poison")
    assert f"<b>{fin['poison_count']:,}</b> poisoned rows of {fin['train_size']:,} training rows" in poison
    for c, n in enumerate(fin["poison_classes"]["original"]):
        if n:
            assert f"<tr><td>{c}</td><td>{n}</td><td>0</td></tr>" in poison
    examples = section(page, "examples")
    n = len(fin["examples"]["poisoned"]) + len(fin["examples"]["triggered"])
    assert examples.count("<img ") == 2 * n and 'style="image-rendering:pixelated"' in examples
    assert 'width="80" height="80"' in examples  # 8x8 digits enlarged 10x


def _trimmed(metrics: dict, **final) -> dict:
    run = copy.deepcopy(metrics)
    run["final"].update(final)
    return run


def test_label_flip_run_says_not_run_and_has_no_backdoor_section(tmp_path, metrics):
    run = _trimmed(metrics, attack_success_rate=None, attack_success_rate_clean_model=None,
                   confusion_triggered=None, confusion_triggered_clean_model=None, attack_target=None,
                   examples={"poisoned": metrics["final"]["examples"]["poisoned"], "triggered": []})
    run["detections"] = []
    page = write_report(tmp_path / "r.html", [run], "flip").read_text()
    baseline = section(page, "baseline")
    assert re.search(r"<td>attack success rate</td><td><span class=\"na\">not run</span></td>", baseline)
    assert "<h2>The backdoor" not in page and "<h3>Triggered test inputs</h3>" not in page
    detections = section(page, "detections")
    assert "not run</span> for central-test" in detections and "<table>" not in detections
    assert "<h2>Detection ROC curves</h2>" not in page


def test_older_documents_without_the_new_keys_get_no_story_sections(tmp_path, metrics):
    run = copy.deepcopy(metrics)
    for key in ("clean_accuracy_clean_model", "confusion_triggered", "poison_count", "examples"):
        del run["final"][key]
    page = write_report(tmp_path / "r.html", [run], "old").read_text()
    for anchor in ("baseline", "triggered", "poison", "examples"):
        assert f'<section id="{anchor}">' not in page, anchor
    assert "<h2>Per-class accuracy</h2>" in page  # the generic figure is back


def test_banners(tmp_path, metrics, monkeypatch):
    page = write_report(tmp_path / "a.html", [metrics], "x").read_text()
    assert '<div id="banners"></div>' in page
    page = write_report(tmp_path / "b.html", [_trimmed(metrics, poison_count=0)], "x").read_text()
    assert re.search(r'<div id="banners"><div class="banner" role="alert">No training row was poisoned in '
                     r"central-test", page)
    monkeypatch.setattr(report_html, "BANNERS", [*report_html.BANNERS, lambda runs: f"<{len(runs)} runs>"])
    page = write_report(tmp_path / "c.html", [metrics], "x").read_text()
    assert '<div class="banner" role="alert">&lt;1 runs&gt;</div>' in page  # a new rule's text, escaped

    def broken(runs):
        raise KeyError("x")

    monkeypatch.setattr(report_html, "BANNERS", [broken, report_html.nothing_poisoned])
    with pytest.warns(RuntimeWarning, match="banner broken failed"):
        page = write_report(tmp_path / "d.html", [_trimmed(metrics, poison_count=0)], "x").read_text()
    assert page.count('class="banner"') == 1 and "No training row was poisoned" in page  # the others still show


@browser.needs_chromium
def test_centralized_report_in_headless_chromium(run_dir, tmp_path, metrics):
    page = run_dir / "report.html"
    gray = browser.screenshot(page, tmp_path / "shot.png", tmp_path / "profile", size=(1200, 2400))
    browser.assert_not_blank(gray)
    found = browser.probe(page, """window.addEventListener('load', function () {
      var imgs = Array.prototype.slice.call(document.images);
      report({headings: visibleHeadings(), images: imgs.length,
              decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length});
    });""", tmp_path / "profile")
    assert found["errors"] == []
    value = found["value"]
    assert set(SECTIONS) <= set(value["headings"])
    assert {"Per-class accuracy on clean test inputs", "Classes the poison touched", "Poisoned training rows",
            "Triggered test inputs"} <= set(value["headings"])
    assert value["images"] == value["decoded"] > 2 * len(metrics["final"]["examples"]["poisoned"])
