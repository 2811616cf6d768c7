"""The HTML report of one or more runs: `write_report(path, runs, title)`.

Each run is a metrics.json document (see docs/report.md for the layout and what each section
shows). The page is self-contained: figures are embedded SVG (federated, report/charts.py) or PNG (centralized,
matplotlib) data URIs, CSS is inline, there is no script
and no external resource, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from poisonlab.rundir import atomic_write_text

from poisonlab.errors import ConfigError
from poisonlab.report.html import render

__all__ = ["write_report", "render"]


def write_report(path, runs: Sequence[dict], title: str, gallery_png: bytes | None = None,
                 extra_sections: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write the report page for `runs` to `path` atomically (temp file + os.replace); return the path.

    Missing pieces (no history, null ASR, no detections, NaN, empty lists) are shown as
    "not measured" or leave their section out. `extra_sections` are (title, HTML body) pairs
    placed before the config; the title is escaped, the body is inserted as given, so the caller
    must escape any text in it.
    """
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence):
        raise ConfigError(f"runs={type(runs).__name__} is not accepted; accepted: a list of metrics.json dicts")
    path = Path(path)
    page = render(list(runs), str(title), gallery_png, extra_sections)
    return atomic_write_text(path, page)
