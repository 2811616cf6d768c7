"""GPU engine benchmark: one round of local training, the vectorized engine against the plain per-client loop,
both on the same device, ratio printed with the device's name.

    python benchmarks/gpu_engine.py                     # --device auto: the GPU when there is one
    python benchmarks/gpu_engine.py --device cpu --rounds 1
    python benchmarks/gpu_engine.py --only mnist

(a) mnist: the cnn model, 100 iid clients of 80 MNIST images each (the MNIST test set in ../shared/data/mnist or
    shared/data/mnist; random 28x28 images of the same shape when it is absent, said in the output), 1 local epoch,
    batch 20, SGD lr 0.05.
(b) cifar: a CIFAR-shaped zoo model (resnet20, 3x32x32, batch norm) on 20 clients of 50 random images each,
    1 epoch, batch 25. The vectorized engine refuses models with buffers until federated batch norm is merged;
    then this case says so and runs cnn32 (buffer-free, 3x32x32) instead.

Columns: seconds per round (best of --rounds after one warm-up round) of the plain loop (fl/reference.py: one
model copy and torch.optim.SGD per client) and of the vectorized engine (fl/local.py: all clients in one stacked
step when they fit the device budget; the layer program's hand-written backward), their ratio, and the largest
difference between the two engines' updates (the same batches: float rounding only). On CUDA, times are taken
after torch.cuda.synchronize. Target of issue 18: at least 10x on the MNIST cnn round on a GPU.
Takes well under 5 minutes on an H100 with the defaults; on the CPU of a laptop, a few minutes.
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
from poisonlab.errors import ConfigError  # noqa: E402
from poisonlab.fl.local import flat_params, local_updates  # noqa: E402
from poisonlab.fl.reference import reference_updates  # noqa: E402
from poisonlab.models import make_model  # noqa: E402
from poisonlab.rng import generator  # noqa: E402

MNIST_DIRS = (ROOT / "shared" / "data" / "mnist", ROOT.parent / "shared" / "data" / "mnist")


def mnist_images(n: int) -> tuple[Dataset, str]:
    """n MNIST test images (seeded choice) if the files are here, else n random 28x28 images (same shape)."""
    from poisonlab.data import load

    for folder in MNIST_DIRS:
        if (folder / "t10k-images-idx3-ubyte.gz").exists():
            data = load("mnist", data_dir=str(folder), part="test")
            pick = torch.randperm(len(data), generator=generator(0, "gpu-bench", "mnist"))[:n]
            return data.subset(pick), f"MNIST test images from {folder}"
    return random_images(n, (1, 28, 28)), "random 28x28 images (MNIST files not found)"


def random_images(n: int, shape: tuple[int, ...]) -> Dataset:
    g = generator(0, "gpu-bench", "images", *shape)
    return Dataset(torch.rand(n, *shape, generator=g), torch.arange(n) % 10, tuple("0123456789"))


def split(data: Dataset, clients: int) -> list[Dataset]:
    """clients equal iid shards (a seeded permutation)."""
    order = torch.randperm(len(data), generator=generator(0, "gpu-bench", "split"))
    return [data.subset(part) for part in torch.tensor_split(order, clients)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(run, device: torch.device, rounds: int) -> tuple[float, torch.Tensor]:
    """(best seconds of `rounds` timed calls after one warm-up, the last result)."""
    out = run(0)
    best = float("inf")
    for r in range(1, rounds + 1):
        sync(device)
        start = time.perf_counter()
        out = run(r)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(label: str, model_name: str, shape, clients: list[Dataset], cfg: LocalConfig, device: torch.device,
            rounds: int) -> None:
    """Time one round of local training of every client with both engines on device and print the row."""
    with torch.device("cpu"):
        model = make_model(model_name, shape, 10, seed=0)
    model = model.to(device)
    data = [move_dataset(ds, device) for ds in clients]
    start = flat_params(model)

    def gens(r):
        return [generator(0, "gpu-bench", "local", r, i) for i in range(len(data))]

    vectorized = lambda r: local_updates(model, start, data, cfg, gens(r))  # noqa: E731
    plain = lambda r: reference_updates(model, start, data, cfg, gens(r))  # noqa: E731
    t_vec, u_vec = timed_rounds(vectorized, device, rounds)
    t_ref, u_ref = timed_rounds(plain, device, rounds)
    diff = float((u_vec - u_ref).abs().max())
    print(f"| {label} | {model_name} | {len(data)} | {t_ref:.3f} | {t_vec:.3f} | {t_ref / t_vec:.1f}x | {diff:.1e} |",
          flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per engine after one warm-up (best of)")
    parser.add_argument("--only", choices=["mnist", "cifar"], help="run one case")
    args = parser.parse_args(argv)
    device = resolve(args.device)
    if device.type == "cuda":
        deterministic()
    torch.manual_seed(0)  # nothing here draws from it; set so that no library default differs between runs
    print(f"device: {describe(device)}; torch {torch.__version__}; best of {args.rounds} round(s) after a warm-up")
    print("| case | model | clients | plain loop s/round | vectorized s/round | ratio | max abs update diff |")
    print("|---|---|---|---|---|---|---|")
    if args.only in (None, "mnist"):
        images, source = mnist_images(8000)
        compare("mnist", "cnn", (1, 28, 28), split(images, 100), LocalConfig(epochs=1, batch_size=20, lr=0.05),
                device, args.rounds)
        print(f"(mnist data: {source})")
    if args.only in (None, "cifar"):
        clients = split(random_images(1000, (3, 32, 32)), 20)
        cfg = LocalConfig(epochs=1, batch_size=25, lr=0.05)
        try:
            compare("cifar", "resnet20", (3, 32, 32), clients, cfg, device, args.rounds)
        except ConfigError as err:
            print(f"(resnet20 refused by the vectorized engine: {err}; cnn32 instead)")
            compare("cifar", "cnn32", (3, 32, 32), clients, cfg, device, args.rounds)


if __name__ == "__main__":
    main()
