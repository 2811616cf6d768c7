"""The ``poisonlab`` command: one sub-command per module in ``poisonlab.commands``.

Each command module defines NAME, HELP, ``add_arguments(parser)`` and ``run(args) -> int``;
they are found automatically, and only the command being run is imported (NAME and HELP are read
from the sources), so `poisonlab --help` starts without PyTorch. A user mistake (PoisonlabError, a bad flag, a missing file)
is printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path

from poisonlab import __version__
from poisonlab.errors import PoisonlabError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line 'poisonlab: error: ...' and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"poisonlab {self.prog.split(' ', 1)[-1]}: error: {message}\n"
                     if " " in self.prog else f"poisonlab: error: {message}\n")


class _Command:
    """One sub-command, known by NAME and HELP (read from its module's source, see _command_modules) and
    imported only when it is the one being run: `poisonlab --help` imports none of them."""

    def __init__(self, name: str, help: str, module: str):
        self.NAME, self.HELP, self.module = name, help, module

    def add_arguments(self, parser) -> None:
        importlib.import_module(self.module).add_arguments(parser)

    @property
    def run(self):
        return importlib.import_module(self.module).run


def _literal(tree: ast.Module, name: str):
    """The value of a module-level `NAME = <literal>` assignment, or None."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _command_modules():
    """A _Command per module of poisonlab.commands (those not starting with '_'), sorted by module name.

    NAME and HELP are read from each module's source with ast, without running it: a command module
    may import torch or scikit-learn at its top, and listing the commands must not pay for that.
    """
    import poisonlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        path = Path(pkg.__path__[0]) / f"{info.name}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        yield _Command(_literal(tree, "NAME"), _literal(tree, "HELP"), f"poisonlab.commands.{info.name}")


class _LazyCommands(argparse._SubParsersAction):
    """The sub-command action: the chosen command's arguments are added (its module imported) only when
    argparse reaches it, so building the parser and `--help` import no command module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = {}  # name -> the command whose arguments are not added yet

    def __call__(self, parser, namespace, values, option_string=None):
        command = self.pending.pop(values[0], None) if values else None
        if command is not None:
            sub = self._name_parser_map[values[0]]
            command.add_arguments(sub)
            sub.set_defaults(_run=command.run)
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command named (each one's arguments are added when it is chosen)."""
    parser = _Parser(prog="poisonlab", description="A laboratory for poisoning attacks and defenses.")
    parser.register("action", "parsers", _LazyCommands)
    parser.add_argument("--version", action="version", version=f"poisonlab {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for PyTorch (default: $POISONLAB_THREADS, else PyTorch's default;"
                             " small federated models are often fastest with 1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in _command_modules():
        sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        sub.pending[command.NAME] = command
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
        print(f"poisonlab: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"poisonlab: error: file not found: {one_line(str(err.filename or err))}", file=sys.stderr)
        return 2
    except IsADirectoryError as err:
        print(f"poisonlab: error: '{one_line(str(err.filename or err))}' is a directory; accepted: a file",
              file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"poisonlab: error: permission denied: {one_line(str(err.filename or err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_reader()
    except OSError as err:  # a place that cannot be read or written: permissions, read-only, a full disk
        where = f" {err.filename}" if err.filename else ""
        print(f"poisonlab: error: cannot use{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poisonlab: interrupted", file=sys.stderr)
        return 130


MAX_MESSAGE = 2000
"""Longest error line printed (a message quoting a huge value is cut, not split over the terminal)."""


def one_line(message: str) -> str:
    """message on one line (line breaks shown as \\n) of at most MAX_MESSAGE characters."""
    text = message.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def closed_reader() -> int:
    """stdout's reader went away (`poisonlab list | head`): end quietly with exit code 1 (rich's console, which
    prints most output, does the same on a closed pipe: stdout to /dev/null and SystemExit(1)).

    Python would otherwise print a BrokenPipeError traceback, and again when it flushes stdout at exit;
    pointing stdout at /dev/null stops the second one (the recipe of Python's signal module docs).
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture): nothing to flush
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
