"""NEO (Udeshi, Peng, Woo, Loh, Rawshan & Chattopadhyay, "Model Agnostic Defence against Backdoor Attacks in
Machine Learning", IEEE Transactions on Reliability 2022; arXiv:1908.02203).

An input-level, black-box detector of localised (patch) triggers. For each input x with prediction y:
1. dominant colour: the most frequent colour of x (each channel quantised to ``levels`` levels; the mean
   colour of the pixels of that bin);
2. occlusion search: a ``block`` x ``block`` square, slid over x with ``stride`` (the last row and column
   of positions always included, so any trigger up to block - stride + 1 pixels wide is covered whole by
   one position), is painted with the dominant colour; the positions where the prediction leaves y are
   the candidate trigger positions (at most ``candidates`` kept, lowest remaining probability of y first);
3. trigger confirmation: x's pixels under a candidate block are pasted on ``confirm_images`` clean images
   (those not predicted y); if a share >= ``confirm`` of them now predict y, the block is a trigger, x is
   flagged, and its restored prediction is the model's prediction with that block occluded.
Score = the highest confirmation share over the candidates (0 without a flip). ``input_filter`` with
``detector: neo`` refuses the flagged inputs; ``details["restored"]`` holds every input's restored
prediction (the model's own prediction where nothing is flagged).

Differences from the paper: the dominant colour is the mode of a colour histogram (the paper takes the
largest k-means cluster's centre); no trigger cache (the paper stores confirmed triggers to skip the search
on later inputs); ``confirm`` (0.5, a majority of the clean images) is ours, the paper's confirmation counts
a flip of the clean images. Block 5, stride 2: a 3x3 patch on 28x28 MNIST in 169 occlusions per input.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import DataError, check_range
from poisonlab.rng import generator
from poisonlab.training import predict_logits


def dominant_colour(x: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """(n, c): per image, the mean colour of the pixels in its most frequent quantised colour bin."""
    n, c = x.shape[:2]
    q = (x.clamp(0, 1) * (levels - 1)).round().long().flatten(2)                  # (n, c, hw)
    codes = (q * (levels ** torch.arange(c, device=x.device)).view(1, c, 1)).sum(dim=1)   # (n, hw)
    mode = torch.mode(codes, dim=1).values
    inside = (codes == mode[:, None]).to(x.dtype)                                  # (n, hw)
    return (x.flatten(2) * inside[:, None]).sum(dim=2) / inside.sum(dim=1, keepdim=True)


def block_positions(h: int, w: int, block: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the block x block squares, every stride pixels, the last row and column included."""
    def starts(size: int) -> list[int]:
        last = max(0, size - block)
        return sorted(set(range(0, last + 1, stride)) | {last})
    return [(i, j) for i in starts(h) for j in starts(w)]


def occlude(x: torch.Tensor, colour: torch.Tensor, i: int, j: int, block: int) -> torch.Tensor:
    """A copy of x with the block at (i, j) painted with colour (n, c) (one colour per image)."""
    out = x.clone()
    out[:, :, i:i + block, j:j + block] = colour[:, :, None, None]
    return out


@DETECTORS.register("neo", reference="Udeshi et al., Model Agnostic Defence against Backdoor Attacks in Machine "
                                     "Learning (NEO), IEEE Trans. Reliability 2022")
class Neo:
    """Occlude blocks with the dominant colour; a flip whose block, pasted on clean images, flips them is a trigger."""

    inspects = "inputs"
    requires = ("data", "model", "clean")

    def __init__(self, *, block: int = 5, stride: int = 2, candidates: int = 3, confirm_images: int = 20,
                 confirm: float = 0.5, levels: int = 16, batch_size: int = 2048, seed: int = 0):
        self.block = int(check_range("block", block, 1))
        self.stride = int(check_range("stride", stride, 1))
        self.candidates = int(check_range("candidates", candidates, 1))
        self.confirm_images = int(check_range("confirm_images", confirm_images, 1))
        self.confirm = check_range("confirm", confirm, 0.0, 1.0, low_open=True)
        self.levels = int(check_range("levels", levels, 2, 256))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.seed = int(seed)

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score = the best candidate block's confirmation share; flagged at >= confirm; details: restored labels."""
        require(self, data=data, model=model, clean=clean)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        dev = model_device(frozen)
        x, pool = _images(data, "the scanned inputs").to(dev), _images(clean, "the clean set").to(dev)
        if x.shape[1:] != pool.shape[1:]:
            raise DataError(f"NEO: inputs {tuple(x.shape[1:])} and clean images {tuple(pool.shape[1:])} differ")
        logits = predict_logits(frozen, x, self.batch_size)
        pred = logits.argmax(1).to(dev)
        cands = self._candidates(frozen, x, pred)
        pick = torch.randperm(len(pool), generator=generator(self.seed, "neo"), device="cpu")[:4 * self.confirm_images]
        pool = pool[pick.to(dev)]
        pool_pred = predict_logits(frozen, pool, self.batch_size).argmax(1).to(dev)
        shares = self._confirmations(frozen, x, pred, cands, pool, pool_pred)
        scores = torch.zeros(len(x), dtype=torch.float64, device="cpu")
        best: list = [None] * len(x)
        for (k, i, j), share in zip(((k, i, j) for k, c in enumerate(cands) for i, j in c), shares):
            if share > scores[k]:
                scores[k], best[k] = share, [i, j]
        flagged = scores >= self.confirm
        restored = pred.cpu().clone()
        colour = dominant_colour(x, self.levels)
        hit = torch.nonzero(flagged).flatten().tolist()
        if hit:
            fixed = torch.cat([occlude(x[k:k + 1], colour[k:k + 1], *best[k], self.block) for k in hit])
            restored[hit] = predict_logits(frozen, fixed, self.batch_size).argmax(1).cpu()
        return Detection(scores, flagged, {"restored": restored.tolist(),
                                           "block_at": [b if f else None for b, f in zip(best, flagged.tolist())],
                                           "candidates": [len(c) for c in cands]})

    def _candidates(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor) -> list[list[tuple[int, int]]]:
        """Per input, up to ``candidates`` positions whose occlusion changes its prediction (lowest p(y) first)."""
        positions = block_positions(x.shape[2], x.shape[3], self.block, self.stride)
        colour = dominant_colour(x, self.levels)
        probs, flips = [], []
        for step, (i, j) in enumerate(positions):
            progress.step(f"NEO occlusion {step + 1}/{len(positions)}")
            out = predict_logits(model, occlude(x, colour, i, j, self.block), self.batch_size).to(x.device)
            probs.append(out.softmax(1).gather(1, pred[:, None]).squeeze(1))
            flips.append(out.argmax(1) != pred)
        probs, flips = torch.stack(probs, 1).cpu(), torch.stack(flips, 1).cpu()       # (n, positions)
        order = torch.argsort(torch.where(flips, probs, torch.full_like(probs, 2.0)), dim=1, stable=True)
        return [[positions[int(p)] for p in order[k, :self.candidates] if flips[k, p]] for k in range(len(x))]

    def _confirmations(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, cands: list, pool: torch.Tensor,
                       pool_pred: torch.Tensor, chunk: int = 64) -> list[float]:
        """Per candidate (input k, block at (i, j)), in order: the share of up to confirm_images clean images not
        predicted pred[k] that predict pred[k] once x[k]'s block is pasted on them (0 where none is left)."""
        others = {int(y): pool[pool_pred != y][:self.confirm_images] for y in pred.unique().tolist()}
        jobs = [(k, i, j) for k, c in enumerate(cands) for i, j in c]
        shares: list[float] = []
        b = self.block
        for start in range(0, len(jobs), chunk):
            batch, owners = [], []
            for k, i, j in jobs[start:start + chunk]:
                pasted = others[int(pred[k])].clone()
                pasted[:, :, i:i + b, j:j + b] = x[k, :, i:i + b, j:j + b]
                batch.append(pasted)
                owners.append(len(pasted))
            out = predict_logits(model, torch.cat(batch), self.batch_size).argmax(1) if batch else None
            at = 0
            for (k, _, _), m in zip(jobs[start:start + chunk], owners):
                shares.append(float((out[at:at + m] == pred[k]).float().mean()) if m else 0.0)
                at += m
        return shares


def _images(x, what: str) -> torch.Tensor:
    x = x.x if isinstance(x, Dataset) else as_tensor(x)
    if x.dim() != 4 or len(x) == 0:
        raise DataError(f"NEO needs images (n, c, h, w) for {what}; got shape {tuple(x.shape)}")
    return x.float()
