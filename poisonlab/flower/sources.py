"""Where a node's or the server's data comes from, named in Flower settings (node config / run config).

A data source is ``npz`` (an .npz with x, y and classes, read with allow_pickle=False) or ``dataset`` (a
registered source) with ``data-dir`` (given to its ``data_dir`` or ``path`` parameter) and ``data-params``
(JSON of its other parameters). A SuperNode names its own with these keys (flower/node.py); the ServerApp of a
run with ``node-data = true`` names its test set, root set and validation set with the same keys prefixed by
``test-``, ``root-`` and ``validation-``.
"""

from __future__ import annotations

import inspect
import json

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError

SOURCE_KEYS = ("npz", "dataset", "data-dir", "data-params")
SERVER_PARTS = ("test", "root", "validation")


def data_source(s: dict, prefix: str = "") -> dict | None:
    """The data source named by the settings' keys prefix+npz / prefix+dataset (+ data-dir, data-params), checked
    (ConfigError naming the keys); None when neither is given."""
    src = {k: s[prefix + k] for k in SOURCE_KEYS if prefix + k in s and s[prefix + k] not in (None, "")}
    if not src:
        return None
    name = f"'{prefix}npz' / '{prefix}dataset'"
    if ("npz" in src) == ("dataset" in src):
        raise ConfigError(f"data source {src} names {'both' if 'npz' in src else 'neither'} of {name}; accepted:"
                          f" {prefix}npz=\"file.npz\", or {prefix}dataset=\"mnist\" {prefix}data-dir=\"dir\"")
    if "npz" in src and len(src) > 1:
        raise ConfigError(f"{prefix}npz={src['npz']!r} with {', '.join(prefix + k for k in src if k != 'npz')};"
                          f" accepted: {prefix}npz alone (the file holds x, y and classes)")
    if "data-params" in src:
        params = src["data-params"]
        try:
            params = json.loads(params) if isinstance(params, str) else params
        except json.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            raise ConfigError(f"{prefix}data-params={src['data-params']!r} is invalid; accepted: a JSON object such"
                              ' as {"part": "test"}')
        src["data-params"] = params
    return src


def load_source(src: dict, what: str) -> Dataset:
    """The Dataset of a checked data source (the npz source for npz, else the named registered source)."""
    from poisonlab.data import SOURCES, load

    if "npz" in src:
        return load("npz", path=str(src["npz"]))
    name, params = str(src["dataset"]), dict(src.get("data-params") or {})
    if "data-dir" in src:
        accepted = inspect.signature(SOURCES.entry(name).factory).parameters
        key = "data_dir" if "data_dir" in accepted else "path" if "path" in accepted else None
        if key is None:
            raise ConfigError(f"{what}: dataset '{name}' takes no data directory; accepted: no data-dir for it")
        params[key] = str(src["data-dir"])
    return load(name, **params)


def server_sources(s: dict) -> str:
    """The ServerApp's sources (test, root, validation) from 'test-npz', 'root-dataset', ... as canonical JSON;
    ConfigError when node-data is on and no test set is named."""
    sources = {part: data_source(s, f"{part}-") for part in SERVER_PARTS}
    if sources["test"] is None:
        raise ConfigError("node-data=true needs the server's test set; accepted: test-npz=\"test.npz\", or"
                          " test-dataset=\"mnist\" test-data-dir=\"dir\" (test-data-params='{\"part\": \"test\"}')")
    return json.dumps({k: v for k, v in sources.items() if v is not None}, sort_keys=True)


def node_data_mode(s: dict) -> bool:
    """True when the run says that nodes bring their own data (run config node-data = true)."""
    value = s.get("node-data", False)
    if not isinstance(value, bool):
        raise ConfigError(f"node-data={value!r} is invalid; accepted: true or false")
    return value
