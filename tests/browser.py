"""Headless Chromium for the report tests: screenshots, and a probe script run inside the loaded page.

`probe(page, js)` loads a copy of the page with two scripts added: one at the top of <head> that
records uncaught errors and console.error calls before the page's own script runs, and `js` at the
end of <body>, which runs on load and returns a JSON-able value through `report(value)`. The result
comes back through the dumped DOM (`--dump-dom`), so no driver or network is needed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

ERROR_CATCHER = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); }; })();
function report(value) {
  var out = document.createElement('pre'); out.id = 'probe-result';
  out.textContent = JSON.stringify({errors: window.__errors, value: value});
  document.body.appendChild(out);
}
</script>"""

# The h2/h3 headings that are laid out with a size (rendered, not hidden), in page order.
VISIBLE_HEADINGS = """
function visibleHeadings() {
  return Array.prototype.slice.call(document.querySelectorAll('h2, h3')).filter(function (h) {
    var r = h.getBoundingClientRect(), s = getComputedStyle(h);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
  }).map(function (h) { return h.textContent; });
}
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium / chromium-browser is not on PATH "
                                    "(install it with `apt-get install -y chromium` to run the browser tests)")


def command(profile: Path) -> list[str]:
    """The headless Chromium command line with a private profile directory."""
    return [chromium(), *FLAGS, f"--user-data-dir={profile}"]


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1200, 2000)) -> np.ndarray:
    """Screenshot page (window size) to out; return it as a grey-level array."""
    subprocess.run([*command(profile), f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", page.as_uri()],
                   check=True, capture_output=True, timeout=90)
    with Image.open(out) as im:
        assert im.size == size
        return np.asarray(im.convert("L"), dtype=float)


def assert_not_blank(gray: np.ndarray) -> None:
    """Text and figures drew: the screenshot is not one colour and has a fair share of dark pixels."""
    assert gray.std() > 10, "the screenshot is blank"
    assert (gray < 128).mean() > 0.01, "hardly any dark pixels: text and figures did not render"


def probe(page: Path, js: str, profile: Path) -> dict:
    """Load a copy of page (same directory, so relative links work) with the error catcher and `js`;
    return {"errors": [...], "value": what js passed to report()}."""
    source = page.read_text(encoding="utf-8")
    source = source.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + ERROR_CATCHER, 1)
    source = source.replace("</body>", f"<script>{VISIBLE_HEADINGS}\n{js}</script></body>")
    copy = page.with_name(f"probe-{page.name}")
    copy.write_text(source, encoding="utf-8")
    try:
        dom = subprocess.run([*command(profile), "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
                             check=True, capture_output=True, text=True, timeout=90).stdout
    finally:
        copy.unlink()
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    return json.loads(html.unescape(found.group(1)))
