"""--device, the one option every computing command takes (used by _options.add_config_arguments; its own module
so that train_cmd, which _options.py imports, can use it without an import circle)."""

from __future__ import annotations


def add_device(parser, default: str | None = None) -> None:
    """--device: where the command computes (auto | cpu | cuda | cuda:N | mps; poisonlab/device.py)."""
    where = "the config's device (auto)" if default is None else default
    parser.add_argument("--device", default=default, metavar="DEVICE",
                        help=f"where to compute: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: {where})")


def chosen_device(spec: str):
    """The --device resolved (a one-line ConfigError naming the available ones), printed as the command starts."""
    from poisonlab.console import console
    from poisonlab.device import describe, resolve

    device = resolve(spec)
    console.print(f"device: {describe(device)}")
    return device
