"""SSBA's encoder/decoder on the MNIST split: how many secret bits the decoder reads back, and how large the residual is.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ssba_bits.py [--data-dir ../shared/data] [--epochs 8] [--warmup 0.4] [--lr 0.003]
Trains the ``ssba`` poison's encoder and decoder on the seeded 8,000-image training part of the split that
benchmarks/backdoor_zoo.py uses (seed 0), then, on the 2,000 test digits, prints the share of bits read back
(the fixed secret; a fresh random secret per image, so a decoder that memorised one string fails it; clean
images, where chance is about 50%), the residual's L-inf and mean absolute size and the mean PSNR, and the
training's CPU time (process time, so the load of a shared machine does not inflate it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from poisonlab.data import load
from poisonlab.poison import POISONS
from poisonlab.poison.ssba import encode
from poisonlab.rng import generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=None, help="default: the poison's")
    ap.add_argument("--warmup", type=float, default=None, help="default: the poison's")
    ap.add_argument("--lr", type=float, default=None, help="default: the poison's")
    args = ap.parse_args()
    mnist = load("mnist", data_dir=str(Path(args.data_dir) / "mnist"), part="test")
    train_set, test_set = mnist.split(0.2, seed=0)
    params = {k: v for k, v in {"epochs": args.epochs, "warmup": args.warmup, "lr": args.lr}.items() if v is not None}
    poison = POISONS.get("ssba", target=0, rate=0.1, bits=args.bits, eps=args.eps, **params)
    start = time.process_time()
    poison.apply(train_set, 0)
    cpu = time.process_time() - start
    trig, x = poison.trigger, test_set.x.to(torch.float32)
    stamped = poison.triggered(test_set, 0).x
    fixed = (trig.decode(stamped) == trig.secret.long()).float().mean().item()
    secrets = torch.randint(0, 2, (len(x), args.bits), generator=generator(1, "ssba-bits", "secrets")).float()
    with torch.no_grad():
        fresh = (trig.decode(encode(trig.encoder, x, secrets)) == secrets.long()).float().mean().item()
    clean = (trig.decode(x) == trig.secret.long()).float().mean().item()
    change = stamped - x
    psnr = (10 * torch.log10(1 / change.pow(2).flatten(1).mean(dim=1).clamp_min(1e-12))).mean().item()
    print(f"ssba {args.bits} bits, eps {args.eps}, {poison.epochs} epochs, lr {poison.lr}, warm-up {poison.warmup} from {poison.eps_start}: "
          f"bits read back {100 * fixed:.1f}% (fixed secret), {100 * fresh:.1f}% (random secrets), "
          f"{100 * clean:.1f}% (clean images); residual max {change.abs().max():.3f}, mean |.| {change.abs().mean():.4f}, "
          f"PSNR {psnr:.1f} dB; training {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
