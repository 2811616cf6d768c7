"""The code blocks of README.md and docs/*.md, and the markers that say how tests/test_docs_run.py runs them.

A fenced block is run as written: ```bash / ```sh / ```shell blocks command by command in bash,
```python blocks in a fresh namespace each (the blocks of one doc in one fresh process, in order, so
a doc can never lean on names defined elsewhere). An HTML comment right before a block (blank lines
between allowed) changes that, visibly to anyone editing the doc:

    <!-- docs-test: skip REASON -->       not run; counted and listed with the reason
    <!-- docs-test: slow REASON -->       run only with POISONLAB_DOCS_SLOW=1 (the slow docs test)
    <!-- docs-test: file NAME -->         a yaml (or any) block saved as NAME in the doc's work dir
    <!-- docs-test: output -->            a plain block: the output the previous run block prints;
                                          each non-blank line must appear, in order, in that output
    <!-- docs-test: excerpt PATH -->      a block quoted from PATH: every code line must be in PATH
    <!-- docs-test: fast                  the fast form of a shell block: one line per command of
    CMD ...                               the block, each the doc's command with arguments added
    skip: REASON                          at its end, or 'skip: REASON' for a command not run
    -->

Plain blocks (no language) and yaml blocks without a marker are not commands: yaml blocks are
parsed, plain blocks are counted as text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:?\s*(.*?)\s*-->", re.S)
KEYWORDS = ("skip", "slow", "file", "output", "excerpt", "fast")


@dataclass
class Command:
    """One shell command of a block: its doc line, its text (continuations joined) and what runs."""

    line: int
    text: str
    run: str | None          # None: not run
    reason: str = ""         # why not


@dataclass
class Block:
    """One fenced block: doc, first code line, language, code, and its marker (keyword, argument)."""

    doc: str
    line: int
    lang: str
    code: str
    marker: str = ""
    arg: str = ""
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def docs() -> list[Path]:
    """README.md and every docs/*.md, in that order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def parse(path: Path) -> list[Block]:
    """The fenced blocks of one doc with their markers; a malformed marker is a ValueError naming its line."""
    rel = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    blocks, pending, i = [], None, 0
    while i < len(lines):
        text = lines[i]
        if text.lstrip().startswith("<!--") and "docs-test" in text:
            end = i
            while "-->" not in lines[end]:
                end += 1
            m = MARKER.search("\n".join(lines[i:end + 1]))
            if m is None:
                raise ValueError(f"{rel}:{i + 1}: unreadable docs-test marker")
            body = m.group(1)
            keyword = re.match(r"\w*", body).group(0)
            arg = body[len(keyword):]
            if keyword not in KEYWORDS:
                raise ValueError(f"{rel}:{i + 1}: docs-test marker '{keyword}' is not known; known: {', '.join(KEYWORDS)}")
            pending, i = (keyword, arg.strip(), i + 1), end + 1
            continue
        fence = FENCE.match(text)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].lstrip().startswith("```"):
                end += 1
            indent = len(fence.group(1))  # a block inside a list item: its lines lose the fence's indent
            code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1:end])
            block = Block(rel, i + 2, fence.group(2).lower(), code)
            if pending is not None:
                block.marker, block.arg = pending[0], pending[1]
            blocks.append(block)
            pending, i = None, end + 1
            continue
        if text.strip() and pending is not None:
            raise ValueError(f"{rel}:{pending[2]}: a docs-test marker must come right before a fenced block")
        i += 1
    for block in blocks:
        if block.lang in SHELL:
            block.commands = commands(block)
    return blocks


def split_commands(code: str, first_line: int) -> list[tuple[int, str]]:
    """(doc line, command) for each command of a shell block: continuation lines joined, comments dropped."""
    out, buf, start = [], "", None
    for n, raw in enumerate(code.splitlines(), first_line):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        start = n if not buf else start
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    return out


def tokens(command: str) -> list[str]:
    """A command's words as the shell reads them, without a trailing comment."""
    return shlex.split(command, comments=True)


def commands(block: Block) -> list[Command]:
    """The block's commands with what runs for each: as written, the fast form's line, or nothing (skip)."""
    written = split_commands(block.code, block.line)
    if block.marker != "fast":
        return [Command(n, c, c) for n, c in written]
    fast = [line.strip() for line in block.arg.splitlines() if line.strip()]
    if len(fast) != len(written):
        raise ValueError(f"{block.where}: the fast form has {len(fast)} lines for {len(written)} commands")
    out = []
    for (n, text), quick in zip(written, fast):
        if quick.startswith("skip:"):
            out.append(Command(n, text, None, quick[len("skip:"):].strip()))
            continue
        doc_words = tokens(text)
        if tokens(quick)[:len(doc_words)] != doc_words:
            raise ValueError(f"{block.where}: fast form '{quick}' must be the doc's command '{text}' with "
                             "arguments added at its end")
        out.append(Command(n, text, quick))
    return out


def unfenced_commands(path: Path) -> list[str]:
    """Indented (4-space) command lines outside fences: commands the docs test would miss."""
    rel, inside, found = str(path.relative_to(REPO)), False, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside and re.match(r"^ {4,}(\.venv/bin/|poisonlab |PYTHONPATH=|make |python )", line):
            found.append(f"{rel}:{n}: {line.strip()}")
    return found
