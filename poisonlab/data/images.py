"""Image ingest: read any file PIL reads, pad to a centred square, resize, and return tensors.

Photos scraped by a user come in any size, mode and format. ``ingest`` turns one into a
float32 (c, h, w) tensor in [0, 1]: transparency is composited onto black, the image is
padded with black to a centred square (so the aspect ratio is kept), then resized with
Lanczos (antialiased) filtering, and converted to grey (c=1) or colour (c=3).
``read_rgba`` keeps the alpha channel, for inserted-image backdoor triggers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from poisonlab.errors import ConfigError, DataError

#: Largest image (in pixels) poisonlab decodes; a larger header is treated as a decompression bomb.
MAX_PIXELS = 64_000_000

PathLike = str | os.PathLike


def image_extensions() -> set[str]:
    """File suffixes (lower case, with dot) of every format PIL can open here."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(folder: PathLike, *, skip_hidden: bool = True, one_per_stem: bool = False) -> list[Path]:
    """Image files directly in folder (suffixes PIL can open), sorted by name.

    skip_hidden leaves out names starting with '.'; one_per_stem keeps only the first file of each
    stem in that order (photo.jpeg and photo.webp are one photo). The folder must exist.
    """
    exts = image_extensions()
    seen, files = set(), []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.suffix.lower() not in exts or (skip_hidden and p.name.startswith(".")):
            continue
        if one_per_stem and p.stem in seen:
            continue
        seen.add(p.stem)
        files.append(p)
    return files


def read_image(path: PathLike) -> Image.Image:
    """Open and fully decode an image file; DataError naming the file if it is not a readable image.

    EXIF orientation is applied (photos from phones are stored rotated); images whose
    header announces more than MAX_PIXELS pixels are refused before decoding.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise DataError(f"image {path} is {w}x{h} pixels, over the {MAX_PIXELS} pixel limit"
                                    " (possible decompression bomb)")
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"image {path} refused as a possible decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image PIL can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"image {path} cannot be decoded: {err}") from None
    return img


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        c, h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape={shape!r} is not (c, h, w); accepted: e.g. (1, 28, 28) or (3, 32, 32)") from None
    if c not in (1, 3) or h < 1 or w < 1:
        raise ConfigError(f"shape={shape!r} is not valid; accepted: (c, h, w) with c 1 (grey) or 3 (colour), h, w >= 1")
    return c, h, w


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """RGB image with any transparency composited onto black."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def pad_square(img: Image.Image, fill: int | tuple[int, ...] = 0) -> Image.Image:
    """The image centred on a square canvas of side max(w, h), padded with fill (black)."""
    w, h = img.size
    side = max(w, h)
    if w == h:
        return img
    canvas = Image.new(img.mode, (side, side), fill)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 HxW or HxWxC PIL image -> float32 (c, h, w) in [0, 1]."""
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)


def ingest(img_or_path: Image.Image | PathLike, shape: Sequence[int] = (1, 28, 28)) -> torch.Tensor:
    """One image -> float32 (c, h, w) in [0, 1]: alpha onto black, pad to centred square, Lanczos resize."""
    c, h, w = _check_shape(shape)
    img = img_or_path if isinstance(img_or_path, Image.Image) else read_image(img_or_path)
    rgb = pad_square(_flatten_alpha(img), (0, 0, 0))
    out = rgb.convert("L") if c == 1 else rgb
    out = out.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=None)
    return _to_tensor(out)


def ingest_many(paths: Sequence[Image.Image | PathLike], shape: Sequence[int] = (1, 28, 28)) -> torch.Tensor:
    """Several images -> float32 (n, c, h, w) in [0, 1], each as ``ingest`` does."""
    c, h, w = _check_shape(shape)
    if len(paths) == 0:
        return torch.empty(0, c, h, w)
    return torch.stack([ingest(p, (c, h, w)) for p in paths])


def read_rgba(path: Image.Image | PathLike, size: Sequence[int] | None = None) -> torch.Tensor:
    """An image as float32 (4, h, w) in [0, 1]: colour plus alpha (1 where the file has none).

    size=(h, w) resizes with Lanczos on premultiplied alpha (PIL's RGBA resize), without
    padding: a trigger is stretched to exactly the size asked for. None keeps the file's size.
    """
    img = path if isinstance(path, Image.Image) else read_image(path)
    rgba = img.convert("RGBA")
    if size is not None:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ConfigError(f"size={size!r} is not (h, w); accepted: two positive integers") from None
        if h < 1 or w < 1:
            raise ConfigError(f"size={size!r} is not valid; accepted: (h, w) with h, w >= 1")
        rgba = rgba.resize((w, h), Image.Resampling.LANCZOS)
    return _to_tensor(rgba)
