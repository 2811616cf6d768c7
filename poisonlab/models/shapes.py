"""Input-shape checks shared by the zoo models (one-line ConfigErrors naming the shape)."""

from __future__ import annotations

from poisonlab.errors import ConfigError


def image_input(name: str, input_shape: tuple[int, ...], min_side: int = 8) -> tuple[int, int, int]:
    """(channels, height, width) of an image input of at least min_side x min_side, or a ConfigError."""
    if len(input_shape) != 3:
        raise ConfigError(f"model '{name}' needs images (c, h, w); got input_shape={tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    if min(h, w) < min_side:
        raise ConfigError(f"model '{name}' needs images of at least {min_side}x{min_side}; got {h}x{w}")
    return c, h, w


def positive_int(name: str, param: str, value: object) -> int:
    """value if it is a positive int, else a ConfigError naming model, parameter and value."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"model '{name}': {param}={value!r} is not valid; accepted: a positive integer")
    return value
