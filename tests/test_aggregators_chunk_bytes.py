"""Every rule with a chunk_bytes parameter refuses a value that is not an integer >= 1 with a one-line ConfigError.

chunk_bytes bounds the rule's column-chunk temporaries; before this check a NaN raised Python's own
ValueError from int() and a negative or zero value was taken silently (max(1, ...) chunk widths).
"""

from __future__ import annotations

import inspect

import pytest

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import AGGREGATORS

CHUNKED = [n for n in AGGREGATORS.names() if "chunk_bytes" in inspect.signature(AGGREGATORS.entry(n).factory).parameters]


def test_the_chunked_rules_are_found():
    assert {"median", "trimmed_mean", "krum", "bulyan", "signsgd_vote", "robust_lr", "three_sigma"} <= set(CHUNKED)


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("bad", [0, -1, float("nan"), 2.5, "1e6"])
def test_a_bad_chunk_bytes_is_refused_in_one_line(name: str, bad):
    with pytest.raises(ConfigError) as err:
        AGGREGATORS.get(name, chunk_bytes=bad)
    message = str(err.value)
    assert "\n" not in message and name in message and "chunk_bytes" in message


@pytest.mark.parametrize("name", CHUNKED)
def test_a_valid_chunk_bytes_builds_the_rule(name: str):
    assert callable(AGGREGATORS.get(name, chunk_bytes=1 << 20))
