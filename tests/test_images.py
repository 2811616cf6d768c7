"""Image ingest: real photos, exact pad/resize/colour semantics on tiny images, unreadable files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from poisonlab.data import images
from poisonlab.data.images import ingest, ingest_many, read_image, read_rgba
from poisonlab.errors import ConfigError, DataError
from poisonlab.rng import numpy_rng


def _photos():
    root = shared_path("poison-images")
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_real_photos_ingest_at_grey_and_colour(shape):
    paths = _photos()
    x = ingest_many(paths, shape)
    assert x.shape == (len(paths), *shape) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # every photo has content (not all black) after pad + resize
    assert bool((x.flatten(1).std(dim=1) > 0.01).all())


def test_webp_loads():
    path = shared_path("poison-images", "rutan-boomerang", "rb-14.webp")
    img = read_image(path)
    assert img.format == "WEBP" and img.size == (1400, 788) and img.mode == "RGB"
    x = ingest(path, (3, 32, 32))
    # 1400x788 padded to 1400x1400: the top and bottom rows are black padding, the middle is photo
    assert float(x[:, 0].abs().max()) == 0.0 and float(x[:, -1].abs().max()) == 0.0
    assert float(x[:, 16].std()) > 0.01


def test_trigger_png_reads_with_alpha():
    rgba = read_rgba(shared_path("triggers", "alert-white.png"), size=(16, 16))
    assert rgba.shape == (4, 16, 16)
    alpha = rgba[3]
    assert float(alpha.min()) < 0.05 and float(alpha.max()) > 0.95  # transparent border, opaque icon


def test_pad_to_centred_square_with_black(tmp_path):
    # a 4-wide, 2-high white image: padded to 4x4 it has one black row above and below
    path = tmp_path / "wide.png"
    Image.new("L", (4, 2), 255).save(path)
    x = ingest(path, (1, 4, 4))
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(x[0], expected)
    # tall image: black columns left and right
    Image.new("L", (2, 4), 255).save(path)
    assert torch.equal(ingest(path, (1, 4, 4))[0], expected.T)


def test_colour_and_grey_conversion(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (5, 5), (255, 0, 0)).save(path)
    colour = ingest(path, (3, 5, 5))
    assert torch.equal(colour[0], torch.ones(5, 5)) and float(colour[1:].abs().max()) == 0.0
    grey = ingest(path, (1, 5, 5))
    # ITU-R 601-2 luma as PIL computes it: L = R * 299/1000 -> 76 for pure red
    assert torch.allclose(grey, torch.full((1, 5, 5), 76 / 255))
    # a grey file read as colour repeats the grey value in all three channels
    Image.new("L", (3, 3), 100).save(path)
    assert torch.allclose(ingest(path, (3, 3, 3)), torch.full((3, 3, 3), 100 / 255))


def test_resize_is_antialiased(tmp_path):
    # a 1-pixel checkerboard downscaled 8x8 -> 2x2 averages to mid grey (nearest would give 0 or 1)
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    Image.fromarray(board).save(path)
    x = ingest(path, (1, 2, 2))
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=0.05)


def test_transparency_becomes_black_and_rgba_keeps_alpha(tmp_path):
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[..., :3] = 255
    arr[0, 0, 3] = 255  # only the top-left pixel is opaque white
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    assert torch.equal(ingest(path, (1, 2, 2))[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    rgba = read_rgba(path)
    assert rgba.shape == (4, 2, 2) and torch.equal(rgba[3], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # a file without alpha reads with alpha 1 everywhere
    Image.new("RGB", (3, 2), (10, 20, 30)).save(path)
    rgba = read_rgba(path)
    assert rgba.shape == (4, 2, 3) and torch.equal(rgba[3], torch.ones(2, 3))
    assert torch.allclose(rgba[:3, 0, 0], torch.tensor([10, 20, 30]) / 255)


def test_unreadable_image_is_a_data_error_naming_the_file(tmp_path):
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(DataError, match="not-a-photo.jpg.*not an image"):
        read_image(bad)
    # a PNG cut in half: the header is fine, the pixel data is not
    good = tmp_path / "cut.png"
    Image.fromarray(numpy_rng(0, "noise").integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png.*cannot be decoded"):
        ingest(good)
    with pytest.raises(DataError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (20, 20)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(DataError, match="big.png is 20x20 pixels.*decompression bomb"):
        read_image(path)


def test_bad_shape_is_a_config_error(tmp_path):
    path = tmp_path / "x.png"
    Image.new("L", (2, 2)).save(path)
    with pytest.raises(ConfigError, match="shape=.*c 1 .grey. or 3"):
        ingest(path, (2, 8, 8))
    with pytest.raises(ConfigError, match="not .c, h, w."):
        ingest(path, (8, 8))
    assert ingest_many([], (3, 4, 4)).shape == (0, 3, 4, 4)


def test_list_images_sorted_by_name_with_hidden_and_stem_options(tmp_path):
    from poisonlab.data.images import list_images

    for name in ("b.png", "a.webp", "a.jpeg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c.png").mkdir()  # a folder, not a file
    assert [p.name for p in list_images(tmp_path)] == ["a.jpeg", "a.webp", "b.png"]
    assert [p.name for p in list_images(tmp_path, skip_hidden=False)] == [".hidden.png", "a.jpeg", "a.webp", "b.png"]
    assert [p.name for p in list_images(tmp_path, one_per_stem=True)] == ["a.jpeg", "b.png"]
