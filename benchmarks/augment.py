"""Augmentation speed, side by side: poisonlab's whole-batch crop-and-flip (data/augment.py ``apply``) against
the per-sample loop it replaces (``F.pad``, a slice and ``torch.flip`` per image, then ``torch.stack``), on the
same draws; the outputs are checked equal before timing.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/augment.py [--batch 128] [--shape 3 32 32] [--reps 50]``
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from poisonlab.data.augment import apply, draw
from poisonlab.rng import generator


def per_sample(x: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor, p: int) -> torch.Tensor:
    """The obvious loop: pad, slice the crop, mirror; one image at a time."""
    h, w = x.shape[-2:]
    out = []
    for i in range(len(x)):
        dy, dx = int(shift[i, 0]), int(shift[i, 1])
        crop = F.pad(x[i], (p, p, p, p))[:, p + dy:p + dy + h, p + dx:p + dx + w]
        out.append(torch.flip(crop, dims=[-1]) if bool(flip[i]) else crop)
    return torch.stack(out)


def best_of(fn, reps: int) -> float:
    """The fastest of reps calls, in seconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    parser.add_argument("--padding", type=int, default=4)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    x = torch.rand(args.batch, *args.shape, generator=generator(0, "bench-augment"))
    d = draw(args.batch, generator(1, "bench-augment"), args.padding, True)
    assert torch.equal(apply(x, d), per_sample(x, d.shift, d.flip, args.padding))
    fast = best_of(lambda: apply(x, d), args.reps)
    loop = best_of(lambda: per_sample(x, d.shift, d.flip, args.padding), args.reps)
    print(f"batch {args.batch} x {tuple(args.shape)}, padding {args.padding}, {torch.get_num_threads()} thread(s):"
          f" whole-batch {fast * 1e3:.2f} ms, per-sample loop {loop * 1e3:.2f} ms, ratio {loop / fast:.1f}x")


if __name__ == "__main__":
    main()
