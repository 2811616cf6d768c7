"""The notebooks in docs/notebooks run top to bottom in a fresh Jupyter kernel (nbclient), and render.

story.ipynb walks the classic story on small settings (label flip, backdoor, one client's leverage,
model replacement, a robust rule) and ends with assertions on its own numbers; this test executes it
and checks that its results rendered as HTML tables with plots (the _repr_html_ of the result,
dataset and detection classes and poisonlab.notebook.Runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="the notebook test needs the dev extra (nbformat, nbclient, ipykernel)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"
REPO = NOTEBOOKS.parents[1]


def execute(path: Path, tmp_path: Path, monkeypatch):
    """The notebook after running every cell in a fresh kernel (cwd tmp_path, this checkout importable)."""
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_story_notebook_runs_and_renders_tables_and_plots(tmp_path, monkeypatch):
    nb = execute(NOTEBOOKS / "story.ipynb", tmp_path, monkeypatch)
    html = [o["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("Dataset digits" in h for h in html), "the dataset did not render"
    assert any("clean model" in h and "poisoned model" in h for h in html), "a centralized result did not render"
    assert any("model replacement, median" in h for h in html), "the federated runs did not render"
    assert sum("data:image/png;base64," in h for h in html) >= 4, "plots are missing"
    printed = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []) if o.get("name") == "stdout")
    assert "replacement: ASR round 6" in printed


def test_every_notebook_in_docs_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["story.ipynb"], "add a test for the new notebook"
