"""Re-compression: the JPEG purifier equals PIL's own round trip, bit squeezing by hand, bad parameters and inputs
refused, and a faint checkerboard backdoor (the kind re-compression targets) erased, the caller's model untouched."""

import copy
import io
from functools import lru_cache

import numpy as np
import pytest
import torch
from PIL import Image

from poisonlab.defend import Defended, get
from poisonlab.defend.evaluate import backdoor_scores
from poisonlab.defend.recompression import Recompress
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import make_model
from poisonlab.training import TrainConfig, train
from repair2_world import same_state
from test_detect_common import bars, single_thread  # noqa: F401 (autouse)


def pil_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def test_jpeg_equals_pil_round_trip():
    g = torch.Generator().manual_seed(0)
    gray, rgb = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    out = Recompress("jpeg", 30, 8)(gray)
    want = pil_round_trip(np.round(gray[1, 0].numpy() * 255).astype(np.uint8), 30)
    assert torch.equal(out[1, 0], torch.tensor(want).float() / 255)
    out = Recompress("jpeg", 50, 8)(rgb)
    want = pil_round_trip(np.round(rgb[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), 50)
    assert torch.equal(out[0], torch.tensor(want).permute(2, 0, 1).float() / 255)
    assert not torch.equal(out, rgb)


def test_bit_squeezing_by_hand():
    x = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.8, 1.0]).view(1, 1, 2, 3)
    assert Recompress("bits", 75, 1)(x).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert Recompress("bits", 75, 2)(x).flatten().tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])


def test_bad_parameters_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="method='png'"):
        get("recompression", method="png")
    with pytest.raises(ConfigError, match="quality=0"):
        get("recompression", quality=0)
    with pytest.raises(DataError, match=r"values in \[0, 1\]"):
        Recompress("bits", 75, 4)(torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(DataError, match="1 or 3 channels"):
        Recompress("jpeg", 75, 4)(torch.zeros(1, 2, 4, 4))


def checker(x: torch.Tensor) -> torch.Tensor:
    """A faint trigger: a fixed pattern of +-0.15 per pixel (clamped to [0, 1]): broadband, low amplitude."""
    board = torch.randint(0, 2, (8, 8), generator=torch.Generator().manual_seed(7)) * 2.0 - 1.0
    return (x + 0.15 * board).clamp(0, 1)


@lru_cache(maxsize=None)
def faint_world():
    """(clean test set, cnn trained on bars with 10% of the rows carrying the checkerboard and relabelled 0)."""
    train_set, test_set = bars(800, 1), bars(200, 2)
    pick = (torch.rand(800, generator=torch.Generator().manual_seed(3)) < 0.1) & (train_set.y != 0)
    x, y = train_set.x.clone(), train_set.y.clone()
    x[pick], y[pick] = checker(x[pick]), 0
    model = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32)
    train(model, train_set.replace(x=x, y=y), TrainConfig(epochs=8, batch_size=32, lr=0.05), seed=0)
    return test_set, model.requires_grad_(False)


@pytest.mark.parametrize("params", [{"method": "bits", "bits": 1}, {"method": "jpeg", "quality": 10}])
def test_recompression_erases_a_faint_trigger_and_leaves_the_callers_model_alone(params):
    test_set, model = faint_world()
    before = copy.deepcopy(model.state_dict())
    trig = test_set.replace(x=checker(test_set.x))
    undefended = backdoor_scores(Defended(model), test_set, trig, 0)
    after = backdoor_scores(get("recompression", **params).defend(model=model), test_set, trig, 0)
    assert undefended.attack_success_rate > 0.9 and after.attack_success_rate < 0.2
    assert after.clean_accuracy >= undefended.clean_accuracy - 0.05
    assert same_state(before, model)
