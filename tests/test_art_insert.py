"""ImageTrigger(semantics="art") equals IBM ART 1.20's insert_image pixel for pixel; each step equals Pillow's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poisonlab.errors import ConfigError
from poisonlab.poison import art_insert as A
from poisonlab.poison.triggers import ImageTrigger, make_trigger
from poisonlab.rng import generator

TRIGGER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "triggers" / "alert-white.png"
pytestmark = pytest.mark.skipif(not TRIGGER.exists(), reason=f"{TRIGGER} not present")


def _ints(a: np.ndarray) -> torch.Tensor:
    """HxWx4 uint8 -> int32 (1, 4, h, w)."""
    return torch.from_numpy(a.transpose(2, 0, 1).astype(np.int32))[None]


def _rgba(rng, n: int, opaque: bool = False) -> np.ndarray:
    a = rng.integers(0, 256, (n, n, 4), dtype=np.uint8)
    if opaque:
        a[..., 3] = 255
    return a


def test_paste_through_own_alpha_matches_pillow_for_every_value_and_alpha():
    v, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    trig = np.stack([v, 255 - v, v // 2, a], -1).astype(np.uint8)
    img = Image.fromarray(trig, "RGBA")
    canvas = Image.new("RGBA", (256, 256), 0)
    canvas.paste(img, (0, 0), mask=img)
    assert np.array_equal(A.paste_with_own_mask(_ints(trig)[0]).numpy(), np.asarray(canvas).transpose(2, 0, 1))


def test_alpha_composite_matches_pillow_on_random_and_opaque_destinations():
    rng = np.random.default_rng(0)
    for opaque in (True, False):
        dst, src = _rgba(rng, 512, opaque), _rgba(rng, 512)
        src[:8, :, 3] = 0  # fully transparent source keeps the destination
        ref = np.asarray(Image.alpha_composite(Image.fromarray(dst, "RGBA"), Image.fromarray(src, "RGBA")))
        assert np.array_equal(A.alpha_composite(_ints(dst), _ints(src))[0].numpy().transpose(1, 2, 0), ref)


@pytest.mark.parametrize("factor", [0.0, 0.123, 0.35, 0.8, 0.9999, 1.0])
def test_blend_matches_pillow_for_every_pair_of_bytes(factor):
    i1, i2 = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    x1 = np.stack([i1, i2, i1, np.full_like(i1, 255)], -1).astype(np.uint8)
    x2 = np.stack([i2, i1, 255 - i2, np.full_like(i1, 255)], -1).astype(np.uint8)
    ref = np.asarray(Image.blend(Image.fromarray(x1, "RGBA"), Image.fromarray(x2, "RGBA"), factor))
    assert np.array_equal(A.blend(_ints(x1), _ints(x2), factor)[0].numpy().transpose(1, 2, 0), ref)


def test_grey_conversion_matches_pillow_luma():
    rgba = _rgba(np.random.default_rng(1), 512, opaque=True)
    ref = np.asarray(Image.fromarray(rgba, "RGBA").convert("L"))
    assert np.array_equal(A.to_mode(_ints(rgba), 1)[0, 0].numpy(), ref)


def test_quantise_truncates_like_numpy_astype():
    x = torch.tensor([0.0, 0.00392, 0.5, 0.99999, 1.0])
    assert A.quantise(x).tolist() == (x.numpy() * 255).astype(np.uint8).tolist()


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
@pytest.mark.parametrize("size,blend,pos", [((10, 10), 0.8, (3, 4)), ((12, 7), 0.35, (0, 21)), ((28, 28), 1.0, (0, 0))])
def test_art_semantics_equal_art_insert_image_pixel_for_pixel(channels, mode, size, blend, pos):
    perturbations = pytest.importorskip("art.attacks.poisoning.perturbations.image_perturbations")
    x = np.random.default_rng(2).random((5, channels, 28, 28)).astype(np.float32)
    ref = perturbations.insert_image(x.transpose(0, 2, 3, 1), str(TRIGGER), random=False, x_shift=pos[1],
                                     y_shift=pos[0], size=size, mode=mode, blend=blend).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(x.copy())
    out = ImageTrigger(str(TRIGGER), size=size, position=pos, blend=blend, semantics="art")(xt)
    assert np.array_equal(out.numpy(), ref)
    assert np.array_equal(xt.numpy(), x), "the input was modified"
    ours = ImageTrigger(str(TRIGGER), size=size, position=pos, blend=blend)(xt)
    assert (ours - out).abs().max() > 0.1, "the two semantics should differ on a soft-edged trigger"


def test_art_semantics_on_real_mnist_digits_equal_art(mnist_dir):
    from poisonlab.data import load

    perturbations = pytest.importorskip("art.attacks.poisoning.perturbations.image_perturbations")
    digits = load("mnist", data_dir=str(mnist_dir), part="test").x[:64]
    x = digits.numpy()
    ref = perturbations.insert_image(x.transpose(0, 2, 3, 1), str(TRIGGER), random=False, x_shift=15, y_shift=16,
                                     size=(9, 9), mode="L", blend=0.8).transpose(0, 3, 1, 2)
    out = ImageTrigger(str(TRIGGER), size=(9, 9), position=(16, 15), semantics="art")(digits)
    assert np.array_equal(out.numpy(), ref)


def test_art_semantics_random_positions_are_seeded_and_single_images_work():
    x = torch.rand(8, 1, 20, 20, generator=generator(0, "test"))
    t = make_trigger({"name": "image", "params": {"path": str(TRIGGER), "size": [6, 6], "semantics": "art"}})
    a, b = t(x, generator(3, "pos")), t(x, generator(3, "pos"))
    assert torch.equal(a, b) and not torch.equal(a, t(x, generator(4, "pos")))
    assert t(x[0], generator(3, "pos")).shape == (1, 20, 20)
    assert torch.equal((a * 255).round() / 255, a), "ART's output is on the 1/255 grid"


def test_unknown_semantics_and_bad_channels_are_one_line_errors():
    with pytest.raises(ConfigError, match="semantics='pil' is not known; accepted: poisonlab, art"):
        ImageTrigger(str(TRIGGER), semantics="pil")
    with pytest.raises(ConfigError, match="2 channels"):
        ImageTrigger(str(TRIGGER), position=(0, 0), semantics="art")(torch.rand(1, 2, 12, 12))
