"""D-ST, secure training (Chen, Wu & Wang, "Effective Backdoor Defense by Exploiting Sensitivity of Poisoned
Samples", NeurIPS 2022; official code github.com/SCLBD/Effective_backdoor_defense, ST/).

1. SD module (defend/fct.py): a backdoored model's FCT score of every training row; the 20% lowest are the
   clean set D_c, the 5% highest the poisoned set D_p, the rest uncertain D_u. The backdoored model is the
   one handed to ``defend`` (or build() trained on the data with train_cfg when none is given).
2. Secure feature extractor: a fresh model's features (the input of its last nn.Linear) with a projection
   head (Linear, ReLU, Linear to ``proj_dim``, L2-normalised) trained from scratch on every row by the
   semi-supervised contrastive loss SS-CTL: the supervised contrastive loss (Khosla et al. 2020) where a
   clean anchor's positives are the views of every row of its label, while a row of D_p or D_u has only its
   own second view as positive (its label is not trusted); temperature 0.1, scaled by
   temperature / 0.07 as the official SupConLoss_Consistency does.
3. Secure classifier: with the extractor frozen, the model's last nn.Linear is trained on D_c and D_p by
   the mixed cross-entropy CE(D_c) - 0.001 CE(D_p) (the official train_classifier.py's).

The two views of a row are two seeded draws of a random rotation of up to 15 degrees and a shift of up to
12.5% (defend/fct.py's transformation, milder): SupCon's random resized crop, flip and colour jitter are
not written here (no torchvision), and a flip or colour jitter would not suit digits. Scaled to a CPU:
the official 200 extractor epochs (lr 0.5, batch 512, cosine) become ``extractor_epochs`` 20 at lr 0.05
with train_cfg's batch size and a cosine schedule (lr 0.2 collapsed the tiny test cnn); the classifier's 10
epochs at lr 5 (batch 512) become ``classifier_epochs`` 100 at lr 0.01 (momentum 0.9) on the precomputed
features (cheap: one linear layer; lr 0.1 diverged within 100 epochs, the -0.001 CE(D_p) term being unbounded).

Positives as in the official SupConLoss_Consistency: only the untrusted anchors' rows of the positive mask are
cut to their own view, so a clean anchor's positives are every row of its label, trusted or not.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require
from poisonlab.defend.d_br import backdoored_model
from poisonlab.defend.fct import check_split_ratios, distinguish, fct_scores, random_affine
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.training_loop import epochs, fresh_model
from poisonlab.device import model_device
from poisonlab.errors import check_range
from poisonlab.models import FeatureExtractor, features, linear_head
from poisonlab.models.build import init_parameters
from poisonlab.rng import generator

BASE_TEMPERATURE = 0.07


def ss_ctl_loss(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, trusted: torch.Tensor,
                temperature: float = 0.1) -> torch.Tensor:
    """The semi-supervised contrastive loss of two L2-normalised views z1, z2 (n, d) of n rows with labels y and
    trusted (bool, (n,), the rows of D_c): every one of the 2n views is an anchor; its positives are the other
    views of its label when its row is trusted, else only its own other view; the loss is
    -(temperature / 0.07) * the mean over anchors of the mean log-softmax (over all other views) of its positives."""
    n = len(y)
    z = torch.cat([z1, z2])
    same = (y[:, None] == y[None, :]) & trusted[:, None]
    same = same | torch.eye(n, dtype=torch.bool, device=y.device)
    positive = same.repeat(2, 2) & ~torch.eye(2 * n, dtype=torch.bool, device=y.device)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=y.device), float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mean_pos = (log_prob.masked_fill(~positive, 0.0)).sum(1) / positive.sum(1)
    return -(temperature / BASE_TEMPERATURE) * mean_pos.mean()


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, trusted: torch.Tensor,
                        weight: float = 0.001) -> torch.Tensor:
    """CE over the trusted rows minus weight * CE over the others (zero for an empty group)."""
    loss = logits.new_zeros(())
    if bool(trusted.any()):
        loss = loss + F.cross_entropy(logits[trusted], y[trusted])
    if bool((~trusted).any()):
        loss = loss - weight * F.cross_entropy(logits[~trusted], y[~trusted])
    return loss


class Projection(nn.Module):
    """SupCon's projection head: Linear, ReLU, Linear, then L2 normalisation; torch's default init drawn from
    generator(seed, "d-st-projection") on the CPU (models/build.py init_parameters), then moved to device."""

    def __init__(self, dim: int, out: int, device: torch.device, seed: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim, device="cpu"), nn.ReLU(), nn.Linear(dim, out, device="cpu"))
        init_parameters(self.net, generator(seed, "d-st-projection"))
        self.net.to(device)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=1)


@DEFENSES.register("d_st", reference="Chen, Wu & Wang, Effective Backdoor Defense by Exploiting Sensitivity of"
                                     " Poisoned Samples, NeurIPS 2022 (D-ST)")
class DST:
    """Split the rows by FCT, train a feature extractor by semi-supervised contrastive learning, then its head."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, clean_ratio: float = 0.2, poison_ratio: float = 0.05, extractor_epochs: int = 20,
                 extractor_lr: float = 0.05, temperature: float = 0.1, proj_dim: int = 128,
                 classifier_epochs: int = 100, classifier_lr: float = 0.01, unlearn_weight: float = 0.001,
                 extractor_batch_size: int | None = None):
        self.clean_ratio, self.poison_ratio = check_split_ratios(clean_ratio, poison_ratio)
        self.extractor_epochs = int(check_range("extractor_epochs", extractor_epochs, 1, 1000))
        self.extractor_lr = check_range("extractor_lr", extractor_lr, 0.0, None, low_open=True)
        self.temperature = check_range("temperature", temperature, 0.0, None, low_open=True)
        self.proj_dim = int(check_range("proj_dim", proj_dim, 1, 4096))
        self.classifier_epochs = int(check_range("classifier_epochs", classifier_epochs, 1, 1000))
        self.classifier_lr = check_range("classifier_lr", classifier_lr, 0.0, None, low_open=True)
        self.unlearn_weight = check_range("unlearn_weight", unlearn_weight, 0.0, None)
        self.extractor_batch_size = (None if extractor_batch_size is None
                                     else int(check_range("extractor_batch_size", extractor_batch_size, 2, None)))

    def defend(self, *, model=None, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """A fresh model: SS-CTL extractor, mixed-CE head; details: the sizes of the three sets, the rows of D_p."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        net = backdoored_model(model, data, build, train_cfg, seed, "d_st")
        split = distinguish(fct_scores(net, data.x.to(model_device(net)), seed).cpu(), self.clean_ratio,
                            self.poison_ratio)
        del net
        fresh = fresh_model(build, "d_st")
        trusted = torch.zeros(len(data), dtype=torch.bool, device="cpu")
        trusted[split.clean] = True
        self.train_extractor(fresh, data, trusted, train_cfg, seed)
        rows = torch.cat([split.clean, split.poisoned])
        self.train_head(fresh, data.subset(rows), trusted[rows], train_cfg, seed)
        return Defended(fresh.eval(), details={"clean": len(split.clean), "poisoned": len(split.poisoned),
                                               "uncertain": len(split.uncertain),
                                               "poisoned_rows": split.poisoned.tolist()})

    def train_extractor(self, model: nn.Module, data, trusted: torch.Tensor, cfg, seed: int) -> None:
        """extractor_epochs of SS-CTL on every row (two seeded views each), the model's body trained in place."""
        device = model_device(model)
        x, y, trusted = data.x.to(device), data.y.to(device), trusted.to(device)
        body = FeatureExtractor(model)
        dim = features(model, x[:1]).shape[1]
        head = Projection(dim, self.proj_dim, device, seed)
        params = [p for n, p in model.named_parameters() if not n.startswith(body.feature_layer + ".")]
        opt = torch.optim.SGD(params + list(head.parameters()), lr=self.extractor_lr, momentum=0.9, weight_decay=1e-4)
        schedule = cfg.model_copy(update={"lr_schedule": "cosine", "batch_size": self.extractor_batch_size or cfg.batch_size})
        views = generator(seed, "d-st-views")
        model.train()
        for _, idx in epochs(opt, schedule, len(x), self.extractor_epochs, seed, "d-st-extractor", device=device,
                             lr=self.extractor_lr, what="D-ST extractor epoch"):
            if len(idx) < 2:
                continue
            v1 = random_affine(x[idx], views, degrees=15.0, translate=0.125)
            v2 = random_affine(x[idx], views, degrees=15.0, translate=0.125)
            opt.zero_grad(set_to_none=True)
            ss_ctl_loss(head(body(v1)), head(body(v2)), y[idx], trusted[idx], self.temperature).backward()
            opt.step()
        model.eval()

    def train_head(self, model: nn.Module, data, trusted: torch.Tensor, cfg, seed: int) -> None:
        """classifier_epochs of the mixed cross-entropy on the frozen features of data, the last Linear in place."""
        device = model_device(model)
        _, head = linear_head(model)
        h, y, trusted = features(model, data.x.to(device)), data.y.to(device), trusted.to(device)
        opt = torch.optim.SGD(head.parameters(), lr=self.classifier_lr, momentum=0.9)
        for _, idx in epochs(opt, cfg, len(h), self.classifier_epochs, seed, "d-st-classifier", device=device,
                             lr=self.classifier_lr, what="D-ST classifier epoch"):
            opt.zero_grad(set_to_none=True)
            mixed_cross_entropy(head(h[idx]), y[idx], trusted[idx], self.unlearn_weight).backward()
            opt.step()
        progress.step("D-ST done", last=True)
