"""Trigger kernels: expected pixels computed by hand, grey and colour, single image and batch, input untouched."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.triggers import (TRIGGERS, BlendTrigger, ImageTrigger, PatchTrigger, PatternTrigger,
                                       PixelTrigger, make_trigger, stamp_image, stamp_patch, stamp_pattern,
                                       stamp_pixel)

SHAPES = [(1, 6, 7), (3, 6, 7)]  # grey and colour, non-square to catch row/col swaps


def ramp(shape, n=None):
    """Deterministic distinct pixel values in [0, 0.5]."""
    full = (n, *shape) if n else shape
    return (torch.arange(torch.Size(full).numel(), dtype=torch.float32).reshape(full) / (2 * torch.Size(full).numel()))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [None, 4])
def test_pixel_sets_h_minus_d_w_minus_d(shape, n):
    x = ramp(shape, n)
    before = x.clone()
    out = stamp_pixel(x, distance=2, value=0.9)
    assert torch.equal(x, before)
    expected = before.clone()
    expected[..., 6 - 2, 7 - 2] = 0.9  # H=6, W=7: row 4, col 5, every channel
    assert torch.equal(out, expected)
    assert int((out != before).sum()) == shape[0] * (n or 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [None, 3])
def test_pattern_is_art_checkerboard(shape, n):
    x = ramp(shape, n)
    before = x.clone()
    out = PatternTrigger(distance=1, value=1.0)(x)
    assert torch.equal(x, before)
    expected = before.clone()
    # H=6, W=7, d=1: (5, 6), (4, 5), (5, 4), (3, 6)
    for r, c in [(5, 6), (4, 5), (5, 4), (3, 6)]:
        expected[..., r, c] = 1.0
    assert torch.equal(out, expected)


def test_patch_cyan_top_left_on_colour_and_grey():
    x = torch.full((2, 3, 8, 8), 0.25)
    out = TRIGGERS.get("patch", size=5, color=[0, 1, 1], position="top-left")(x)
    assert torch.equal(x, torch.full((2, 3, 8, 8), 0.25))
    assert torch.all(out[:, 0, :5, :5] == 0) and torch.all(out[:, 1:, :5, :5] == 1)
    assert torch.all(out[:, :, 5:, :] == 0.25) and torch.all(out[:, :, :, 5:] == 0.25)
    grey = stamp_patch(torch.zeros(1, 8, 8), size=2, color=[0, 1, 1], position="top-left")
    assert torch.allclose(grey[0, :2, :2], torch.full((2, 2), 0.587 + 0.114))  # BT.601 luma of cyan
    assert grey.shape == (1, 8, 8) and float(grey.sum()) == pytest.approx(4 * 0.701, rel=1e-6)


@pytest.mark.parametrize("position, box", [("bottom-right", (5, 8, 4, 7)), ("top-right", (0, 3, 4, 7)),
                                           ("bottom-left", (5, 8, 0, 3)), ((2, 1), (2, 5, 1, 4)),
                                           ("center", (2, 5, 2, 5))])
def test_patch_positions(position, box):
    out = stamp_patch(torch.zeros(1, 8, 7), size=3, color=1.0, position=position)
    r0, r1, c0, c1 = box
    expected = torch.zeros(1, 8, 7)
    expected[:, r0:r1, c0:c1] = 1.0
    assert torch.equal(out, expected)


def test_patch_replaces_not_adds():
    x = torch.full((1, 4, 4), 0.8)
    out = stamp_patch(x, size=2, color=0.5, position="top-left")
    assert torch.all(out[0, :2, :2] == 0.5)  # 0.8 + 0.5 would saturate to 1.0


def test_random_positions_need_generator_and_are_seeded():
    x = torch.zeros(50, 1, 10, 10)
    with pytest.raises(ConfigError, match="Generator"):
        stamp_patch(x, 3, 1.0, "random")
    a = stamp_patch(x, 3, 1.0, "random", torch.Generator().manual_seed(1))
    b = stamp_patch(x, 3, 1.0, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.all(a.sum((1, 2, 3)) == 9)  # each image gets one full 3x3 patch inside the frame
    corners = {tuple(torch.nonzero(img[0])[0].tolist()) for img in a}
    assert len(corners) > 10  # positions vary across the batch


def test_image_trigger_composite_and_blend_by_hand():
    # 2x2 trigger: colour (r, g, b), alpha; on a 3-channel 4x4 image at (1, 2)
    rgba = torch.zeros(4, 2, 2)
    rgba[:3] = torch.tensor([1.0, 0.5, 0.0]).reshape(3, 1, 1)
    rgba[3] = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    x = torch.full((3, 4, 4), 0.2)
    out = stamp_image(x, rgba, position=(1, 2), blend=0.8)
    assert torch.equal(x, torch.full((3, 4, 4), 0.2))
    expected = x.clone()
    for (i, j), a in {(0, 0): 1.0, (0, 1): 0.0, (1, 0): 0.5, (1, 1): 1.0}.items():
        for c, t in enumerate([1.0, 0.5, 0.0]):
            composite = a * t + (1 - a) * 0.2
            expected[c, 1 + i, 2 + j] = (1 - 0.8) * 0.2 + 0.8 * composite
    assert torch.allclose(out, expected)
    # grey: trigger colour becomes luma 0.299 + 0.5 * 0.587
    grey = stamp_image(torch.zeros(2, 1, 4, 4), rgba, position="top-left", blend=1.0)
    assert grey.shape == (2, 1, 4, 4)
    assert torch.allclose(grey[:, 0, 0, 0], torch.full((2,), 0.299 + 0.5 * 0.587))
    assert torch.all(grey[:, 0, 0, 1] == 0)  # alpha 0: original kept


def test_image_trigger_random_positions_batched():
    rgba = torch.ones(4, 2, 2)
    x = torch.zeros(20, 1, 6, 6)
    out = stamp_image(x, rgba, "random", 1.0, torch.Generator().manual_seed(0))
    assert torch.all(out.sum((1, 2, 3)) == 4)  # each image: one opaque white 2x2 block
    assert len({tuple(torch.nonzero(o[0])[0].tolist()) for o in out}) > 5


def test_image_trigger_from_file():
    from tests.conftest import shared_path

    path = shared_path("triggers", "alert-white.png")
    trig = ImageTrigger(path=str(path), size=(6, 6), position="bottom-right", blend=0.8)
    x = torch.zeros(3, 1, 28, 28)
    out = trig(x)
    assert torch.all(out[:, :, :22, :] == 0) and torch.all(out[:, :, :, :22] == 0)
    assert float(out[:, :, 22:, 22:].max()) > 0.3 and float(out.max()) <= 0.8 + 1e-6  # white * blend 0.8


def test_blend_trigger_formula():
    pattern = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(3))
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(4))
    from poisonlab.poison.triggers import stamp_blend

    out = stamp_blend(x, pattern, alpha=0.25)
    assert torch.allclose(out, 0.75 * x + 0.25 * pattern)
    noise = BlendTrigger(alpha=0.1, seed=2)
    assert torch.equal(noise(x), noise(x)) and not torch.equal(noise(x), BlendTrigger(alpha=0.1, seed=3)(x))


def test_specs_and_errors():
    t = make_trigger({"name": "patch", "params": {"size": 3, "color": [1.0], "position": "bottom-right"}})
    assert t == PatchTrigger(3, (1.0,), "bottom-right")
    assert make_trigger(t.to_dict()) == t
    assert make_trigger("pixel") == PixelTrigger()
    with pytest.raises(ConfigError, match="did you mean 'patch'"):
        TRIGGERS.get("patc")
    with pytest.raises(ConfigError, match="position"):
        stamp_patch(torch.zeros(1, 5, 5), 2, 1.0, "middle")
    with pytest.raises(ConfigError, match="outside"):
        stamp_patch(torch.zeros(1, 5, 5), 2, 1.0, (4, 4))
    with pytest.raises(ConfigError, match="color"):
        stamp_patch(torch.zeros(3, 5, 5), 2, [1.0, 0.0], "top-left")
    with pytest.raises(ConfigError, match="distance"):
        stamp_pattern(torch.zeros(1, 3, 3), distance=2)
    with pytest.raises(ConfigError, match="shape"):
        stamp_pixel(torch.zeros(5, 5))
