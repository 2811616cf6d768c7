"""Poison Ink's edge trigger (Zhang et al. 2022): Sobel by hand, the coloured edges blended on edge pixels only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS, TRIGGERS
from poisonlab.poison.poison_ink import edge_map, sobel_magnitude

DOT = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 1, 3, 3)


def test_sobel_magnitude_of_a_single_bright_pixel_by_hand():
    # replicated border: at a corner the dot sits at the kernel's far corner (gx = gy = 1); beside it on a side
    # (weight 2 in one kernel, 0 in the other) the magnitude is 2; at the dot both kernels cancel. Divided by 4.
    c, s = math.sqrt(2) / 4, 2 / 4
    expected = torch.tensor([[c, s, c], [s, 0.0, s], [c, s, c]])
    assert torch.allclose(sobel_magnitude(DOT)[0, 0], expected, atol=1e-7)
    assert torch.equal(edge_map(DOT, 0.4)[0, 0], (expected >= 0.4).float())


def test_sobel_magnitude_is_scipys_on_a_random_image():
    img = np.random.default_rng(0).random((7, 9))
    gx, gy = ndimage.sobel(img, axis=1, mode="nearest"), ndimage.sobel(img, axis=0, mode="nearest")
    ours = sobel_magnitude(torch.tensor(img).reshape(1, 1, 7, 9))[0, 0].numpy()
    assert np.allclose(ours, np.hypot(gx, gy) / 4)


def test_trigger_paints_only_edge_pixels_toward_the_colour():
    trig = TRIGGERS.get("poison_ink", color=0.5, threshold=0.4, strength=0.5)
    x = DOT.repeat(2, 1, 1, 1)
    before = x.clone()
    out = trig(x)
    assert torch.equal(x, before)
    edges = edge_map(DOT, 0.4)[0, 0].bool()  # the four side neighbours (0.5 >= 0.4), not the corners (0.354)
    assert int(edges.sum()) == 4
    assert torch.allclose(out[0, 0][edges], torch.full((4,), 0.25))  # 0 + 0.5 (0.5 - 0)
    assert torch.equal(out[0, 0][~edges], DOT[0, 0][~edges]) and torch.equal(out[0], out[1])
    assert torch.equal(trig(DOT[0]), out[0])  # a single (c, h, w) image


def test_colour_images_use_luma_edges_and_the_rgb_colour(digits):
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    out = TRIGGERS.get("poison_ink", color=(1.0, 0.0, 0.0), threshold=0.1, strength=1.0)(x)
    edges = edge_map(x, 0.1).bool().expand_as(x)
    assert torch.equal(out[~edges], x[~edges])
    assert torch.allclose(out[:, 0][edges[:, 0]], torch.ones(int(edges[:, 0].sum())))
    assert torch.allclose(out[:, 1:][edges[:, 1:]], torch.zeros(int(edges[:, 1:].sum())))
    grey = TRIGGERS.get("poison_ink")(digits.x[:5])
    assert (grey - digits.x[:5]).abs().max() > 0 and grey.shape == (5, 1, 8, 8)


def test_backdoor_with_poison_ink_and_bad_parameters(digits):
    out = POISONS.get("backdoor", trigger="poison_ink", target=0, rate=0.1).apply(digits, 0)
    assert out.count == round(0.1 * len(digits)) and bool((out.data.y[out.mask] == 0).all())
    for params in ({"strength": 2}, {"threshold": 0}, {"color": (2.0, 0.0, 0.0)}):
        with pytest.raises(ConfigError):
            TRIGGERS.get("poison_ink", **params)
    with pytest.raises(ConfigError, match="2x2"):
        TRIGGERS.get("poison_ink")(torch.zeros(1, 1, 1, 4))
