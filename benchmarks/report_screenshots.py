"""The two report screenshots in docs/ (docs/report.md shows them), made from real runs on digits.

    .venv/bin/python benchmarks/report_screenshots.py            # about a minute on a laptop CPU

Runs `poisonlab run` on a small centralized backdoor (CNN, 3 epochs, 10% poisoned with a 2x2 patch,
two detectors) and `poisonlab sweep` on a small federated grid (10 clients, 5 rounds; no attack vs two
boosted backdoor clients x mean, median, Krum, norm clipping x seeds 0 and 1), opens both reports in
headless Chromium (1200 and 1400 pixels wide) and saves the top of each page as docs/report-centralized.png and docs/report-sweep.png
(reduced to 900 pixels wide and 64 colours so they stay small). Needs `chromium` on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

DOCS = Path(__file__).resolve().parents[1] / "docs"
TRIGGER = {"name": "patch", "params": {"size": 2, "color": [1.0], "position": "bottom-right"}}
CENTRALIZED = {
    "name": "digits: 10% patch backdoor (centralized)", "seed": 0,
    "data": {"dataset": "digits", "test_fraction": 0.25}, "model": {"name": "cnn"},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "poison": [{"name": "backdoor", "params": {"trigger": TRIGGER, "target": 0, "rate": 0.1}}],
    "detect": [{"name": "spectral_signatures"}, {"name": "activation_clustering"}],
}
SWEEP = {
    "name": "digits: backdoor vs robust rules (sweep)", "seed": 0,
    "data": {"dataset": "digits", "test_fraction": 0.25}, "model": {"name": "cnn"},
    "federated": {"clients": 10, "partition": {"name": "iid"}, "rounds": 5, "sample": 1.0,
                  "local": {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9},
                  "aggregator": {"name": "mean"}},
    "grid": {"federated.adversary": [None, {"clients": 2, "poison": {"name": "backdoor", "params": {
                 "trigger": TRIGGER, "target": 0, "rate": 0.5}}, "attack": {"name": "scale", "params": {"gamma": 5}}}],
             "federated.aggregator": [{"name": "mean"}, {"name": "median"}, {"name": "krum", "params": {"f": 2}},
                                      {"name": "norm_clip", "params": {"bound": 1.0}}],
             "seed": [0, 1]},
}


def poisonlab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "poisonlab", *args], check=True)


def shoot(page: Path, out: Path, height: int, work: Path, width: int = 1200) -> None:
    """Screenshot the top `height` pixels of page at `width` px wide; save it 900 px wide in 64 colours."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not on PATH (apt-get install -y chromium)")
    raw = work / f"{out.stem}-raw.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={work / 'profile'}", "--force-device-scale-factor=1",
                    f"--window-size={width},{height}", f"--screenshot={raw}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(raw) as im:
        small = im.convert("RGB").resize((900, round(900 * im.height / im.width)), Image.LANCZOS)
        small.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the two PNGs (default docs/)")
    parser.add_argument("--work", type=Path, help="keep the runs here (a rerun skips finished sweep cells)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "central.yaml").write_text(yaml.safe_dump(CENTRALIZED, sort_keys=False))
        (work / "sweep.yaml").write_text(yaml.safe_dump(SWEEP, sort_keys=False))
        if not (work / "central" / "report.html").is_file():
            poisonlab("run", str(work / "central.yaml"), "--out", str(work / "central"), "--quiet")
        poisonlab("sweep", str(work / "sweep.yaml"), "--out", str(work / "sweep"))
        shoot(work / "central" / "report.html", args.out / "report-centralized.png", 3000, work)
        shoot(work / "sweep" / "report.html", args.out / "report-sweep.png", 1500, work, width=1400)


if __name__ == "__main__":
    main()
