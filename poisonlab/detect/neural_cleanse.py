"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in
Neural Networks", IEEE S&P 2019).

For every label t, reverse-engineer the smallest trigger that sends clean inputs to t:
x' = (1 - m) * x + m * p with mask m in [0,1]^(h,w) and pattern p in [0,1]^(c,h,w),
minimise CE(f(x'), t) + lambda_t * |m|_1. lambda_t is adapted as in the paper: start at
``init_cost``; every ``patience`` steps, multiply by 1.5 if the attack success on the batch
stayed >= ``success`` (99%), divide by 1.5^1.5 otherwise. The mask kept is the smallest L1 norm
seen with success >= ``success``. Outlier test on the L1 norms: anomaly index
|norm_t - median| / (1.4826 * MAD); labels whose norm is below the median with index > 2
are flagged as backdoor targets.

Affordability: all labels are optimised together in one batch (the model sees (labels x
batch) images per step), for ``steps`` Adam steps on a small clean sample. The caller's
model is copied and frozen, never changed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import DataError, check_range
from poisonlab.rng import generator
from poisonlab.device import as_tensor, model_device
from poisonlab.stats import anomaly_index


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """x' = (1 - mask) * x + mask * pattern (broadcast over the batch)."""
    return (1.0 - mask) * x + mask * pattern


@DETECTORS.register("neural_cleanse",
                    reference="Wang et al., Neural Cleanse: Identifying and Mitigating Backdoor Attacks in NNs, S&P 2019")
class NeuralCleanse:
    """Reverse-engineer a minimal trigger per label (L1 mask, adaptive cost); MAD anomaly index > 2 flags."""

    inspects = "model"
    requires = ("model", "clean")
    reverses_triggers = True   # details carry "masks", "patterns", "flagged_labels" (defend/trigger_unlearning.py)

    def __init__(self, *, steps: int = 800, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                 success: float = 0.99, patience: int = 10, threshold: float = 2.0, samples: int = 512,
                 seed: int = 0):
        self.steps = int(check_range("steps", steps, 1))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.lr = check_range("lr", lr, 0.0, low_open=True)
        self.init_cost = check_range("init_cost", init_cost, 0.0)
        self.success = check_range("success", success, 0.0, 1.0)
        self.patience = int(check_range("patience", patience, 1))
        self.threshold = check_range("threshold", threshold, 0.0)
        self.samples = int(check_range("samples", samples, 1))
        self.seed = int(seed)

    def reverse_triggers(self, model: nn.Module, clean: torch.Tensor, num_classes: int):
        """(masks (L, 1, h, w), patterns (L, c, h, w), norms (L,)) of the smallest successful triggers.

        Runs on the model's device (clean is moved there); each step's batch is drawn on the CPU and moved."""
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        dev = model_device(frozen)
        clean = clean.to(dev)
        L, (c, h, w) = num_classes, clean.shape[1:]
        g = generator(self.seed, "neural_cleanse")
        m_raw = torch.zeros(L, 1, h, w, requires_grad=True, device=dev)
        p_raw = torch.zeros(L, c, h, w, requires_grad=True, device=dev)
        opt = torch.optim.Adam([m_raw, p_raw], lr=self.lr, betas=(0.5, 0.9))
        cost = torch.full((L,), self.init_cost, dtype=torch.float32, device=dev)
        targets = torch.arange(L, device=dev).repeat_interleave(min(self.batch_size, len(clean)))
        best_norm = torch.full((L,), float("inf"), device=dev)
        best_mask = torch.sigmoid(m_raw.detach()).clone()
        best_pattern = torch.sigmoid(p_raw.detach()).clone()
        hits = torch.zeros(L, device=dev)
        for step in range(self.steps):
            pick = torch.randint(len(clean), (min(self.batch_size, len(clean)),), generator=g, device="cpu")
            xb = clean[pick.to(dev)]
            mask, pattern = torch.sigmoid(m_raw), torch.sigmoid(p_raw)
            stamped = apply_trigger(xb.unsqueeze(0), mask.unsqueeze(1), pattern.unsqueeze(1))
            logits = frozen(stamped.flatten(0, 1))
            ce = nn.functional.cross_entropy(logits, targets, reduction="none").view(L, -1).mean(dim=1)
            norms = mask.flatten(1).sum(dim=1)
            opt.zero_grad(set_to_none=True)
            (ce + cost * norms + self.regulariser(frozen, xb, mask, pattern)).sum().backward()
            opt.step()
            with torch.no_grad():
                acc = (logits.argmax(1) == targets).float().view(L, -1).mean(dim=1)
                ok = acc >= self.success
                better = ok & (norms < best_norm)
                best_norm = torch.where(better, norms, best_norm)
                pick = better[:, None, None, None]  # torch.where, not boolean indexing: no host sync per step
                best_mask, best_pattern = torch.where(pick, mask, best_mask), torch.where(pick, pattern, best_pattern)
                hits += ok.float()
                progress.step(f"step {step + 1}/{self.steps}: {int((best_norm < float('inf')).sum())} of {L}"
                              f" classes have a trigger reaching {self.success:.0%}")
                if (step + 1) % self.patience == 0:
                    up = hits >= self.patience
                    cost = torch.where(up, torch.where(cost == 0, torch.full_like(cost, self.init_cost), cost * 1.5),
                                       cost / 1.5 ** 1.5)
                    hits.zero_()
        never = torch.isinf(best_norm)
        final_mask = torch.sigmoid(m_raw.detach())
        best_mask[never] = final_mask[never]
        best_pattern[never] = torch.sigmoid(p_raw.detach())[never]
        best_norm = torch.where(never, final_mask.flatten(1).sum(dim=1), best_norm)
        return best_mask, best_pattern, best_norm, ~never

    def regulariser(self, model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor):
        """Extra loss per label (L,) added to CE + cost * |m|_1 at each step: none here; TABOR (detect/tabor.py)
        adds its regularisers. model is the frozen copy, x the step's clean batch, mask (L, 1, h, w)."""
        return 0.0

    def statistic(self, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, patterns: torch.Tensor,
                  norms: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(the per-label value the MAD test reads, low = suspicious; extra details): the mask L1 norms here."""
        return norms, {}

    def clean_images(self, clean) -> torch.Tensor:
        """At most ``samples`` clean images (n, c, h, w), float, drawn with the seed; a DataError otherwise."""
        x = clean.x if isinstance(clean, Dataset) else as_tensor(clean)
        if x.dim() != 4 or len(x) == 0:
            raise DataError(f"{type(self).__name__} needs clean images (n, c, h, w); got shape {tuple(x.shape)}")
        if len(x) > self.samples:
            pick = torch.randperm(len(x), generator=generator(self.seed, "neural_cleanse", "sample"), device="cpu")
            x = x[pick.to(x.device)[:self.samples]]
        return x.float()

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """One score per label (the signed anomaly index); flags labels with small masks and index > threshold.

        clean: clean images (or a Dataset) the defender holds; at most ``samples`` are used.
        """
        require(self, model=model, clean=clean)
        x = self.clean_images(clean).to(model_device(model))
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        masks, patterns, norms, reached = self.reverse_triggers(model, x, num_classes)
        value, extra = self.statistic(model, x, masks, patterns, norms)
        masks, patterns, norms, reached = masks.cpu(), patterns.cpu(), norms.cpu(), reached.cpu()
        index = anomaly_index(value.cpu())
        flagged = index > self.threshold
        return Detection(index, flagged, {"mask_l1": norms.tolist(), "reached_success": reached.tolist(),
                                          "masks": masks, "patterns": patterns, **extra,
                                          "flagged_labels": torch.nonzero(flagged).flatten().tolist()})
