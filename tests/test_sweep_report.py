"""The sweep report (runs/<sweep>/report.html): written by run_sweep, heatmap squares = mean ± std over
seeds computed by hand, reasons instead of numbers where nothing was measured, unique labels, links to
each cell's report, and the page in headless Chromium (no errors, the table sorts, the links resolve)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from poisonlab.report import write_report
from poisonlab.report.sweep import SweepCell, cell_figures, labels, render_sweep
from poisonlab.sweep import _short, run_sweep
from tests import browser

ACCURACY = {("none", "mean", 0): 0.90, ("none", "mean", 1): 0.80, ("none", "krum", 0): 0.85,
            ("none", "krum", 1): 0.83, ("scale", "mean", 0): 0.70, ("scale", "mean", 1): 0.60,
            ("scale", "krum", 0): 0.84, ("scale", "krum", 1): 0.86}
ADVERSARIES = [None, {"clients": 1, "attack": {"name": "scale", "params": {"gamma": 5}}}]
GRID = {"federated.adversary": ADVERSARIES, "federated.aggregator": [{"name": "mean"}, {"name": "krum"}],
        "seed": [0, 1]}


def fake_metrics(adversary: str, rule: str, seed: int) -> dict:
    """A federated cell: clients 0..3, attacker 0 when attacked; krum flags client 0 (and client 1 in seed 1)."""
    attacked = adversary == "scale"
    flagged = ([0] if attacked else [2]) + ([1] if seed == 1 else []) if rule == "krum" else []
    history = [{"round": 0, "sampled": [0, 1, 2, 3], "malicious": [0] if attacked else [], "flagged": flagged}]
    asr = {"mean": 0.9, "krum": 0.1}[rule] + 0.05 * seed if attacked else None
    return {"name": "cell", "kind": "federated", "seed": seed, "wall_time": 1.5 + seed,
            "final": {"clean_accuracy": ACCURACY[(adversary, rule, seed)], "attack_success_rate": asr},
            "history": history, "detections": []}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A sweep run by run_sweep with a fake runner that writes each cell's metrics and report."""
    out = tmp_path_factory.mktemp("sweep")

    def run_one(config, cell_dir):
        adversary = "scale" if config.federated.adversary else "none"
        metrics = fake_metrics(adversary, config.federated.aggregator.name, config.seed)
        (cell_dir / "metrics.json").write_text(json.dumps(metrics))
        if (adversary, config.seed) != ("none", 1):  # a cell without a report: no link
            write_report(cell_dir / "report.html", [metrics], "cell")
        return metrics

    doc = {"name": "grid <test>", "data": {"dataset": "digits"}, "model": {"name": "mlp"},
           "federated": {"clients": 6, "rounds": 1}, "grid": GRID}
    logged = []
    run_sweep(doc, out, run_one, log=logged.append)
    assert logged[-1] == f"sweep report: {out / 'report.html'}"
    return out


@pytest.fixture(scope="module")
def page(sweep_dir) -> str:
    return (sweep_dir / "report.html").read_text(encoding="utf-8")


def heat(page: str, title: str) -> dict[tuple[str, str], str]:
    """(row, column) -> the text of a heatmap square."""
    block = page.split(f"<h3>{title}</h3>", 1)[1].split("</table>", 1)[0]
    cols = re.findall(r"<th>(.*?)</th>", block.split("</thead>")[0])[1:]
    out = {}
    for row in re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", block.split("<tbody>")[1]):
        for col, cell in zip(cols, re.findall(r"<td[^>]*>(.*?)</td>", row[1])):
            out[(row[0], col)] = re.sub(r"<[^>]+>", " ", cell).strip()
    return out


def test_heatmap_squares_are_mean_and_std_over_seeds(page):
    acc = heat(page, "Clean accuracy")
    for adversary in ("none", "scale"):
        for rule in ("mean", "krum"):
            values = [ACCURACY[(adversary, rule, s)] for s in (0, 1)]
            expected = f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} 2 seeds"
            assert acc[(adversary, rule)] == expected
    assert heat(page, "Attack success rate")[("scale", "mean")] == "92.5 ± 2.5 2 seeds"
    assert heat(page, "Attack success rate")[("none", "krum")] == "no trigger"


def test_flag_rates_are_pooled_as_in_each_cells_report(page):
    precision, recall = heat(page, "Flagged: precision"), heat(page, "Flagged: recall")
    # krum under attack: seed 0 flags {0} (precision 1), seed 1 flags {0, 1} (precision 1/2); recall 1 in both
    assert precision[("scale", "krum")] == "75.0 ± 25.0 2 seeds"
    assert recall[("scale", "krum")] == "100.0 ± 0.0 2 seeds"
    assert precision[("none", "krum")] == "0.0 ± 0.0 2 seeds"        # flags honest clients only
    assert precision[("scale", "mean")] == "nobody flagged" and recall[("none", "mean")] == "no attacker"
    assert recall[("scale", "mean")] == "0.0 ± 0.0 2 seeds"


def test_a_square_measured_by_some_seeds_says_how_many():
    cells = [SweepCell({"rule": "a", "seed": s}, f"c{s}", {"final": {"clean_accuracy": v}})
             for s, v in ((0, 0.5), (1, None))]
    cells.append(SweepCell({"rule": "b", "seed": 0}, "d", None))  # never finished
    page = render_sweep("t", cells, Path("/nonexistent"))
    acc = heat(page, "Clean accuracy")
    assert acc[("a", "rule")] == "50.0 1 of 2 seeds" and acc[("b", "rule")] == "not run"
    rows = page.split('<table class="cells">')[1]
    assert rows.count("not run") == 5 and "open</a>" not in rows  # 4 figures + wall time; no report to link


def test_labels_stay_unique_when_short_names_collide():
    a, b = {"name": "scale", "params": {"gamma": 5}}, {"name": "scale", "params": {"gamma": 10}}
    cells = [SweepCell({"attack": v}, f"c{i}", None) for i, v in enumerate([a, b, a])]
    names = labels(cells, _short)["attack"]
    assert sorted(names.values()) == ["scale", "scale #2"]


def test_cell_figures_match_a_centralized_cells_first_detector():
    run = {"kind": "centralized", "final": {"clean_accuracy": 0.9, "attack_success_rate": 0.4},
           "detections": [{"detector": "spectral", "precision": 0.25, "recall": 0.5}, {"precision": 1.0}]}
    assert cell_figures(run) == {"clean_accuracy": 0.9, "attack_success_rate": 0.4, "flag_precision": 0.25,
                                 "flag_recall": 0.5}


def test_table_links_to_existing_cell_reports_only(page, sweep_dir):
    table = page.split('<table class="cells">')[1].split("</table>")[0]
    links = re.findall(r'<a href="([^"]+)"', table)
    assert len(links) == 6 and table.count("no report") == 2
    for href in links:
        assert (sweep_dir / unquote(href)).is_file(), href
    assert "<title>grid &lt;test&gt;</title>" in page


SORT_PROBE = """window.addEventListener('load', function () {
  var table = document.querySelector('table.cells');
  function column(i) { return Array.prototype.slice.call(table.tBodies[0].rows).map(function (r) {
    return r.cells[i].textContent; }); }
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells).map(function (h) { return h.textContent; });
  var acc = heads.indexOf('Clean accuracy'), asr = heads.indexOf('Attack success rate');
  table.tHead.rows[0].cells[acc].click();
  var up = column(acc);
  table.tHead.rows[0].cells[acc].click();
  var down = column(acc);
  table.tHead.rows[0].cells[asr].click();
  var asrUp = column(asr);
  var links = Array.prototype.slice.call(document.querySelectorAll('table.cells a')).map(function (a) {
    return a.href; });
  report({headings: visibleHeadings(), up: up, down: down, asrUp: asrUp, links: links,
          sortState: table.tHead.rows[0].cells[asr].getAttribute('aria-sort')});
});"""


@browser.needs_chromium
def test_sweep_report_in_headless_chromium(sweep_dir, tmp_path):
    path = sweep_dir / "report.html"
    gray = browser.screenshot(path, tmp_path / "shot.png", tmp_path / "profile", size=(1200, 1600))
    browser.assert_not_blank(gray)
    found = browser.probe(path, SORT_PROBE, tmp_path / "profile")
    assert found["errors"] == []
    value = found["value"]
    assert {"Attack x defense", "Every cell", "The grid", "Clean accuracy", "Attack success rate",
            "Flagged: precision", "Flagged: recall"} <= set(value["headings"])
    accuracies = sorted(ACCURACY.values())
    assert value["up"] == [f"{100 * v:.2f}%" for v in accuracies]
    assert value["down"] == [f"{100 * v:.2f}%" for v in reversed(accuracies)]
    measured = sorted(a for a in (0.9, 0.95, 0.1, 0.15))
    assert value["asrUp"] == [f"{100 * v:.2f}%" for v in measured] + ["not measured"] * 4  # unmeasured last
    assert value["sortState"] == "ascending"
    assert len(value["links"]) == 6
    for href in value["links"]:
        assert href.startswith("file://") and Path(unquote(href[len("file://"):])).is_file(), href


@browser.needs_chromium
def test_the_probe_sees_script_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><h2>x</h2>'
                    "<script>undefinedFunction();</script></body></html>")
    found = browser.probe(page, "window.addEventListener('load', function () { report(visibleHeadings()); });",
                          tmp_path / "profile")
    assert found["value"] == ["x"] and len(found["errors"]) == 1 and "undefinedFunction" in found["errors"][0]
