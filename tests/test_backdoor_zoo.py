"""The backdoor zoo's triggers against their papers' constructions on small hand-checked cases.

SIG (Barni et al. 2019), WaNet (Nguyen and Tran 2021), BPP (Wang et al. 2022), FTrojan (Wang et al.
2022) / CTRL (Li et al. 2023), ReFool (Liu et al. 2020) and the clean-label trigger backdoor. Every
trigger: the input is never modified, batches are stamped at once, random draws come from the generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import fft, ndimage

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS, TRIGGERS
from poisonlab.poison.bpp import floyd_steinberg
from poisonlab.poison.frequency import blocks_dct, dct_matrix
from poisonlab.poison.reflection import gaussian_blur, reflect
from poisonlab.poison.signal_triggers import sig_signal
from poisonlab.poison.warp import flow_field, identity_grid, warp, warp_grid
from poisonlab.rng import generator

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "poison-images" / "embraer-190"


# ---------------------------------------------------------------- SIG
def test_sig_signal_by_hand():
    # m = 4, f = 1, delta = 0.25: 0.25 sin(2 pi j / 4) = 0, 0.25, 0, -0.25; ramp j delta / m = 0, .0625, .125, .1875
    assert torch.allclose(sig_signal(4, 0.25, 1.0), torch.tensor([0.0, 0.25, 0.0, -0.25]), atol=1e-7)
    assert torch.allclose(sig_signal(4, 0.25, 1.0, "ramp"), torch.tensor([0.0, 0.0625, 0.125, 0.1875]))
    x = torch.full((2, 1, 3, 4), 0.5)
    out = TRIGGERS.get("sig", delta=0.25, frequency=1.0)(x)
    assert torch.allclose(out, torch.tensor([0.5, 0.75, 0.5, 0.25]).expand(2, 1, 3, 4), atol=1e-7)
    assert TRIGGERS.get("sig", delta=0.25, frequency=1.0)(torch.zeros(1, 1, 1, 4)).min() == 0  # clipped at 0


# ---------------------------------------------------------------- WaNet
def test_wanet_flow_is_normalised_and_the_grid_is_the_papers():
    flow = flow_field(2, 2, 2, generator(0, "t"))  # 2x2 control grid upsampled to 2x2 = the control grid itself
    assert flow.abs().mean().item() == pytest.approx(1.0)
    grid = warp_grid(flow, 0.5)
    assert torch.allclose(grid, (identity_grid(2, 2) + 0.5 * flow / 2).clamp(-1, 1))
    assert identity_grid(2, 3)[0, 0].tolist() == [-1.0, -1.0] and identity_grid(2, 3)[1, 2].tolist() == [1.0, 1.0]


def test_warp_by_a_one_pixel_flow_shifts_the_image():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    grid = identity_grid(3, 4).clone()
    grid[..., 0] += 2 / 3  # one column in [-1, 1] coordinates for width 4 (corners aligned)
    out = warp(x, grid)
    assert torch.allclose(out[..., :3], x[..., 1:]) and torch.allclose(out[..., 3], torch.zeros(3), atol=1e-5)  # zeros outside
    assert torch.allclose(warp(x, identity_grid(3, 4)), x)


def test_wanet_poison_warps_rate_and_noise_warps_cross_ratio_times_as_many_with_labels_kept(digits):
    p = POISONS.get("wanet", target=0, rate=0.1, cross_ratio=2)
    x0 = digits.x.clone()
    out = p.apply(digits, seed=1)
    assert torch.equal(digits.x, x0)
    relabelled = out.data.y != digits.y
    assert int(relabelled.sum()) == round(0.1 * len(digits)) and (out.data.y[relabelled] == 0).all()
    noise = out.mask & ~relabelled
    assert int(noise.sum()) == 2 * int(relabelled.sum()) and out.info["noise_mode"] == int(noise.sum())
    trig = p.trigger(digits.x[relabelled])
    assert torch.allclose(out.data.x[relabelled], trig)  # the fixed warp
    assert not torch.allclose(out.data.x[noise], p.trigger(digits.x[noise]))  # noise mode differs from it
    assert torch.equal(POISONS.get("wanet", rate=0.1).apply(digits, seed=1).data.x, out.data.x)


def test_wanet_refuses_other_triggers():
    with pytest.raises(ConfigError, match="wanet needs a warp trigger; got 'patch'"):
        POISONS.get("wanet", trigger="patch")


# ---------------------------------------------------------------- BPP
def _textbook_floyd_steinberg(img: np.ndarray, levels: int) -> np.ndarray:
    """Floyd and Steinberg 1976, one grey image, pixel by pixel (the reference)."""
    a = img.astype(np.float64).copy()
    h, w = a.shape
    for r in range(h):
        for c in range(w):
            old = a[r, c]
            new = min(max(np.round(old * (levels - 1)) / (levels - 1), 0.0), 1.0)
            a[r, c] = new
            e = old - new
            if c + 1 < w:
                a[r, c + 1] += e * 7 / 16
            if r + 1 < h and c > 0:
                a[r + 1, c - 1] += e * 3 / 16
            if r + 1 < h:
                a[r + 1, c] += e * 5 / 16
            if r + 1 < h and c + 1 < w:
                a[r + 1, c + 1] += e * 1 / 16
    return a


def test_bpp_dithering_equals_the_textbook_loop_on_each_image_of_a_batch():
    x = torch.rand(3, 2, 5, 6, generator=generator(0, "bpp"), dtype=torch.float64)
    out = floyd_steinberg(x, 4)
    for i in range(3):
        for c in range(2):
            assert np.allclose(out[i, c].numpy(), _textbook_floyd_steinberg(x[i, c].numpy(), 4))
    assert set(torch.unique(out * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_bpp_keeps_the_mean_grey_of_a_flat_image():
    out = TRIGGERS.get("bpp", levels=2)(torch.full((1, 1, 16, 16), 0.5))
    assert set(out.unique().tolist()) == {0.0, 1.0} and out.mean().item() == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------- FTrojan / CTRL
def test_dct_matrix_is_scipys_orthonormal_dct():
    assert np.allclose(dct_matrix(6).numpy(), fft.dct(np.eye(6), norm="ortho", axis=0))
    x = torch.rand(2, 8, 8, dtype=torch.float64)
    assert np.allclose(blocks_dct(x, 4).numpy()[0, :4, 4:], fft.dctn(x[0, :4, 4:].numpy(), norm="ortho"))
    assert torch.allclose(blocks_dct(blocks_dct(x, 4), 4, inverse=True), x)


def test_ftrojan_adds_magnitude_at_its_frequencies_of_every_block():
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    out = TRIGGERS.get("ftrojan", magnitude=0.1, window=4)(x)
    diff = blocks_dct(out[:, 0], 4) - blocks_dct(x[:, 0], 4)
    bump = torch.zeros(4, 4, dtype=torch.float64)
    bump[1, 1] = bump[3, 3] = 0.1  # (w/2 - 1, w/2 - 1) and (w - 1, w - 1)
    assert torch.allclose(diff, bump.repeat(2, 2).expand(2, 8, 8), atol=1e-12)


@pytest.mark.parametrize("name,mix", [("ftrojan", "yuv"), ("ctrl", "ycbcr")])
def test_colour_frequency_triggers_touch_only_the_chroma(name, mix):
    from poisonlab.poison.frequency import SPACES

    x = 0.25 + 0.5 * torch.rand(2, 3, 32, 32, generator=generator(0, "f"), dtype=torch.float64)
    out = TRIGGERS.get(name)(x)
    to = lambda img: torch.einsum("oc,nchw->nohw", SPACES[mix], img)  # noqa: E731
    d = blocks_dct(to(out), 32) - blocks_dct(to(x), 32)
    assert torch.allclose(d[:, 0], torch.zeros_like(d[:, 0]), atol=1e-9)  # luma untouched
    magnitude = TRIGGERS.get(name).magnitude
    assert d[0, 1, 15, 15].item() == pytest.approx(magnitude) and d[0, 2, 31, 31].item() == pytest.approx(magnitude)


def test_frequency_window_must_tile_the_image():
    with pytest.raises(ConfigError, match="window=5 does not tile 28x28 images"):
        TRIGGERS.get("ftrojan", window=5)(torch.rand(1, 1, 28, 28))


# ---------------------------------------------------------------- ReFool
def test_blur_reflection_is_scipys_gaussian_filter():
    r = torch.rand(1, 1, 20, 20, generator=generator(0, "r"), dtype=torch.float64)
    ref = ndimage.gaussian_filter(r[0, 0].numpy(), sigma=1.5, mode="mirror", truncate=3.0)
    assert np.allclose(gaussian_blur(r, 1.5)[0, 0].numpy(), ref)


def test_reflection_kernels_by_hand():
    x = torch.full((1, 1, 6, 6), 0.2)
    r = torch.zeros(1, 1, 6, 6)
    r[..., 1, 1] = 1.0
    focus = reflect(x, r, "focus", 0.5, 1.0, 0.6, (2, 2))
    assert focus[0, 0, 1, 1].item() == pytest.approx(0.7) and focus[0, 0, 0, 0].item() == pytest.approx(0.2)
    ghost = reflect(x, r, "ghost", 0.5, 1.0, 0.6, (2, 2))  # 0.6 at (1, 1), 0.4 at (3, 3)
    assert ghost[0, 0, 1, 1].item() == pytest.approx(0.2 + 0.3) and ghost[0, 0, 3, 3].item() == pytest.approx(0.2 + 0.2)


@pytest.mark.skipif(not PHOTOS.exists(), reason=f"{PHOTOS} not present")
def test_reflection_trigger_draws_a_photo_per_image_from_the_generator():
    t = TRIGGERS.get("reflection", reflections=str(PHOTOS), kernel="ghost")
    x = torch.rand(6, 1, 28, 28, generator=generator(0, "x"))
    x0 = x.clone()
    a, b = t(x, generator(5, "r")), t(x, generator(5, "r"))
    assert torch.equal(a, b) and torch.equal(x, x0) and not torch.equal(a, x)
    with pytest.raises(ConfigError, match="kernel='mirror' is not known; accepted: focus, blur, ghost"):
        TRIGGERS.get("reflection", reflections=str(PHOTOS), kernel="mirror")


# ---------------------------------------------------------------- clean-label backdoor
def test_clean_label_backdoor_stamps_target_class_images_and_keeps_every_label(digits):
    p = POISONS.get("clean_label_backdoor", trigger="sig", target=3, rate=0.5)
    x0 = digits.x.clone()
    out = p.apply(digits, seed=0)
    assert torch.equal(out.data.y, digits.y) and torch.equal(digits.x, x0)
    assert (digits.y[out.mask] == 3).all() and int(out.mask.sum()) == round(0.5 * int((digits.y == 3).sum()))
    assert torch.allclose(out.data.x[out.mask], p.trigger(digits.x[out.mask]))
    assert torch.equal(out.data.x[~out.mask], digits.x[~out.mask])
    assert torch.equal(p.triggered(digits).y, digits.y)


@pytest.mark.parametrize("name,params", [("sig", {"delta": 0}), ("warp", {"k": 1}), ("bpp", {"levels": 1}),
                                         ("ftrojan", {"magnitude": 2}), ("ctrl", {"channels": [3]})])
def test_out_of_range_parameters_are_one_line_errors(name, params):
    with pytest.raises(ConfigError, match="accepted"):
        TRIGGERS.get(name, **params)


@pytest.mark.parametrize("name", ["sig", "warp", "bpp", "ftrojan", "ctrl"])
def test_every_zoo_trigger_leaves_its_input_alone_and_stamps_single_images(name):
    t = TRIGGERS.get(name)
    x = torch.rand(3, 1, 28, 28, generator=generator(1, name))
    x0 = x.clone()
    out = t(x, generator(0, "s"))
    assert torch.equal(x, x0) and out.shape == x.shape and not torch.equal(out, x)
    assert torch.allclose(t(x[1], generator(0, "s")), out[1], atol=1e-6)


# ---------------------------------------------------------------- label-consistent
def test_pgd_away_moves_each_pixel_by_at_most_eps_and_raises_the_true_label_loss():
    from poisonlab.poison.label_consistent import pgd_away

    g = generator(0, "lc-model")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.rand(5, 1, 4, 4, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1])
    out = pgd_away(model, x, y, eps=0.05, steps=3, step_size=0.02)
    assert (out - x).abs().max() <= 0.05 + 1e-7 and out.min() >= 0 and out.max() <= 1
    ce = torch.nn.functional.cross_entropy
    assert ce(model(out), y, reduction="none").gt(ce(model(x), y, reduction="none")).all()
    # one step on a linear model, by hand: x + step * sign(grad), grad of CE wrt x = W^T (softmax - onehot)
    one = pgd_away(model, x[:1], y[:1], eps=1.0, steps=1, step_size=0.01)
    w = model[1].weight
    grad = w.T @ (torch.softmax(model(x[:1]), 1)[0] - torch.nn.functional.one_hot(y[:1], 3)[0].float())
    assert torch.allclose(one.flatten(), (x[:1].flatten() + 0.01 * grad.sign()).clamp(0, 1), atol=1e-6)


def test_label_consistent_perturbs_target_images_within_eps_stamps_them_and_keeps_labels(digits):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    p = POISONS.get("label_consistent", target=2, rate=0.25, eps=0.05, steps=2).bind(model)
    out = p.apply(digits, seed=0)
    assert torch.equal(out.data.y, digits.y) and (digits.y[out.mask] == 2).all()
    assert int(out.mask.sum()) == round(0.25 * int((digits.y == 2).sum()))
    changed = out.data.x[out.mask]
    patch = p.trigger(changed)  # the trigger is on top: stamping again changes nothing
    assert torch.equal(changed, patch)
    outside = torch.ones_like(digits.x[0], dtype=torch.bool)
    outside[..., -3:, -3:] = False  # away from the bottom-right 3x3 patch only the PGD change remains
    delta = (changed - digits.x[out.mask])[:, outside]
    assert delta.abs().max() <= 0.05 + 1e-6 and delta.abs().max() > 0
    with pytest.raises(ConfigError, match="needs a surrogate model"):
        POISONS.get("label_consistent").apply(digits)


def test_clean_label_backdoor_can_amplify_the_trigger_at_test_time(digits):
    weak = {"name": "sig", "params": {"delta": 0.05}}
    strong = {"name": "sig", "params": {"delta": 0.3}}
    p = POISONS.get("clean_label_backdoor", trigger=weak, target=1, rate=0.5, test_trigger=strong)
    train_change = (p.apply(digits).data.x - digits.x).abs().max()
    test_change = (p.triggered(digits).x - digits.x).abs().max()
    assert train_change <= 0.05 + 1e-6 < test_change <= 0.3 + 1e-6


# ---------------------------------------------------------------- low frequency
def test_low_pass_keeps_low_dct_coefficients_and_removes_high_ones():
    from poisonlab.poison.frequency import blocks_dct
    from poisonlab.poison.low_frequency import low_pass

    coeffs = torch.zeros(1, 8, 8, dtype=torch.float64)
    coeffs[0, 1, 2] = 1.0  # u + v = 3: kept by cutoff 4
    coeffs[0, 5, 6] = 1.0  # u + v = 11: removed
    delta = blocks_dct(coeffs, 8, inverse=True)
    kept = blocks_dct(low_pass(delta, 4), 8)
    expect = torch.zeros_like(coeffs)
    expect[0, 1, 2] = 1.0
    assert torch.allclose(kept, expect, atol=1e-12)


def test_low_frequency_trigger_is_smooth_within_eps_and_pushes_toward_the_target(digits):
    from poisonlab.poison.frequency import blocks_dct

    g = generator(0, "lf-model")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    p = POISONS.get("low_frequency", target=4, rate=0.1, eps=0.2, steps=30, cutoff=3).bind(model)
    with pytest.raises(ConfigError, match="call apply\\(\\) before triggered\\(\\)"):
        p.triggered(digits)
    out = p.apply(digits, seed=0)
    pattern = p.pattern
    assert pattern.abs().max() <= 0.2 + 1e-6
    high = blocks_dct(pattern.double(), 8)[0][torch.arange(8)[:, None] + torch.arange(8)[None, :] >= 3]
    assert high.abs().max() < 0.2 * pattern.abs().max() + 1e-6  # the last projection clips a little energy up
    assert (out.data.y[out.mask] == 4).all() and int(out.mask.sum()) == round(0.1 * len(digits))
    others = digits.x[digits.y != 4]
    before = torch.softmax(model(others), 1)[:, 4].mean()
    after = torch.softmax(model((others + pattern).clamp(0, 1)), 1)[:, 4].mean()
    assert after > before
    assert torch.allclose(p.triggered(digits).x, (digits.x + pattern).clamp(0, 1))


# ---------------------------------------------------------------- TrojanNN
def test_trojannn_selects_the_most_connected_unit_and_drives_it_to_the_activation(digits):
    from poisonlab.poison.trojannn import strongest_neurons

    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -2.0, 0.3, 0.0], [0.1, 1.0, -0.4, 0.2], [0.1, 0.5, 0.2, 0.1]]))
    assert strongest_neurons(layer, 2).tolist() == [1, 2]  # column |W| sums: 0.3, 3.5, 0.9, 0.3
    g = generator(0, "trojannn-model")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    p = POISONS.get("trojannn", target=3, rate=0.1, size=3, activation=2.0, steps=300, lr=0.05).bind(model, digits)
    pattern, box = p.pattern
    with torch.no_grad():
        alive = model[:3](torch.where(box, 0.5, 0.0).unsqueeze(0))[0] != 0
        unit = strongest_neurons(model[3], 1, alive)
        start_act = float(model[:3](torch.where(box, 0.5, 0.0).unsqueeze(0))[0, unit])
        act = float(model[:3](pattern.unsqueeze(0))[0, unit])
    assert abs(act - 2.0) < abs(start_act - 2.0) / 2  # driven toward the target activation
    assert int(box.sum()) == 9 and torch.equal(pattern[~box], torch.zeros(int((~box).sum())))
    out = p.apply(digits, seed=0)
    assert (out.data.y[out.mask] == 3).all() and torch.equal(out.data.x[out.mask][:, box], pattern[box].expand(int(out.mask.sum()), -1))
    assert torch.equal(out.data.x[out.mask][:, ~box], digits.x[out.mask][:, ~box])
    with pytest.raises(ConfigError, match="call bind"):
        POISONS.get("trojannn").apply(digits)


# ---------------------------------------------------------------- gradient matching (Sleeper Agent, Witches' Brew)
def _small_model(seed: str) -> torch.nn.Module:
    g = generator(0, seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def test_cosine_of_gradient_lists_by_hand():
    from poisonlab.poison.gradient_matching import cosine_of

    a = [torch.tensor([1.0, 0.0]), torch.tensor([[0.0]])]
    b = [torch.tensor([1.0, 1.0]), torch.tensor([[0.0]])]
    assert cosine_of(a, b).item() == pytest.approx(1 / 2 ** 0.5)


def test_gradient_matching_aligns_the_poison_gradient_with_the_adversarial_one(digits):
    from poisonlab.poison.gradient_matching import _grads, cosine_of, match_gradients

    model = _small_model("gm")
    ce = torch.nn.functional.cross_entropy
    base, labels = digits.x[digits.y == 2][:20], digits.y[digits.y == 2][:20]
    adv_x = TRIGGERS.get("patch", size=2)(digits.x[digits.y == 5][:20])
    adv_y = torch.full((20,), 2)
    target_grad = _grads(model, ce(model(adv_x), adv_y), create_graph=False)
    before = cosine_of(target_grad, _grads(model, ce(model(base), labels), create_graph=False))
    poisons = match_gradients(model, base, labels, adv_x, adv_y, eps=0.1, steps=30, lr=0.01)
    after = cosine_of(target_grad, _grads(model, ce(model(poisons), labels), create_graph=False))
    assert after > before + 0.1
    assert (poisons - base).abs().max() <= 0.1 + 1e-6 and poisons.min() >= 0 and poisons.max() <= 1


def test_sleeper_agent_and_witches_brew_keep_labels_and_stay_within_eps(digits):
    model = _small_model("sa")
    sa = POISONS.get("sleeper_agent", source=5, target=2, count=10, eps=0.05, steps=3).bind(model)
    out = sa.apply(digits, seed=0)
    assert torch.equal(out.data.y, digits.y) and (digits.y[out.mask] == 2).all() and int(out.mask.sum()) == 10
    assert (out.data.x - digits.x).abs().max() <= 0.05 + 1e-6
    assert (sa.triggered(digits).y == 5).all()
    victim = int(torch.nonzero(digits.y == 7)[0])
    wb = POISONS.get("witches_brew", victim=victim, target=1, count=5, eps=0.05, steps=3).bind(model, digits)
    out = wb.apply(digits, seed=0)
    assert torch.equal(out.data.y, digits.y) and (digits.y[out.mask] == 1).all()
    assert wb.triggered(digits).y.tolist() == [7]
    with pytest.raises(ConfigError, match="already of class 7"):
        POISONS.get("witches_brew", victim=victim, target=7).bind(model, digits)
