"""The ``poisonlab`` command: one sub-command per module in ``poisonlab.commands``.

Each command module defines NAME, HELP, ``add_arguments(parser)`` and ``run(args) -> int``;
they are found automatically. A user mistake (PoisonlabError, a bad flag, a missing file)
is printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from poisonlab import __version__
from poisonlab.errors import PoisonlabError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line 'poisonlab: error: ...' and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"poisonlab {self.prog.split(' ', 1)[-1]}: error: {message}\n"
                     if " " in self.prog else f"poisonlab: error: {message}\n")


def _command_modules():
    import poisonlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"poisonlab.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = _Parser(prog="poisonlab", description="A laboratory for poisoning attacks and defenses.")
    parser.add_argument("--version", action="version", version=f"poisonlab {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for PyTorch (default: $POISONLAB_THREADS, else PyTorch's default;"
                             " small federated models are often fastest with 1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def set_threads(threads: int | None) -> None:
    """Apply --threads (or $POISONLAB_THREADS) to PyTorch's intra-op thread pool (poisonlab.threads)."""
    from poisonlab.threads import apply_threads

    apply_threads(threads)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the sub-command, turn user errors into one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        set_threads(args.threads)
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except PoisonlabError as err:
        print(f"poisonlab: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"poisonlab: error: file not found: {err.filename or err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return quiet_broken_pipe()
    except OSError as err:  # a place that cannot be read or written: permissions, read-only, a full disk
        where = f" {err.filename}" if err.filename else ""
        print(f"poisonlab: error: cannot use{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poisonlab: interrupted", file=sys.stderr)
        return 130


def quiet_broken_pipe() -> int:
    """Output piped into a reader that closed (`poisonlab list | head`): end quietly, as Unix tools do.

    stdout is pointed at /dev/null so the interpreter's final flush cannot raise a second time.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured in tests): nothing left to flush
        pass
    return 1  # what rich's Console does on a broken pipe, so every output path ends alike


if __name__ == "__main__":
    sys.exit(main())
