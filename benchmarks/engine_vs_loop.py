"""The engine against the best plain loop (issue #24, target 5): one round of local training per model with every
training path, side by side in one run, and the path ``engine: auto`` picks.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/engine_vs_loop.py            # CPU, 1 thread
    PYTHONPATH=. .venv/bin/python benchmarks/engine_vs_loop.py --device cuda --quick         # the lead's GPU check
    PYTHONPATH=. .venv/bin/python benchmarks/engine_vs_loop.py --device cuda --models cnn,cnn32,resnet20,resnet18

Paths (fl/engine_choice.py): ``vectorized`` (fl/local.py: all clients in one stacked step), ``loop NCHW``
(fl/reference.py: one model copy and torch.optim.SGD per client) and ``loop channels_last`` (the same loop with
the model and batches in torch.channels_last: the layout a CPU-savvy user writes). Every path gets the same
batches (the same per-client generators), so their updates differ by float rounding only (printed).

Cases (10 classes; SGD lr 0.05, 1 local epoch):
- cnn: 1x28x28, the MNIST test images in ../shared/data/mnist (random images of that shape when absent, said in
  the output), 100 clients of 80, batch 20 (fl_engine.py's case (b));
- cnn32: 3x32x32 random images, 10 clients of 500, batch 32 (the CIFAR-shaped round of the issue);
- resnet20 (batch norm: the vectorized engine runs it under vmap with per-client running statistics): 3x32x32
  random images, 10 clients of 100, batch 25; resnet18, preact_resnet18, vgg11_bn on request (--models: meant
  for a GPU).
``--quick`` divides every case's clients by 5 (at least 2) and runs one timed round.

Columns: seconds of one round per path, the best of ``--rounds`` timed rounds after one warm-up round, paths
interleaved round by round (a load change hits all of them); on the CPU process CPU time (wall time on this
shared machine is inflated by other processes; with 1 torch thread CPU time is the path's own work), on CUDA wall
time after torch.cuda.synchronize. ``vec / best loop``: the vectorized engine's time over the faster loop's (below
1: the engine is faster). ``auto``: what ``engine: auto`` chose for the case (its own probe, fl/engine_choice.py,
not cached on disk here) and its time over the best loop's; ``probe wall s``: what that first choice cost (wall
time: once per machine and model shape, then read from the cache file). ``max |diff|``: the largest difference of an update
entry between each other path and the NCHW loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poisonlab.config.local import LocalConfig  # noqa: E402
from poisonlab.data.dataset import Dataset  # noqa: E402
from poisonlab.device import deterministic, describe, move_dataset, resolve  # noqa: E402
from poisonlab.fl.engine_choice import ENGINES, choose, train_with  # noqa: E402
from poisonlab.fl.local import flat_params  # noqa: E402
from poisonlab.fl.buffers import model_buffers  # noqa: E402
from poisonlab.models import make_model  # noqa: E402
from poisonlab.rng import generator  # noqa: E402

MNIST_DIRS = (ROOT.parent / "shared" / "data" / "mnist", ROOT / "shared" / "data" / "mnist")

CASES = {  # model: (input shape, clients, samples per client, batch size)
    "cnn": ((1, 28, 28), 100, 80, 20),
    "cnn32": ((3, 32, 32), 10, 500, 32),
    "resnet20": ((3, 32, 32), 10, 100, 25),
    "resnet18": ((3, 32, 32), 10, 100, 25),
    "preact_resnet18": ((3, 32, 32), 10, 100, 25),
    "vgg11_bn": ((3, 32, 32), 10, 100, 25),
}
LABELS = {"vectorized": "vectorized", "reference": "loop NCHW", "reference_channels_last": "loop channels_last"}


def images(n: int, shape: tuple[int, ...]) -> tuple[Dataset, str]:
    """n MNIST test images (a seeded choice) for a 1x28x28 shape when the files are here, else n random images."""
    if shape == (1, 28, 28):
        from poisonlab.data import load

        for folder in MNIST_DIRS:
            if (folder / "t10k-images-idx3-ubyte.gz").exists():
                data = load("mnist", data_dir=str(folder), part="test")
                pick = torch.randperm(len(data), generator=generator(0, "engine-vs-loop", "mnist"))[:n]
                return data.subset(pick), "MNIST test images"
    g = generator(0, "engine-vs-loop", "images", *shape)
    return Dataset(torch.rand(n, *shape, generator=g), torch.arange(n) % 10, tuple("0123456789")), "random images"


def clock(device: torch.device) -> float:
    """CPU time of this process on the CPU, wall time after a synchronize on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def case(name: str, device: torch.device, rounds: int, quick: bool) -> None:
    """Time one round of every path on one model and print its row."""
    shape, clients, per, batch = CASES[name]
    clients = max(2, clients // 5) if quick else clients
    data, source = images(clients * per, shape)
    parts = [move_dataset(data.subset(torch.arange(i * per, (i + 1) * per)), device) for i in range(clients)]
    with torch.device("cpu"):
        model = make_model(name, shape, 10, seed=0)
    model = model.to(device)
    start, buffers = flat_params(model), model_buffers(model)
    cfg = LocalConfig(epochs=1, batch_size=batch, lr=0.05)
    paths = [e for e in ENGINES if e != "reference_channels_last" or len(shape) == 3]

    def run(path: str, r: int) -> tuple[float, torch.Tensor]:
        gens = [generator(0, "engine-vs-loop", "local", r, i) for i in range(clients)]
        t = clock(device)
        out = train_with(path, model, start, parts, cfg, gens, buffers=buffers).updates
        return clock(device) - t, out

    best, updates = {p: float("inf") for p in paths}, {}
    for r in range(rounds + 1):  # round 0 is the warm-up
        for p in paths:
            seconds, updates[p] = run(p, r)
            if r > 0:
                best[p] = min(best[p], seconds)
    loop = min(best[p] for p in paths if p != "vectorized")
    t = time.perf_counter()
    pick = choose(model, start, parts, cfg, buffers=buffers, disk=False, quiet=True).engine
    probe = time.perf_counter() - t
    diff = " / ".join(f"{float((updates[p] - updates['reference']).abs().max()):.1e}" for p in paths
                      if p != "reference")
    times = " | ".join(f"{best[p]:.3f}" if p in best else "-" for p in ENGINES)
    print(f"| {name} | {clients} x {per}, B={batch} ({source}) | {times} | {best['vectorized'] / loop:.2f} |"
          f" {LABELS[pick]} | {best[pick] / loop:.2f} | {probe:.1f} | {diff} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    parser.add_argument("--models", default="cnn,cnn32,resnet20",
                        help=f"comma-separated, of {', '.join(CASES)} (default cnn,cnn32,resnet20)")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per path after a warm-up (best of)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the clients, one timed round")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        parser.error(f"--models {','.join(unknown)}: not a case; accepted: {', '.join(CASES)}")
    device = resolve(args.device)
    if device.type == "cuda":
        deterministic()
    rounds = 1 if args.quick else args.rounds
    print(f"device: {describe(device)}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of"
          f" {rounds} round(s) after a warm-up; {'wall' if device.type == 'cuda' else 'process CPU'} seconds")
    print("| model | clients x samples | vectorized s | loop NCHW s | loop channels_last s | vec / best loop |"
          " auto picks | auto / best loop | probe wall s | max abs diff vs loop NCHW (vec / cl) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in models:
        case(name, device, rounds, args.quick)


if __name__ == "__main__":
    main()
