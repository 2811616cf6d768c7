"""Poison Ink with its injection network (Zhang et al. 2022): small residual, edges extractable, same net at test."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS
from poisonlab.poison.poison_ink import edge_map
from poisonlab.poison.poison_ink_network import PAPER_COLOR, ink, losses

# digits (8x8, values in [0, 1]): 10 epochs at lambda_image 1 measured a mean PSNR of 20.6 dB (max change 0.1 = eps)
# and an extraction error of 0.036 on injected images against 0.19 on clean ones (the blank guess: 0.22)
PARAMS = dict(target=0, rate=0.1, epochs=10, lambda_image=1.0, eps=0.1)


@pytest.fixture(scope="module")
def trained(digits):
    p = POISONS.get("poison_ink", **PARAMS)
    before = digits.x.clone()
    return p, p.apply(digits, 0), before


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1]."""
    return 10 * torch.log10(1 / (a - b).pow(2).flatten(1).mean(dim=1))


def test_the_trigger_is_the_edge_map_in_the_colour():
    x = torch.zeros(1, 3, 4, 4)
    x[..., 2:] = 1.0  # a vertical step: edges on the two middle columns
    t = ink(x, PAPER_COLOR, 0.25)
    edges = edge_map(x, 0.25)[0, 0].bool()
    assert int(edges.sum()) == 8
    for ch, value in enumerate(PAPER_COLOR):
        assert torch.allclose(t[0, ch][edges], torch.full((8,), value)) and bool((t[0, ch][~edges] == 0).all())
    grey = ink(x[:, :1], PAPER_COLOR, 0.25)  # grey images: the colour's BT.601 luma
    assert torch.allclose(grey[0, 0][edges], torch.full((8,), 0.299 * 240 / 255 + 0.587 * 120 / 255 + 0.114 * 20 / 255))


def test_the_losses_by_hand():
    class Fixed(torch.nn.Module):  # injector adding 0.1 everywhere; extractor returning its input
        def forward(self, x, trigger):
            return x + 0.1

    x, t = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, 1, 2, 2)
    t[:, :, 0, 0] = 1.0
    terms = losses(Fixed(), torch.nn.Identity(), x, t)
    assert terms["image"].item() == pytest.approx(0.01)
    assert terms["trigger"].item() == pytest.approx((0.4 ** 2 + 3 * 0.6 ** 2) / 4)  # GE(x_p) = 0.6 vs T
    assert terms["clean"].item() == pytest.approx(0.25)  # GE(x) = 0.5 vs the blank image


def test_the_injected_residual_is_small_and_rows_relabelled(trained, digits):
    p, out, before = trained
    assert torch.equal(digits.x, before)
    change = (out.data.x - digits.x).abs()
    assert change.max().item() <= 0.1 + 1e-6 and change[out.mask].mean().item() > 0
    assert torch.equal(change[~out.mask], torch.zeros_like(change[~out.mask]))
    assert psnr(out.data.x[out.mask], digits.x[out.mask]).mean().item() >= 18.0
    assert out.count == round(0.1 * len(digits)) and bool((out.data.y[out.mask] == 0).all())


def test_the_extractor_recovers_the_edges_from_injected_images_not_from_clean_ones(trained, digits):
    p, _, _ = trained
    x = digits.x
    t = ink(x, p.color, p.threshold)
    injected = p.triggered(digits, 0).x
    err_injected = (p.trigger.extract(injected) - t).pow(2).mean().item()
    err_clean = (p.trigger.extract(x) - t).pow(2).mean().item()
    assert err_injected < 0.5 * err_clean and err_injected < 0.5 * t.pow(2).mean().item()


def test_the_same_network_stamps_the_test_set(trained, digits):
    p, out, _ = trained
    test = p.triggered(digits, 0).x
    assert torch.allclose(test[out.mask], out.data.x[out.mask], atol=1e-6)
    with torch.no_grad():
        direct = p.trigger.injector(digits.x, ink(digits.x, p.color, p.threshold))
    assert torch.allclose(test, direct, atol=1e-6)
    assert out.info["trigger"]["params"]["trained"] is True


def test_seeded_refused_before_apply_and_bad_parameters(digits):
    small = digits.subset(torch.arange(200))
    a = POISONS.get("poison_ink", target=0, epochs=1, width=4).apply(small, 1)
    b = POISONS.get("poison_ink", target=0, epochs=1, width=4).apply(small, 1)
    c = POISONS.get("poison_ink", target=0, epochs=1, width=4).apply(small, 2)
    assert torch.equal(a.data.x, b.data.x) and torch.equal(a.mask, b.mask) and not torch.equal(a.data.x, c.data.x)
    with pytest.raises(ConfigError, match="apply"):
        POISONS.get("poison_ink", target=0).triggered(small, 0)
    for params in ({"eps": 2}, {"threshold": 0}, {"color": (2.0, 0.0, 0.0)}, {"lambda_image": -1}, {"width": 0}):
        with pytest.raises(ConfigError):
            POISONS.get("poison_ink", target=0, **params)
    with pytest.raises(ConfigError, match="color"):
        POISONS.get("poison_ink", target=0, color=(0.5, 0.5)).apply(small, 0)
