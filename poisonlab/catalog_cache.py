"""The catalog `poisonlab list` prints, kept in a file so that listing does not import PyTorch.

Building the catalog imports every registry (PyTorch, scikit-learn: about 2 s on a 2-core machine)
and builds each component once to record its parameter ranges (poisonlab.catalog.parameters). The
result depends only on poisonlab's own source, so it is written once as JSON under the cache
directory, named by a hash of every ``.py`` file of the package (and the Python and PyTorch
versions): any edit to the package names a new file and the catalog is built again; a stale catalog
is never read. A cache that cannot be read or written is skipped and the catalog is built live.

Where: $POISONLAB_CACHE, else $XDG_CACHE_HOME/poisonlab, else ~/.cache/poisonlab.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from poisonlab.errors import unknown_name

PACKAGE = Path(__file__).resolve().parent
FORMAT = 1
"""Bumped when the file's layout changes."""


@dataclass(frozen=True)
class Listed:
    """One component as `poisonlab list` shows it: name, summary, reference and its parameters
    (each a catalog.Param as a 4-tuple: name, default, type, accepted)."""

    name: str
    summary: str
    reference: str
    params: tuple[tuple[str, str, str, str], ...]


@dataclass(frozen=True)
class Listing:
    """The listed components of one kind, with the registry's own name for the kind (used in errors)."""

    kind: str
    listed: tuple[Listed, ...]

    def entries(self) -> list[Listed]:
        return list(self.listed)

    def entry(self, name: str) -> Listed:
        """The component called name, or the registry's own ConfigError naming the nearest names."""
        for item in self.listed:
            if item.name == name:
                return item
        raise unknown_name(self.kind, name, [item.name for item in self.listed])


def cache_dir() -> Path:
    """$POISONLAB_CACHE, else $XDG_CACHE_HOME/poisonlab, else ~/.cache/poisonlab."""
    if os.environ.get("POISONLAB_CACHE"):
        return Path(os.environ["POISONLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poisonlab"


def source_key() -> str:
    """A hash of every .py file of the package (path and bytes), Python's and PyTorch's versions."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"{FORMAT} {sys.version}".encode())
    try:
        digest.update(version("torch").encode())
    except PackageNotFoundError:
        pass
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def build() -> dict[str, Listing]:
    """Every kind's listing, from the live registries (imports them all)."""
    from poisonlab.catalog import KINDS, parameters, registry

    out = {}
    for kind in sorted(KINDS):
        reg = registry(kind)
        listed = tuple(Listed(e.name, e.summary, e.reference,
                              tuple((p.name, p.default, p.type, p.accepted) for p in parameters(kind, e.name)))
                       for e in reg.entries())
        out[kind] = Listing(reg.kind, listed)
    return out


def load() -> dict[str, Listing]:
    """The catalog: read from the cache file for this source, else built and written there."""
    from poisonlab.catalog import KINDS

    path = cache_dir() / f"catalog-{source_key()}.json"
    try:
        catalog = _decode(json.loads(path.read_text(encoding="utf-8")))
        if set(catalog) == set(KINDS):
            return catalog
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent, unreadable or damaged: build it
        pass
    catalog = build()
    _write(path, _encode(catalog))
    return catalog


def _encode(catalog: dict[str, Listing]) -> dict:
    return {kind: {"kind": lst.kind, "listed": [[i.name, i.summary, i.reference, [list(p) for p in i.params]]
                                                for i in lst.listed]}
            for kind, lst in catalog.items()}


def _decode(data: dict) -> dict[str, Listing]:
    return {kind: Listing(str(v["kind"]), tuple(Listed(str(n), str(s), str(r), tuple(tuple(map(str, p)) for p in ps))
                                                  for n, s, r, ps in v["listed"]))
            for kind, v in data.items()}


def _write(path: Path, data: dict) -> None:
    """Write atomically (a temporary file renamed); a cache that cannot be written is skipped silently."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
