"""Run the python blocks of one doc, in order, each in a fresh namespace; write what each printed or raised.

Used by tests/test_docs_run.py in a fresh process per doc:
    python tests/docs_runner.py blocks.json results.json
blocks.json: [{"doc": absolute path, "line": first code line, "code": ...}]. Each block is compiled with
the doc as its file name and its own line numbers, so a traceback points at the doc's line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run_block(block: dict) -> dict:
    """exec one block in a fresh namespace; its stdout, and the error's last traceback lines if it failed."""
    out = io.StringIO()
    code = compile("\n" * (block["line"] - 1) + block["code"], block["doc"], "exec")
    try:
        with contextlib.redirect_stdout(out):
            exec(code, {"__name__": "__main__"})
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none stops the other blocks
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == block["doc"]]
        where = f"line {frames[-1].lineno}" if frames else "(in a library)"
        return {"ok": False, "stdout": out.getvalue(),
                "error": f"{where}: {type(exc).__name__}: {exc}".splitlines()[0][:500]}
    return {"ok": True, "stdout": out.getvalue(), "error": ""}


def main(blocks_path: str, results_path: str) -> None:
    sys.path.insert(0, "")  # the work dir is importable, as in an interactive session (mynets.py)
    blocks = json.loads(open(blocks_path).read())
    results = [run_block(b) for b in blocks]
    with open(results_path, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main(*sys.argv[1:3])
