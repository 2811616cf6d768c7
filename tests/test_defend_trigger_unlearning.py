"""trigger_unlearning: on a digits backdoor TABOR's verdict is unlearned (ASR falls, accuracy kept), a clean model
is judged clean and returned unchanged; bad parameters refused. (TABOR's statistic is checked by hand in
tests/test_detect_tabor.py, the stamping with true labels in tests/test_detect_mitigation.py.)"""

import pytest
import torch

from defend_support import accuracy, asr, unchanged_after
from inspect_support import digits_pair
from poisonlab.defend import get
from poisonlab.errors import ConfigError
from test_detect_common import TARGET, single_thread  # noqa: F401 (autouse)
from test_detect_tabor import TABOR


def test_unlearns_the_flagged_trigger_and_keeps_a_clean_model():
    clean, test_set, bad, good = digits_pair()
    defense = get("trigger_unlearning", detector={"name": "tabor", "params": TABOR})
    out = unchanged_after(defense, bad, clean=clean)
    assert out.details["backdoored"] and out.details["unlearned_label"] == TARGET
    assert asr(bad, test_set) > 0.95 and asr(out.model, test_set) < 0.2     # measured: 0.986 -> 0.026
    assert accuracy(out.model, test_set) >= accuracy(bad, test_set) - 0.05   # 0.950 -> 0.929
    kept = unchanged_after(defense, good, clean=clean)
    assert not kept.details["backdoored"] and kept.details["unlearned_label"] is None
    assert all(torch.equal(a, b) for a, b in zip(kept.model.state_dict().values(), good.state_dict().values()))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="share=0"):
        get("trigger_unlearning", share=0)
    with pytest.raises(ConfigError, match="epochs=0"):
        get("trigger_unlearning", epochs=0)
    with pytest.raises(ConfigError, match="inspects inputs"):
        get("trigger_unlearning", detector="strip")
