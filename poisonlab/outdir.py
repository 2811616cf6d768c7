"""Where poisonlab may write: safe run-directory names, and directories it may claim without harming a user's files.

Three rules (issue #20, class 4):

- A run's default directory is ``runs/<name>``, and the name never leads outside ``runs/``: path
  separators, control characters and leading dots become ``_``; an empty, NUL-holding or over-long
  name is refused (:func:`default_dir`). Only ``--out`` (or the config's ``output.dir``) chooses
  another place.
- An output directory must be a directory that is new, empty, or written by poisonlab before: a
  file, an unwritable place, or a directory holding files poisonlab did not write is refused with a
  hint (:func:`claim`). poisonlab's directories carry a hidden marker file (``.poisonlab``); a run
  directory written before the marker existed is recognised by its ``metrics.json`` + ``config.yaml``.
- Single files are never overwritten unless they were poisonlab's or the user says ``--force``
  (:func:`check_new_file`); every file is written to a temporary name and renamed (rundir.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

from poisonlab.errors import ConfigError
from poisonlab.rundir import atomic_write_text

MARKER = ".poisonlab"
"""The hidden file naming what poisonlab wrote into a directory (JSON: {"kind": ..., ...})."""

MAX_NAME_BYTES = 200
"""Longest run name (UTF-8 bytes) used as a directory name; filesystems allow 255 per component."""

RUNS = Path("runs")
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_name(name: str, what: str = "name") -> str:
    """name as one safe path component: separators and control characters become '_', leading dots '_'.

    Refused (ConfigError): an empty or blank name, a name holding NUL, a name over MAX_NAME_BYTES bytes.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{what}={name!r} is empty; accepted: a non-empty name (letters, digits, -, _, .)")
    if "\x00" in name:
        raise ConfigError(f"{what}={name!r} holds a NUL character; accepted: a name without control characters")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"{what} is {size} bytes long ({name[:24]!r}...); accepted: at most {MAX_NAME_BYTES}"
                          " bytes (or choose the directory with --out)")
    safe = _UNSAFE.sub("_", name.strip())
    return "_" + safe.lstrip(".") if safe.startswith(".") else safe


def default_dir(name: str, what: str = "name") -> Path:
    """runs/<safe_name(name)>: always a direct child of runs/."""
    return RUNS / safe_name(name, what)


def output_dir(out: str | None, config_dir: str | None, name: str) -> Path:
    """The directory a command writes to: --out, else the config's output.dir, else runs/<safe name>."""
    for given, flag in ((out, "--out"), (config_dir, "output.dir")):
        if given is not None:
            if not str(given).strip() or "\x00" in str(given):
                raise ConfigError(f"{flag}={given!r} is not a usable path; accepted: a directory path")
            return Path(given)
    return default_dir(name)


def marker_of(directory: Path) -> dict | None:
    """The directory's marker document, or None when there is none (or it is unreadable)."""
    try:
        doc = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def written_by_poisonlab(directory: Path) -> bool:
    """True for a directory with poisonlab's marker, or a run directory of an older poisonlab."""
    if (directory / MARKER).is_file():
        return True
    checkpoints = directory / "checkpoints"
    if (checkpoints / "checkpoint.json").is_file() or (checkpoints / "checkpoint.safetensors").is_file():
        return True  # a federated run killed before its first files, written before the marker existed
    return (directory / "metrics.json").is_file() and (directory / "config.yaml").is_file()


def claim(directory: Path, kind: str, flag: str = "output directory", extra: dict | None = None) -> Path:
    """Make directory poisonlab's output directory of this kind, or refuse in one line (ConfigError).

    Refused: an existing file; a directory holding files poisonlab did not write; a place that
    cannot be created or written (read-only, permissions, a file on the way). The marker is
    (re)written with {"kind": kind, **extra}.
    """
    directory = usable(directory, flag)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{flag} {directory} is an existing file; accepted: a directory (new, empty, or"
                          " written by poisonlab)")
    held = marker_of(directory) if directory.is_dir() else None
    if held is not None and held.get("kind") != kind:
        raise ConfigError(f"{flag} {directory} holds a poisonlab {held.get('kind')!s} output, not a {kind};"
                          " accepted: another --out (or output.dir)")
    if directory.is_dir() and not written_by_poisonlab(directory):
        foreign = _first_entry(directory)
        if foreign is not None:
            raise ConfigError(f"{flag} {directory} holds files poisonlab did not write (e.g. '{foreign}');"
                              " poisonlab never writes over them; accepted: a new or empty directory (choose"
                              " another --out or output.dir)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / MARKER, json.dumps({"kind": kind, **(extra or {})}, sort_keys=True))
    except OSError as err:
        raise ConfigError(f"{flag} {directory} cannot be written ({err.strerror or type(err).__name__});"
                          " accepted: a writable directory") from None
    return directory


def usable(path: Path, flag: str = "output directory") -> Path:
    """path, after checking it can be looked at (a name too long for the filesystem, a loop of links...)."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno != errno.ENOTDIR:  # a file on the way: claim's mkdir says so
            raise ConfigError(f"{flag} {path} cannot be written ({err.strerror or type(err).__name__});"
                              " accepted: a writable directory") from None
    return path


def _first_entry(directory: Path) -> str | None:
    try:
        with os.scandir(directory) as entries:
            return next((e.name for e in entries), None)
    except OSError:
        return None


def check_new_file(path: Path, flag: str, force: bool = False) -> Path:
    """Refuse to write path over an existing file unless force (a directory is always refused)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; accepted: a file path")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {path} exists; poisonlab does not overwrite it; accepted: another path, or"
                          " --force to replace it")
    return path
