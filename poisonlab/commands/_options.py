"""Options shared by several commands (not a command itself: the leading underscore hides it)."""

from __future__ import annotations

from poisonlab.commands._device import add_device
from poisonlab.errors import ConfigError


def add_config_arguments(parser, config_help: str, out_help: str, set_help: str) -> None:
    """CONFIG, --out, --memory-budget, --device and --set KEY.PATH=VALUE, as run and sweep take them."""
    parser.add_argument("config", help=config_help)
    parser.add_argument("--out", help=out_help)
    add_memory_budget(parser)
    add_device(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help=set_help)


def add_track(parser) -> None:
    """--track mlflow: log each finished run (params, metrics, artifacts) to a tracking server."""
    from poisonlab.tracking import TRACKERS  # a light module: mlflow itself is imported only when used

    parser.add_argument("--track", choices=list(TRACKERS),
                        help="log each finished run to MLflow (needs poisonlab[mlflow]; where to: MLFLOW_TRACKING_URI)")


def add_memory_budget(parser) -> None:
    """--memory-budget GIB: refuse experiments whose estimated memory exceeds it."""
    parser.add_argument("--memory-budget", type=float, metavar="GIB",
                        help="refuse experiments estimated above this many GiB (default: 75%% of physical memory)")


MAX_BUDGET_GIB = 2**20
"""A pebibyte: above any machine's memory, and still an exact int of bytes."""


def memory_budget_bytes(gib: float | None) -> int | None:
    """--memory-budget in bytes (None: the default, 75% of physical memory)."""
    if gib is None:
        return None
    if not 0 < gib <= MAX_BUDGET_GIB:  # NaN fails both comparisons; Inf would overflow int()
        raise ConfigError(f"--memory-budget={gib} is not valid; accepted: a number of GiB in (0, {MAX_BUDGET_GIB}]")
    return int(gib * 2**30)


def load_dataset(spec: str, args):
    """The dataset a command names: an .npz path (its path kept in meta['path']) or a registered name
    loaded with --data-dir / --part."""
    from poisonlab.data import load

    if spec.endswith(".npz"):
        data = load("npz", path=spec)
        return data.replace(meta={**data.meta, "path": spec})
    from poisonlab.commands.train_cmd import dataset_params

    args.dataset = spec
    return load(spec, **dataset_params(args))


def json_params(text: str) -> dict:
    """--params as a JSON object, or a one-line ConfigError showing the accepted shape."""
    import json

    try:
        params = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--params is not valid JSON ({err.msg}); accepted: a JSON object like '{{\"rate\": 0.1}}'") from None
    if not isinstance(params, dict):
        raise ConfigError(f"--params={text!r} is not a JSON object; accepted: '{{\"key\": value}}'")
    return params
