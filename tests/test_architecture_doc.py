"""docs/architecture.md's worked example runs as written: the new rule registers, is built by name and
passes the test the page gives (in a fresh process, so the example never enters this process's registry)."""

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_worked_example_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2, "the worked example is one rule file and one test"
    rule, test = blocks
    (tmp_path / "norm_filter_example.py").write_text(rule)
    script = ("import norm_filter_example\n" + test +
              "\ntest_norm_filter_drops_the_long_row()\n"
              "from poisonlab.fl.aggregators import build_rule\n"
              "import torch\n"
              "nan = torch.tensor([[1.0, 0.0], [float('nan'), 1.0], [0.0, 1.0]])\n"
              "agg = build_rule('norm_filter', {'c': 2.0})(nan, torch.ones(3))\n"
              "assert agg.selected.tolist() == [True, False, True] and torch.isfinite(agg.update).all()\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{tmp_path}:{DOC.parents[1]}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
