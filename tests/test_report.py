"""The HTML report: self-contained, escaped, atomic, robust to partial runs; ROC and flag tallies by hand."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import warnings
from html.parser import HTMLParser
from xml.etree import ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageStat

from poisonlab import metrics
from poisonlab.report import write_report
from poisonlab.report import data as rdata
from poisonlab.rng import numpy_rng
from tests import browser as browser_tools

CLASSES = [str(i) for i in range(10)]
FIGURE_SECTIONS = ["Clean accuracy and attack success rate per round", "Confusion matrix", "Client update norms",
                   "Who each defense flagged", "Detection ROC curves", "Per-class accuracy"]


# ------------------------------------------------------------------ synthetic metrics.json documents

def federated_run(name: str, catches: bool, seed: int = 0, rounds: int = 12, clients: int = 20) -> dict:
    """A federated run: attackers 0 and 1 send boosted updates; the defense flags them when `catches`."""
    rng = numpy_rng(seed, "report-test", name)
    history = []
    for r in range(rounds):
        sampled = sorted(rng.choice(clients, size=10, replace=False).tolist())
        malicious = [c for c in sampled if c in (0, 1)]
        norms = [float(10 + rng.random()) if c in malicious else float(1 + 0.2 * rng.random()) for c in sampled]
        history.append({
            "round": r, "clean_accuracy": 0.5 + 0.035 * r + 0.03 * rng.random(),
            "attack_success_rate": 0.05 + 0.05 * rng.random() if catches else min(1.0, 0.1 * r),
            "loss": 1.0 / (r + 1), "sampled": sampled, "malicious": malicious,
            "selected": [c for c in sampled if c not in malicious] if catches else sampled,
            "flagged": malicious if catches else [], "update_norms": norms,
            "precision": 1.0 if catches and malicious else None, "recall": 1.0 if catches and malicious else 0.0,
            "seconds": 0.1})
    cm = np.diag(rng.integers(80, 100, size=10)) + rng.integers(0, 4, size=(10, 10))
    return {"name": name, "kind": "federated", "seed": seed, "wall_time": 12.5,
            "final": {"clean_accuracy": 0.9731, "loss": 0.1, "attack_success_rate": 0.05 if catches else 0.97,
                      "per_class_accuracy": (np.diag(cm) / cm.sum(1)).tolist(), "confusion": cm.tolist(),
                      "confusion_clean_model": None, "flips": {"7->1": 3}, "class_names": CLASSES},
            "history": history, "detections": [],
            "config": {"name": "demo", "seed": seed, "federated": {"clients": clients, "rounds": rounds,
                                                                    "aggregator": {"name": name, "params": {}}}}}


def centralized_run() -> dict:
    """A centralized run with a spectral-signatures detection and no per-round history."""
    rng = numpy_rng(0, "report-test", "centralized")
    truth = np.zeros(200, dtype=bool)
    truth[:20] = True
    scores = rng.normal(size=200) + 2.0 * truth
    flagged = scores > 1.5
    s = metrics.detection_scores(flagged, truth, scores)
    return {"name": "centralized backdoor", "kind": "centralized", "seed": 0, "wall_time": 75.0,
            "final": {"clean_accuracy": 0.95, "loss": 0.2, "attack_success_rate": 0.88,
                      "per_class_accuracy": [0.9] * 10, "confusion": (np.eye(10, dtype=int) * 50 + 1).tolist(),
                      "class_names": CLASSES, "flips": {}},
            "history": [],
            "detections": [{"detector": "spectral_signatures", "scores": scores.tolist(), "flagged": flagged.tolist(),
                            "truth": truth.tolist(), **{k: getattr(s, k) for k in
                                                        ("tpr", "fpr", "precision", "recall", "f1", "auroc")}}],
            "config": {"name": "central", "seed": 0, "poison": [{"name": "backdoor", "params": {"rate": 0.1}}]}}


def partial_run() -> dict:
    """Nulls, NaN, empty lists, mismatched lengths and a hostile name everywhere."""
    nan = float("nan")
    return {"name": "<script>alert(1)</script>", "kind": "federated", "seed": None, "wall_time": None,
            "final": {"clean_accuracy": nan, "attack_success_rate": None, "per_class_accuracy": [],
                      "confusion": [[1, 2], [3]], "flips": {"<b>": nan}, "class_names": []},
            "history": [{"round": 0, "clean_accuracy": None, "attack_success_rate": None, "sampled": [],
                         "malicious": [], "flagged": [], "update_norms": []},
                        {"round": 1, "clean_accuracy": nan, "update_norms": [1.0, nan], "sampled": [3]},
                        "not a record"],
            "detections": [{"detector": "<img src=x onerror=alert(1)>", "scores": [], "truth": [], "auroc": nan}],
            "config": {"note": "</pre><script>alert(2)</script>", "nested": {"empty": {}, "list": []}}}


class _Tags(HTMLParser):
    """Collects every start tag with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def png_gallery() -> bytes:
    """A small two-colour PNG standing in for the trigger gallery."""
    im = Image.new("RGB", (120, 60), "white")
    im.paste((0, 0, 0), (60, 0, 120, 60))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, str]:
    """A report of two federated runs, a centralized run and a partial run, with a gallery."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    runs = [federated_run("mean", catches=False), federated_run("krum", catches=True),
            centralized_run(), partial_run()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a section that fails to draw warns: fail the test
        path = write_report(out, runs, "demo <report>", gallery_png=png_gallery(),
                            extra_sections=[("Notes & caveats", "<p>seeded</p>")])
    return path, path.read_text(encoding="utf-8")


# ------------------------------------------------------------------ the page

def test_report_is_written_with_every_section(full_report):
    path, page = full_report
    assert path.is_file() and path.name == "report.html"
    for title in ["Summary", "Detection quality", "Targeted misclassifications", "Trigger gallery",
                  *FIGURE_SECTIONS, "Notes &amp; caveats", "Config"]:
        assert f"<h2>{title}</h2>" in page, title
    assert "could not be drawn" not in page
    assert "<title>demo &lt;report&gt;</title>" in page


def test_every_image_is_an_embedded_non_blank_svg_or_png(full_report):
    _, page = full_report
    images = [attrs for tag, attrs in tags(page) if tag == "img"]
    assert len(images) == len(FIGURE_SECTIONS) + 1  # + the gallery
    svgs = [attrs for attrs in images if attrs["src"].startswith("data:image/svg+xml;base64,")]
    assert len(svgs) == len(FIGURE_SECTIONS)  # the figures are SVG (report/charts.py), the gallery a PNG
    for attrs in images:
        src = attrs["src"]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        shown = (int(attrs["width"]), int(attrs["height"]))  # the small gallery is enlarged 4x
        if attrs in svgs:
            root = ElementTree.fromstring(raw.decode("utf-8"))
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert shown == (round(float(root.get("width"))), round(float(root.get("height"))))
            assert shown[0] >= 100 and shown[1] >= 50
            fills = {el.get("fill") or el.get("stroke") for el in root.iter() if el is not root}
            assert len(fills - {None, "none", "#ffffff"}) >= 2, "figure draws nothing but its background"
            continue
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 100 and im.height >= 50
            assert shown == im.size or shown == (4 * im.width, 4 * im.height)
            assert max(ImageStat.Stat(im.convert("L")).stddev) > 5, "image is a single colour"


def test_no_external_resources_or_scripts(full_report):
    _, page = full_report
    for tag, attrs in tags(page):
        assert tag not in {"script", "link", "iframe", "object", "embed"}, tag
        for key in ("src", "href", "srcset", "action"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, key, attrs[key][:60])
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page


def test_text_from_runs_is_escaped(full_report):
    _, page = full_report
    assert re.search(r"<script", page, re.I) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the run name, shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page     # the detector name
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)" in page       # a config value
    assert [t for t, _ in tags(page)].count("img") == len(FIGURE_SECTIONS) + 1  # no injected <img>


def test_summary_rows_show_final_figures_and_not_measured(full_report):
    _, page = full_report
    summary = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    rows = {re.sub(r"<[^>]+>", "", m.group(1)): m.group(0)
            for m in re.finditer(r'<tr><td class="name">(.*?)</td>.*?</tr>', summary)}
    mean, krum = rows["mean"], rows["krum"]
    assert "97.31%" in mean and "97.00%" in mean and "12.5 s" in mean
    # krum flags exactly the sampled attackers: precision 100 %, recall 100 %; mean flags nobody
    assert krum.count("100.00%") == 2 and "client updates, all rounds" in krum
    assert "nobody flagged" in mean and "0.00%" in mean  # precision undefined, recall 0
    central = rows["centralized backdoor"]
    assert "detector spectral_signatures" in central and "1 min 15 s" in central
    hostile = rows["&lt;script&gt;alert(1)&lt;/script&gt;"]
    assert hostile.count("not measured") >= 4  # seed, accuracy, ASR, wall time
    assert "nobody flagged" in hostile and "no attacker sampled" in hostile


def test_config_shows_first_in_full_and_only_differences_after(full_report):
    _, page = full_report
    config = page.split('<section id="config">', 1)[1]
    assert "rounds: 12" in config  # the first run's full config
    krum = config.split("<h3>krum", 1)[1].split("<h3>", 1)[0]
    assert "federated.aggregator.name: krum" in krum and "rounds" not in krum


def test_partial_and_empty_runs_do_not_crash(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        page = write_report(tmp_path / "a.html", [partial_run(), {}, {"name": "bare", "final": None}],
                            "partial").read_text()
    assert "<h2>Summary</h2>" in page and "not measured" in page and "run 2" in page
    # null/NaN accuracies, a ragged confusion matrix, empty per-class and score lists: nothing to draw
    for title in ("Clean accuracy and attack success rate per round", "Confusion matrix", "Detection ROC curves",
                  "Per-class accuracy", "Targeted misclassifications"):
        assert f"<h2>{title}</h2>" not in page, title
    # the one finite update norm and the (empty) flag records are still drawn
    assert "<h2>Client update norms</h2>" in page and "<h2>Who each defense flagged</h2>" in page
    assert [t for t, _ in tags(page)].count("img") == 2
    empty = write_report(tmp_path / "b.html", [], "nothing").read_text()
    assert "No runs to report" in empty


def test_centralized_run_alone_gets_no_round_figures(tmp_path):
    page = write_report(tmp_path / "r.html", [centralized_run()], "central").read_text()
    assert "<h2>Detection ROC curves</h2>" in page and "<h2>Confusion matrix</h2>" in page
    for title in ("Clean accuracy and attack success rate per round", "Client update norms", "Who each defense flagged"):
        assert f"<h2>{title}</h2>" not in page


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    write_report(out, [{"name": "a"}], "first")
    write_report(out, [{"name": "b"}], "second")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert "<title>second</title>" in out.read_text() and oct(out.stat().st_mode & 0o777) == "0o644"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(out, [], "third")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # temp file removed
    assert "<title>second</title>" in out.read_text()                     # old report intact


def test_bad_gallery_bytes_are_refused_with_a_note(tmp_path):
    page = write_report(tmp_path / "r.html", [], "g", gallery_png=b"GIF89a not a png").read_text()
    assert "not a readable PNG" in page and "<img" not in page


# ------------------------------------------------------------------ the numbers behind the figures

def test_roc_curve_by_hand_and_against_sklearn():
    # thresholds 0.9 -> (fpr 0, tpr 1/2); 0.8 (tie of a positive and a negative) -> (1/2, 1); 0.1 -> (1, 1)
    scores, truth = np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, False, True, False])
    fpr, tpr = metrics.roc_curve(scores, truth)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert metrics.auroc(scores, truth) == pytest.approx(0.875)  # Mann-Whitney: (1 + 1 + 0.5 + 1) / 4
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.875)

    from sklearn.metrics import roc_auc_score, roc_curve

    rng = numpy_rng(3, "roc")
    scores = np.round(rng.normal(size=300), 1)  # rounding makes many ties
    truth = rng.random(300) < 0.3
    scores = scores + truth
    fpr, tpr = metrics.roc_curve(scores, truth)
    ref_fpr, ref_tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(truth, scores))
    assert metrics.auroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores))


def test_detection_arrays_refuse_unusable_records():
    assert rdata.detection_arrays({"scores": [0.1, 0.2], "truth": [True, True]}) is None   # one class
    assert rdata.detection_arrays({"scores": [0.1], "truth": [True, False]}) is None      # lengths differ
    assert rdata.detection_arrays({"scores": [0.1, float("nan")], "truth": [True, False]}) is None
    assert rdata.detection_arrays({"scores": None}) is None


def test_flag_tally_and_matrix_by_hand():
    run = {"history": [
        {"round": 0, "sampled": [0, 1, 2], "malicious": [0], "flagged": [0, 2]},   # tp 1, fp 1
        {"round": 1, "sampled": [1, 2, 3], "malicious": [0, 3], "flagged": []},    # 0 sat out; 3 missed: fn 1
    ], "config": {"federated": {"clients": 5}}}
    tally = rdata.flag_tally(run)
    assert (tally.tp, tally.fp, tally.fn) == (1, 1, 1)
    assert tally.precision == 0.5 and tally.recall == 0.5
    status, attacker, rounds = rdata.flag_matrix(run)
    np.testing.assert_array_equal(status, [[2, 1, 2, 0, 0], [0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(attacker, [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]])
    assert rounds == [0, 1]
    assert rdata.flag_tally({"history": [{"round": 0, "sampled": [1]}]}) is None  # no flag records


def test_update_norms_align_with_sampled_clients():
    run = {"history": [{"round": 4, "sampled": [7, 2], "malicious": [2], "update_norms": [1.0, 9.0]},
                       {"round": 5, "sampled": [7, 2], "malicious": [2], "update_norms": [1.0]}]}  # misaligned
    rounds, norms, bad = rdata.norm_points(run)
    np.testing.assert_array_equal(rounds, [4, 4, 5])
    np.testing.assert_array_equal(norms, [1.0, 9.0, 1.0])
    np.testing.assert_array_equal(bad, [False, True, False])


def test_series_drops_missing_rounds():
    run = {"history": [{"round": 0, "clean_accuracy": 0.5}, {"round": 1, "clean_accuracy": None},
                       {"round": 2, "clean_accuracy": float("nan")}, {"round": 3, "clean_accuracy": 0.7}]}
    x, y = rdata.series(run, "clean_accuracy")
    np.testing.assert_array_equal(x, [0, 3])
    np.testing.assert_array_equal(y, [0.5, 0.7])


# ------------------------------------------------------------------ headless Chromium

# Counts images that decoded completely: drawn to a canvas, the bottom row must be opaque (every
# figure has a white background; a truncated PNG leaves its undecoded rows transparent).
IMAGE_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (img) {
    if (!img.complete || img.naturalWidth === 0) return false;
    var c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    var ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    var last = ctx.getImageData(0, c.height - 1, c.width, 1).data;
    for (var k = 3; k < last.length; k += 4) if (last[k] === 0) return false;
    return true;
  }).length;
  var out = document.createElement('pre');
  out.id = 'image-probe';
  out.textContent = 'decoded=' + ok + ' total=' + imgs.length;
  document.body.appendChild(out);
});
</script>"""


def _decoded_images(browser: list[str], page: str, where: Path) -> tuple[int, int]:
    """(images fully decoded, images) of a page, counted by IMAGE_PROBE in headless Chromium."""
    where.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom", where.as_uri()],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"decoded=(\d+) total=(\d+)", dom)
    assert found, "the image probe did not run"
    return int(found.group(1)), int(found.group(2))


@browser_tools.needs_chromium
def test_report_renders_in_headless_chromium(full_report, tmp_path):
    path, page = full_report
    browser = browser_tools.command(tmp_path / "profile")
    browser_tools.assert_not_blank(browser_tools.screenshot(path, tmp_path / "shot.png", tmp_path / "profile"))

    decoded, total = _decoded_images(browser, page, tmp_path / "probe.html")
    assert total == len(FIGURE_SECTIONS) + 1 and decoded == total

    # the probe can fail: a PNG cut in half is counted as not decoded
    payload = re.findall(r'src="data:image/png;base64,([^"]+)"', page)[0]
    broken = page.replace(payload, payload[: len(payload) // 2 // 4 * 4], 1)
    assert _decoded_images(browser, broken, tmp_path / "broken.html") == (total - 1, total)


def test_attack_rounds_are_shaded_only_when_informative():
    from poisonlab.report.entry import Entry, attack_rounds

    def run(attacked):
        return {"history": [{"round": r, "sampled": [0, 1], "malicious": [0] if r in attacked else []}
                            for r in range(4)]}

    one_shot = [Entry("a", "#000", run({2})), Entry("b", "#111", run({2})), Entry("c", "#222", {})]
    assert attack_rounds(one_shot) == [2]  # the centralized run (no history) does not disagree
    assert attack_rounds([Entry("a", "#000", run({2})), Entry("b", "#111", run({1}))]) == []  # runs disagree
    assert attack_rounds([Entry("a", "#000", run({0, 1, 2, 3}))]) == []  # every round: nothing to single out


def test_malformed_values_never_crash_a_section():
    from poisonlab.report import render

    weird = [
        {"name": 5, "kind": None, "history": {"a": 1}, "final": [1, 2], "detections": "x", "config": [1, 2]},
        {"history": [{"round": "x", "clean_accuracy": "0.5", "update_norms": "abc", "sampled": "012",
                      "flagged": [True, 1.5, -3, 4], "malicious": [None]}],
         "final": {"confusion": "abc", "per_class_accuracy": [None, float("inf")], "class_names": "abc",
                   "flips": [1], "clean_accuracy": True},
         "detections": [{"scores": ["a", "b"], "truth": [1, 0]}, {"scores": [1, 2], "truth": [1, 0]}, None],
         "wall_time": -1, "config": {"a": {1: object()}, "b": float("nan")}},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a section falling back to its error note would warn
        page = render(weird, "weird")
    assert "could not be drawn" not in page
    assert "<h2>Detection ROC curves</h2>" in page  # the one usable detection still gets its curve
    assert "<h2>Summary</h2>" in page and page.count("not measured") >= 6


def test_config_diff_never_lists_a_key_as_both_absent_and_present():
    from poisonlab.report.html import config_diff, flatten

    central = flatten({"name": "a", "federated": None, "train": {"epochs": 2, "lr": 0.1}})
    federated = flatten({"name": "a", "federated": {"clients": 20, "rounds": 3}, "train": {"epochs": 2}})
    assert config_diff(central, federated) == {"federated.clients": 20, "federated.rounds": 3,
                                               "train.lr": "(absent)"}
    assert config_diff(federated, central) == {"federated": None, "train.lr": 0.1}
    assert config_diff(central, central) == {}
