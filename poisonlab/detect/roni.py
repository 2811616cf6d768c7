"""Reject On Negative Impact (RONI): Nelson et al., "Exploiting Machine Learning to Subvert Your Spam
Filter", LEET 2008; Barreno et al., "The security of machine learning", Machine Learning 2010.

The paper's rule: for each candidate training point q, train on a trusted base set B with and
without q and measure the change on a held-out validation set V; reject q if adding it hurts:
impact(q) = metric(B + q) - metric(B) with metric = validation cross-entropy (so impact > 0 is
negative impact). Score = impact; flagged = impact > ``threshold`` (a tolerance: 0.02 nats by
default, since adding any single clean point moves the loss a little either way).

Affordable approximation used here (documented, not the paper's): (1) the learner is a
multinomial logistic-regression head on fixed features (the model's penultimate activations, the input of ``feature_layer``, default the last nn.Linear, or
raw inputs when no model is given), trained by full-batch Adam from zero, so runs are
deterministic and the only difference between B and B + q is q; (2) optionally candidates are
scored in groups of ``group_size`` (a seeded random partition; 1 = the paper's per-point rule, the
default), every sample taking its group's impact (larger groups dilute a few poisoned points);
(3) all groups' heads are trained at once as one batched tensor program.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.features import fit_heads, heads_metrics, representations, standardize
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import ConfigError, check_range
from poisonlab.rng import generator


@DETECTORS.register("roni", reference="Nelson et al., Exploiting ML to Subvert Your Spam Filter, LEET 2008 (RONI)")
class Roni:
    """Reject on negative impact: validation loss change when a candidate group joins a trusted base set."""

    inspects = "data"
    requires = ("data", "validation")

    def __init__(self, *, group_size: int = 1, threshold: float = 0.02, base_size: int = 500, steps: int = 150,
                 lr: float = 0.1, chunk: int = 64, feature_layer: str | None = None, seed: int = 0):
        self.group_size = int(check_range("group_size", group_size, 1))
        self.threshold = float(threshold)
        self.base_size = int(check_range("base_size", base_size, 1))
        self.steps, self.lr = int(check_range("steps", steps, 1)), check_range("lr", lr, 0.0, low_open=True)
        self.chunk, self.seed = int(check_range("chunk", chunk, 1)), int(seed)
        self.feature_layer = feature_layer  # module whose input is the features; None: the last nn.Linear

    def _groups(self, n: int) -> torch.Tensor:
        """(n_groups, group_size) sample positions of a seeded random partition; the last group is
        padded with repeats of its own members (same mean loss, no foreign rows)."""
        order = torch.randperm(n, generator=generator(self.seed, "roni", "groups"), device="cpu")
        n_groups = -(-n // self.group_size)
        pad = n_groups * self.group_size - n
        if pad:
            last = order[(n_groups - 1) * self.group_size:]
            order = torch.cat([order, last.repeat(pad // len(last) + 1)[:pad]])
        return order.view(n_groups, self.group_size)

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean: Dataset | None = None,
             validation: Dataset | None = None, sources=None) -> Detection:
        """Score every sample of data (candidates). validation: held-out clean data (required);
        clean: the trusted training set B (default: a seeded random part of validation, at most
        ``base_size`` and at most half; the rest of validation measures the impact)."""
        require(self, data=data, validation=validation)
        if len(validation) < 2:
            raise ConfigError("RONI needs validation: a held-out clean Dataset of at least 2 samples")
        base = clean
        if base is None:
            perm = torch.randperm(len(validation), generator=generator(self.seed, "roni", "base"), device="cpu")
            half = min(self.base_size, len(validation) // 2)
            base, validation = validation.subset(perm[:half]), validation.subset(perm[half:])
        f_data, f_base, f_val = (representations(d.x, model, self.feature_layer) for d in (data, base, validation))
        f_base, f_data, f_val = standardize(f_base, f_data, f_val)
        C = data.num_classes
        dev = f_data.device
        groups = self._groups(len(data)).to(dev)
        W0, b0 = fit_heads(f_base, base.y, C, weights=torch.ones(1, len(base), device=dev), steps=self.steps, lr=self.lr)
        _, ref = heads_metrics(W0, b0, f_val, validation.y)
        impact = torch.zeros(len(groups), device=dev)
        for start in range(0, len(groups), self.chunk):
            rows = groups[start:start + self.chunk]
            W, b = fit_heads(f_base, base.y, C, weights=torch.ones(len(rows), len(base), device=dev),
                             own_x=f_data[rows], own_y=data.y[rows], steps=self.steps, lr=self.lr)
            impact[start:start + len(rows)] = heads_metrics(W, b, f_val, validation.y)[1] - ref
        scores = torch.zeros(len(data), dtype=torch.float64, device=dev)
        scores[groups.flatten()] = impact.double().repeat_interleave(groups.shape[1])
        return Detection(scores, scores > self.threshold, {"reference_loss": float(ref), "groups": int(groups.shape[0]),
                                                           "group_size": self.group_size})
