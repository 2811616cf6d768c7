"""The federated report's SVG figures (report/svg.py, report/charts.py): ticks, scales, colours against
matplotlib's, escaping, the points drawn where the data says, and no matplotlib import to draw them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import matplotlib
import pytest

from poisonlab.report import charts
from poisonlab.report.entry import TAB10, TAB20, Entry, palette
from poisonlab.report.svg import Axes, Canvas, nice_ticks

ROOT = Path(__file__).resolve().parents[1]
NS = "{http://www.w3.org/2000/svg}"


def test_palette_is_matplotlibs_tab10_and_tab20():
    for name, colors in (("tab10", TAB10), ("tab20", TAB20)):
        cmap = matplotlib.colormaps[name]
        assert colors == [matplotlib.colors.to_hex(cmap(i)) for i in range(cmap.N)]
    assert palette(3) == TAB10[:3] and palette(12) == TAB20[:12]


def test_viridis_stops_match_matplotlib():
    cmap = matplotlib.colormaps["viridis"]
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert charts._viridis(share) == matplotlib.colors.to_hex(cmap(share))
    mid = [int(charts._viridis(0.125)[k:k + 2], 16) for k in (1, 3, 5)]
    want = [round(255 * v) for v in cmap(0.125)[:3]]
    assert max(abs(a - b) for a, b in zip(mid, want)) <= 12  # linear between stops: close, not equal


@pytest.mark.parametrize("lo, hi, integer, want", [
    (0, 100, False, [0, 20, 40, 60, 80, 100]),
    (0, 29, True, [0, 10, 20]),
    (0, 11, True, [0, 5, 10]),
    (0.13, 0.91, False, [0.2, 0.4, 0.6, 0.8]),
    (0, 3, True, [0, 1, 2, 3]),
    (5, 5, False, [5]),
])
def test_nice_ticks(lo, hi, integer, want):
    assert nice_ticks(lo, hi, integer=integer) == pytest.approx(want)


def test_axes_map_data_onto_the_box_and_log_scale():
    ax = Axes(Canvas(100, 100), (10, 20, 80, 60), (0, 10), (0, 100))
    assert (ax.px(0), ax.px(10), ax.py(0), ax.py(100), ax.py(50)) == (10, 90, 80, 20, 50)
    log = Axes(Canvas(100, 100), (0, 0, 100, 100), (0, 1), (1, 1000), log_y=True)
    assert log.py(1) == 100 and log.py(1000) == 0 and log.py(10) == pytest.approx(100 * 2 / 3)


def _run(name: str, acc: list[float]) -> dict:
    history = [{"round": r, "clean_accuracy": a, "attack_success_rate": 0.5, "sampled": [0, 1], "malicious": [0],
                "flagged": [], "update_norms": [1.0, 5.0]} for r, a in enumerate(acc)]
    return {"name": name, "kind": "federated", "history": history, "final": {"clean_accuracy": acc[-1]}}


def test_accuracy_points_are_drawn_at_their_values_and_names_escaped():
    entry = Entry("<script>alert(1)</script>", "#1f77b4", _run("x", [0.0, 0.5, 1.0]))
    root = ElementTree.fromstring(charts.accuracy_asr([entry]))
    lines = [el for el in root.iter(f"{NS}polyline") if el.get("stroke") == "#1f77b4"]
    assert len(lines) == 2  # accuracy and attack success rate
    ys = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    assert ys[0] > ys[1] > ys[2]  # 0 %, 50 %, 100 %: higher values drawn higher up
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.02)
    texts = [el.text for el in root.iter(f"{NS}text")]
    assert "<script>alert(1)</script>" in texts  # parsed back as text: it was escaped in the file
    assert charts.accuracy_asr([Entry("empty", "#000", {})]) is None


def test_norms_mark_malicious_clients_as_triangles():
    root = ElementTree.fromstring(charts.update_norms([Entry("a", "#000", _run("a", [0.1, 0.2]))]))
    triangles = [el for el in root.iter(f"{NS}polygon") if el.get("fill") == "#D55E00"]
    assert len(triangles) == 2 + 1  # one malicious client in each of 2 rounds, and the legend's


def test_rendering_a_federated_report_imports_no_matplotlib(tmp_path):
    run = _run("r", [0.2, 0.4, 0.6])
    (tmp_path / "m.json").write_text(json.dumps(run))
    code = ("import json, sys\nfrom poisonlab.report import write_report\n"
            f"write_report({str(tmp_path / 'r.html')!r}, [json.load(open({str(tmp_path / 'm.json')!r}))], 't')\n"
            "print([m for m in ('matplotlib', 'torch', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "r.html").read_text().count("data:image/svg+xml;base64,") == 3  # rounds, norms, flags
