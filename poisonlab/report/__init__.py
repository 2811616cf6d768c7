"""The HTML report of one or more runs: `write_report(path, runs, title)`.

Each run is a metrics.json document (see docs/report.md for the layout and what each section
shows). The page is self-contained: figures are embedded PNGs, CSS is inline, there is no script
and no external resource, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
