"""Backdoor triggers: pure functional kernels on NCHW tensors plus frozen dataclasses holding parameters.

Every kernel takes x of shape (n, c, h, w) or (c, h, w), returns a NEW tensor of the same shape,
never modifies its input, and REPLACES pixels (no add-and-saturate). The dataclasses are thin
wrappers: ``PatchTrigger(size=5, color=(0, 1, 1), position="top-left")(x, generator)``.
Random positions are drawn from the generator passed in, never from global state.

Semantics follow IBM ART's image perturbations (read for reference, not copied):
  - ``stamp_pixel``   = ``add_single_bd``: x[..., H-d, W-d] = value on all channels;
  - ``stamp_pattern`` = ``add_pattern_bd``: value at (H-d, W-d), (H-d-1, W-d-1), (H-d, W-d-2), (H-d-2, W-d);
  - ``stamp_image``   = ``insert_image``: the trigger (resized) is alpha-composited through its own alpha
    channel a at (row, col), then blended with the original by factor b:
    out = (1-b) x + b (a t + (1-a) x) = x + b a (t - x). For binary alpha this is ART's result up to
    ART's 8-bit rounding; ART additionally squares a fractional alpha (a PIL paste-with-mask quirk) and
    quantises the whole image to uint8. ``ImageTrigger(semantics="art")`` reproduces ART 1.20's
    ``insert_image`` pixel for pixel instead (poison/art_insert.py).
Patch triggers are BadNets (Gu et al. 2017); blended triggers are Chen et al. 2017 ("blended injection").
The tabular ``features`` trigger (``stamp_features``) sets a few features of (n, f) rows to a fixed value,
the tabular analogue of a BadNets patch.
"""

from __future__ import annotations

import abc

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from poisonlab.errors import ConfigError
from poisonlab.poison.registry import TRIGGERS

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right", "center", "random")

#: ITU-R BT.601 luma weights, as PIL's convert("L") uses, for colour triggers on grey images.
LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- helpers
def _batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x as (n, c, h, w), whether it was a single (c, h, w) image)."""
    x = torch.as_tensor(x)
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ConfigError(f"trigger input has shape {tuple(x.shape)}; accepted: (c, h, w) or (n, c, h, w)")
    return x, False


def _unbatch(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def channel_values(color: float | Sequence[float], channels: int) -> torch.Tensor:
    """A colour as one value per channel: a scalar or 1 value broadcasts; 3 values on grey use BT.601 luma."""
    vals = torch.as_tensor([float(color)] if isinstance(color, (int, float)) else [float(v) for v in color])
    if len(vals) == 1:
        return vals.expand(channels).clone()
    if len(vals) == channels:
        return vals
    if len(vals) == 3 and channels == 1:
        return (vals * torch.tensor(LUMA)).sum().reshape(1)
    raise ConfigError(f"color={list(vals.tolist())} has {len(vals)} values for {channels}-channel images;"
                      f" accepted: 1 value, {channels} values, or 3 (RGB) on grey images")


def _check_distance(distance: int, h: int, w: int, reach: int) -> None:
    if distance < 1 or distance + reach > min(h, w):
        raise ConfigError(f"distance={distance} does not fit a {h}x{w} image; accepted: 1..{min(h, w) - reach}")


def resolve_position(position: str | Sequence[int], n: int, h: int, w: int, ph: int, pw: int,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left (rows, cols) int64 (n,) of a ph x pw object in an h x w image.

    position: a corner name (top-left, top-right, bottom-left, bottom-right, center), "random"
    (uniform over every placement that fits, one draw per image from generator), or (row, col).
    """
    if ph > h or pw > w:
        raise ConfigError(f"trigger of size {ph}x{pw} does not fit inside {h}x{w} images")
    if isinstance(position, str):
        if position not in CORNERS:
            raise ConfigError(f"position '{position}' is not known; accepted: {', '.join(CORNERS)} or (row, col)")
        if position == "random":
            if generator is None:
                raise ConfigError("position 'random' needs a torch.Generator (pass generator=...)")
            rows = torch.randint(0, h - ph + 1, (n,), generator=generator)
            cols = torch.randint(0, w - pw + 1, (n,), generator=generator)
            return rows, cols
        r = {"top": 0, "bottom": h - ph, "center": (h - ph) // 2}[position.split("-")[0]]
        c = {"left": 0, "right": w - pw, "center": (w - pw) // 2}[position.split("-")[-1]]
    else:
        try:
            r, c = (int(v) for v in position)
        except (TypeError, ValueError):
            raise ConfigError(f"position={position!r} is not valid; accepted: {', '.join(CORNERS)} or (row, col)") from None
        if not (0 <= r <= h - ph and 0 <= c <= w - pw):
            raise ConfigError(f"position=({r}, {c}) puts a {ph}x{pw} trigger outside {h}x{w} images;"
                              f" accepted rows 0..{h - ph}, cols 0..{w - pw}")
    return torch.full((n,), r, dtype=torch.long), torch.full((n,), c, dtype=torch.long)


def _box_mask(rows: torch.Tensor, cols: torch.Tensor, h: int, w: int, ph: int, pw: int) -> torch.Tensor:
    """bool (n, 1, h, w): True inside each image's ph x pw box starting at (rows[i], cols[i])."""
    r = torch.arange(h)
    c = torch.arange(w)
    in_r = (r >= rows[:, None]) & (r < rows[:, None] + ph)
    in_c = (c >= cols[:, None]) & (c < cols[:, None] + pw)
    return (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)


# ---------------------------------------------------------------- kernels
def stamp_pixel(x: torch.Tensor, distance: int = 2, value: float = 1.0) -> torch.Tensor:
    """ART add_single_bd: the pixel at (H - distance, W - distance) set to value on all channels."""
    xb, single = _batch(x)
    h, w = xb.shape[-2:]
    _check_distance(distance, h, w, 0)
    out = xb.clone()
    out[:, :, h - distance, w - distance] = value
    return _unbatch(out, single)


def stamp_pattern(x: torch.Tensor, distance: int = 2, value: float = 1.0) -> torch.Tensor:
    """ART add_pattern_bd: value at (H-d, W-d), (H-d-1, W-d-1), (H-d, W-d-2), (H-d-2, W-d), all channels."""
    xb, single = _batch(x)
    h, w = xb.shape[-2:]
    _check_distance(distance, h, w, 2)
    out = xb.clone()
    d = distance
    for r, c in ((h - d, w - d), (h - d - 1, w - d - 1), (h - d, w - d - 2), (h - d - 2, w - d)):
        out[:, :, r, c] = value
    return _unbatch(out, single)


def stamp_patch(x: torch.Tensor, size: int | Sequence[int] = 3, color: float | Sequence[float] = 1.0,
                position: str | Sequence[int] = "bottom-right", generator: torch.Generator | None = None) -> torch.Tensor:
    """BadNets solid patch: a size (or (h, w)) box of colour replacing the pixels at position."""
    xb, single = _batch(x)
    n, ch, h, w = xb.shape
    ph, pw = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    if ph < 1 or pw < 1:
        raise ConfigError(f"size={size!r} is not valid; accepted: a positive int or (h, w)")
    rows, cols = resolve_position(position, n, h, w, ph, pw, generator)
    mask = _box_mask(rows, cols, h, w, ph, pw)
    colour = channel_values(color, ch).to(xb.dtype).reshape(1, ch, 1, 1)
    return _unbatch(torch.where(mask, colour, xb), single)


def trigger_for_channels(rgba: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour (channels, h, w), alpha (1, h, w)) of a (4, h, w) RGBA trigger; grey via BT.601 luma."""
    rgb, alpha = rgba[:3], rgba[3:4]
    if channels == 3:
        return rgb, alpha
    if channels == 1:
        return (rgb * torch.tensor(LUMA).reshape(3, 1, 1)).sum(0, keepdim=True), alpha
    raise ConfigError(f"image triggers need 1- or 3-channel images; got {channels} channels")


def stamp_image(x: torch.Tensor, rgba: torch.Tensor, position: str | Sequence[int] = "random", blend: float = 0.8,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """ART insert_image: out = x + blend * a * (t - x) inside the trigger's box at position, x elsewhere.

    rgba is the already-resized (4, th, tw) trigger in [0, 1] (colour + alpha a).
    """
    xb, single = _batch(x)
    n, ch, h, w = xb.shape
    if not 0.0 <= blend <= 1.0:
        raise ConfigError(f"blend={blend} is out of range; accepted: [0, 1]")
    colour, alpha = trigger_for_channels(rgba.to(xb.dtype), ch)
    th, tw = colour.shape[-2:]
    rows, cols = resolve_position(position, n, h, w, th, tw, generator)
    # canvas of trigger colour and alpha per image (alpha 0 outside the box)
    canvas = torch.zeros(n, ch + 1, h, w, dtype=xb.dtype)
    ri = (rows[:, None] + torch.arange(th))[:, :, None]  # (n, th, 1)
    ci = (cols[:, None] + torch.arange(tw))[:, None, :]  # (n, 1, tw)
    ni = torch.arange(n)[:, None, None]
    canvas[ni, :, ri, ci] = torch.cat([colour, alpha]).permute(1, 2, 0)
    t, a = canvas[:, :ch], canvas[:, ch:]
    return _unbatch(xb + blend * a * (t - xb), single)


def stamp_blend(x: torch.Tensor, pattern: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """Chen et al. 2017 blended injection: out = (1 - alpha) x + alpha * pattern over the whole image."""
    xb, single = _batch(x)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha={alpha} is out of range; accepted: [0, 1]")
    pattern = torch.as_tensor(pattern, dtype=xb.dtype)
    if pattern.shape[-2:] != xb.shape[-2:] or pattern.shape[-3] not in (1, xb.shape[1]):
        raise ConfigError(f"blend pattern has shape {tuple(pattern.shape)}; images are {tuple(xb.shape[1:])}")
    return _unbatch((1 - alpha) * xb + alpha * pattern, single)


# ---------------------------------------------------------------- dataclasses
class Trigger(abc.ABC):
    """Base of the trigger dataclasses: ``trigger(x, generator=None) -> stamped copy``."""

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The stamped copy of x (each subclass applies its kernel)."""

    def to_dict(self) -> dict:
        """{name, params}: the spec TRIGGERS.get(name, **params) rebuilds this trigger from."""
        from dataclasses import asdict

        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        return {"name": self.name, "params": params}  # type: ignore[attr-defined]


def _pos(position: Any) -> str | tuple[int, int]:
    return position if isinstance(position, str) else tuple(int(v) for v in position)


@TRIGGERS.register("pixel", reference="Gu et al. 2017 (BadNets); ART add_single_bd")
@dataclass(frozen=True)
class PixelTrigger(Trigger):
    """One pixel at (H - distance, W - distance), all channels, set to value."""

    distance: int = 2
    value: float = 1.0
    name = "pixel"

    def __call__(self, x, generator=None):
        return stamp_pixel(x, self.distance, self.value)


@TRIGGERS.register("pattern", reference="Gu et al. 2017 (BadNets); ART add_pattern_bd")
@dataclass(frozen=True)
class PatternTrigger(Trigger):
    """The 4-pixel checkerboard near the bottom-right corner (ART add_pattern_bd)."""

    distance: int = 2
    value: float = 1.0
    name = "pattern"

    def __call__(self, x, generator=None):
        return stamp_pattern(x, self.distance, self.value)


@TRIGGERS.register("patch", reference="Gu et al. 2017, BadNets: a solid square trigger")
@dataclass(frozen=True)
class PatchTrigger(Trigger):
    """A solid size x size square of colour at a corner, a (row, col), or a random position."""

    size: int | tuple[int, int] = 3
    color: float | tuple[float, ...] = 1.0
    position: str | tuple[int, int] = "bottom-right"
    name = "patch"

    def __post_init__(self):
        if not isinstance(self.color, (int, float)):
            object.__setattr__(self, "color", tuple(float(v) for v in self.color))
        if not isinstance(self.size, (int, float)):
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "position", _pos(self.position))

    def __call__(self, x, generator=None):
        return stamp_patch(x, self.size, self.color, self.position, generator)


@functools.lru_cache(maxsize=16)
def _load_rgba(path: str, size: tuple[int, int] | None) -> torch.Tensor:
    from poisonlab.data.images import read_rgba

    return read_rgba(path, size)


IMAGE_SEMANTICS = ("poisonlab", "art")


@TRIGGERS.register("image", reference="Gu et al. 2017; Chen et al. 2017; ART insert_image")
@dataclass(frozen=True)
class ImageTrigger(Trigger):
    """An image file resized to size=(h, w), alpha-composited at position, blended with factor blend.

    semantics "poisonlab" (default): out = x + blend * a * (t - x) in floating point inside the box,
    the rest of the image untouched, the trigger resized with Lanczos. "art": IBM ART 1.20's
    insert_image pixel for pixel (8-bit PIL pipeline: the whole image quantised to 1/255 steps,
    fractional alpha squared, PIL's default resize filter); see poison/art_insert.py.
    """

    path: str
    size: tuple[int, int] | None = (8, 8)
    position: str | tuple[int, int] = "random"
    blend: float = 0.8
    semantics: str = "poisonlab"
    name = "image"

    def __post_init__(self):
        object.__setattr__(self, "path", str(self.path))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "position", _pos(self.position))
        if self.semantics not in IMAGE_SEMANTICS:
            raise ConfigError(f"semantics={self.semantics!r} is not known; accepted: {', '.join(IMAGE_SEMANTICS)}")

    def rgba(self) -> torch.Tensor:
        """The (4, h, w) trigger image in [0, 1], read once and cached."""
        return _load_rgba(self.path, self.size)

    def __call__(self, x, generator=None):
        if self.semantics == "art":
            return self._stamp_art(x, generator)
        return stamp_image(x, self.rgba(), self.position, self.blend, generator)

    def _stamp_art(self, x, generator):
        from poisonlab.poison.art_insert import read_rgba_art, stamp_image_art

        if not 0.0 <= self.blend <= 1.0:
            raise ConfigError(f"blend={self.blend} is out of range; accepted: [0, 1]")
        xb, single = _batch(x)
        trigger = read_rgba_art(self.path, self.size)
        rows, cols = resolve_position(self.position, xb.shape[0], *xb.shape[-2:], *trigger.shape[-2:], generator)
        return _unbatch(stamp_image_art(xb, trigger, rows, cols, self.blend), single)


@TRIGGERS.register("blend", reference="Chen et al. 2017, Targeted backdoor attacks ... using data poisoning (blended)")
@dataclass(frozen=True)
class BlendTrigger(Trigger):
    """Whole-image blend with a pattern at alpha: "noise" (uniform, from seed) or an image file path."""

    pattern: str = "noise"
    alpha: float = 0.2
    seed: int = 0
    name = "blend"

    def pattern_for(self, shape: Sequence[int]) -> torch.Tensor:
        """The (c, h, w) blend pattern for images of shape (c, h, w)."""
        c, h, w = (int(s) for s in shape)
        if self.pattern == "noise":
            from poisonlab.rng import generator as derive

            return torch.rand(c, h, w, generator=derive(self.seed, "blend-pattern", c, h, w))
        colour, _ = trigger_for_channels(_load_rgba(self.pattern, (h, w)), c)
        return colour

    def __call__(self, x, generator=None):
        xb, _ = _batch(x)
        return stamp_blend(x, self.pattern_for(xb.shape[1:]), self.alpha)


# ---------------------------------------------------------------- tabular
def stamp_features(x: torch.Tensor, features, value) -> torch.Tensor:
    """A copy of x (n, f) or (f,) with x[..., features] = value (a scalar or one value per feature)."""
    x = torch.as_tensor(x)
    if x.dim() not in (1, 2):
        raise ConfigError(f"feature trigger input has shape {tuple(x.shape)}; accepted: (f,) or (n, f)")
    idx = torch.as_tensor(list(features), dtype=torch.long)
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= x.shape[-1]:
        raise ConfigError(f"features={list(features)} do not index {x.shape[-1]} features; accepted: 0..{x.shape[-1] - 1}")
    out = x.clone()
    out[..., idx] = torch.as_tensor(value, dtype=x.dtype).expand(len(idx))
    return out


@TRIGGERS.register("features", reference="BadNets (Gu et al. 2017) for tabular data: fixed values on chosen features")
@dataclass(frozen=True)
class FeatureTrigger(Trigger):
    """Set the listed features of every row to value (a scalar or one value per feature)."""

    features: tuple[int, ...] = (0, 1, 2, 3)
    value: float | tuple[float, ...] = 3.0
    name = "features"

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if not isinstance(self.value, (int, float)):
            object.__setattr__(self, "value", tuple(float(v) for v in self.value))
            if len(self.value) != len(self.features):
                raise ConfigError(f"value has {len(self.value)} entries for {len(self.features)} features;"
                                  " accepted: one value, or one per feature")

    def __call__(self, x, generator=None):
        return stamp_features(x, self.features, self.value)


def make_trigger(spec: Trigger | dict | str) -> Trigger:
    """A Trigger from an object, a {name, params} dict (as in YAML) or a bare name."""
    if isinstance(spec, Trigger):
        return spec
    if isinstance(spec, str):
        return TRIGGERS.get(spec)
    if isinstance(spec, dict) and "name" in spec:
        extra = set(spec) - {"name", "params"}
        if extra:
            raise ConfigError(f"trigger spec has unknown keys {sorted(extra)}; accepted: name, params")
        return TRIGGERS.get(spec["name"], **(spec.get("params") or {}))
    raise ConfigError(f"trigger={spec!r} is not valid; accepted: a Trigger, a name, or {{name: ..., params: {{...}}}}")
