"""How a sweep runs its unfinished cells: one after another, or stacked (cells trained together), or on Ray.

An executor is ``executor(run_one, tasks) -> iterator of (task index, metrics)`` over tasks (config, cell_dir),
yielding each cell as it finishes; poisonlab/sweep.py writes the cell's marker and logs it. ``sequential`` is
the plain loop. ``stacked(size)`` runs up to size cells at once, one thread each, in a Cohort (fl/cohort.py): cells
with the same model shape and local-training settings train their clients in one stacked engine call per round,
while their loading and partitioning are built once (shared_builds.py). The Ray executor is in sweep_ray.py.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from poisonlab.shared_builds import sharing

Task = tuple[Any, Path]
Executor = Callable[[Callable[[Any, Path], dict], list[Task]], Iterator[tuple[int, dict]]]


def sequential(run_one: Callable[[Any, Path], dict], tasks: list[Task]) -> Iterator[tuple[int, dict]]:
    """Each task in order, in this thread (the data and partitions still built once, shared_builds.py)."""
    with sharing():
        for i, (config, cell_dir) in enumerate(tasks):
            yield i, run_one(config, cell_dir)


def stacked(size: int) -> Executor:
    """Up to size compatible federated cells at a time (stack_key), each in its own thread of one Cohort;
    centralized cells one after another."""
    def run(run_one: Callable[[Any, Path], dict], tasks: list[Task]) -> Iterator[tuple[int, dict]]:
        groups: dict[str, list[int]] = {}
        for i, (config, _) in enumerate(tasks):
            groups.setdefault(stack_key(config), []).append(i)
        with sharing():
            for members in groups.values():
                if tasks[members[0]][0].kind != "federated":  # nothing to stack: one after another
                    yield from ((i, run_one(*tasks[i])) for i in members)
                    continue
                for lo in range(0, len(members), size):
                    yield from _run_together(run_one, tasks, members[lo:lo + size])

    return run


def stack_key(config) -> str:
    """Cells with equal keys can train in one stacked call: same data, model, local training, device, precision."""
    fed = config.federated
    parts = [config.data, config.model, fed.local if fed is not None else None, config.device, config.precision,
             fed.batch_norm if fed is not None else None]
    return "|".join("-" if p is None else p.model_dump_json() if hasattr(p, "model_dump_json") else str(p)
                    for p in parts)


def _run_together(run_one: Callable[[Any, Path], dict], tasks: list[Task], members: list[int]):
    """Run the member tasks in threads of one Cohort; yield each as it finishes; then re-raise the first error."""
    from poisonlab.fl.cohort import Cohort

    cohort, done = Cohort(), queue.Queue()

    def body(i: int) -> None:
        try:
            with cohort.member():
                done.put((i, run_one(*tasks[i]), None))
        except BaseException as err:  # noqa: BLE001 - re-raised in the sweep's thread below
            done.put((i, None, err))

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(body, i), daemon=True) for i in members]
    for t in threads:
        t.start()
    errors = []
    for _ in members:
        i, metrics, err = done.get()
        if err is not None:
            errors.append(err)
        else:
            yield i, metrics
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
