"""docs/peers.md names poisonlab's components by their registry names (the last column of every table row)."""

from __future__ import annotations

import re
from pathlib import Path

from poisonlab.fl.aggregators import AGGREGATORS
from poisonlab.fl.attacks import ATTACKS

PARAMETERS = {"mean"}  # `gaussian` (`mean`): a parameter named in the row, also a registered rule


def test_every_name_in_the_peer_table_is_registered():
    names = set(AGGREGATORS.names()) | set(ATTACKS.names()) | PARAMETERS
    page = (Path(__file__).resolve().parents[1] / "docs" / "peers.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    cited = {n for row in rows for n in re.findall(r"`([a-z_0-9]+)`", row.rstrip("|").split("|")[-1])}
    assert len(cited) > 40
    assert cited <= names, f"docs/peers.md names components that are not registered: {sorted(cited - names)}"
