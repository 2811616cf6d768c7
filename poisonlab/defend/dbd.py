"""DBD, backdoor defense via decoupling the training process (Huang, Li, Wu, Qin & Ren, "Backdoor Defense via
Decoupling the Training Process", ICLR 2022; official code github.com/SCLBD/DBD), a training-stage defense.

A backdoor is learned because the labels tie the trigger to the target class; without labels the poisoned
images' features stay with their content. DBD decouples end-to-end training into three stages:

1. Self-supervised backbone: a fresh model's body (everything up to its last nn.Linear) with a projection head
   (Linear, ReLU, Linear to ``proj_dim``, L2-normalised) is trained by SimCLR's NT-Xent loss (defend/simclr.py)
   on every training image, labels removed; temperature 0.5 (the paper's).
2. Robust head: with the backbone frozen, the model's last nn.Linear is trained on every labelled row with the
   symmetric cross-entropy SCE = alpha CE + beta RCE (Wang et al., "Symmetric Cross Entropy for Robust Learning
   with Noisy Labels", ICCV 2019; alpha 0.1, beta 1 as in DBD), RCE = -sum_k p_k log(q_k), q the one-hot label
   with its zeros clamped to 1e-4: RCE = -log(1e-4) (1 - p_y). The poisoned rows keep a high SCE loss: their
   features sit with their true class, not the target.
3. Semi-supervised fine-tune: the ``epsilon`` share (50%) of rows with the lowest SCE loss keep their labels,
   the rest lose them, and the whole model is fine-tuned by MixMatch (defend/mixmatch.py: K = 2 views,
   sharpening T 0.5, MixUp alpha 0.75, lambda_U 15 ramped up linearly, as DBD's official config).

Defaults: the paper's / the official config's, scaled to a CPU. SimCLR: ``ssl_epochs`` 20 (official: 100 of a
1,000-epoch cosine schedule) at batch ``ssl_batch_size`` 128 with a cosine schedule; ``ssl_optimizer`` "auto" is
the official SGD (momentum 0.9, weight decay 1e-4) at lr 0.1 (its 0.4 at batch 512, scaled linearly to 128) for a
model with batch norm, and Adam at lr 1e-3 for one without: SGD leaves a batch-norm-free net where it starts
(measured on the test cnn at lr 0.01 and 0.05: the NT-Xent loss stays at log(2n - 1), every projection equal, and
the linear probe of its features stays at the untrained net's, 78-81% against 77% on digits). The head:
``head_epochs`` 100 of Adam at ``head_lr`` 0.05, batch 128, on precomputed features (official: 10 epochs at lr
0.002 with augmented features; on the leaderboard's ResNet-8, whose features are small (per-dimension spread
~0.25), that head stays at 13% accuracy on MNIST, predicts the target class for everything and labels every
poisoned row: with the backbone above, why session 9's prototype reached only 35%). The fine-tune:
``finetune_epochs`` 10 passes over the labelled rows (official: 190 epochs of 1,024 steps) with Adam at
``finetune_lr`` 5e-4 (official: 0.002, which in the few hundred steps here pulls the model away from its pretrained
start: measured 84.6% -> 77.4% on MNIST, 100% -> 89.5% on the bars set, against 84.0% and 100% at 5e-4), 64
labelled and 64 unlabelled rows a step, each view a random crop (zero padding of an eighth of the side,
data/augment.py; official: 4 pixels on CIFAR-10, and a flip). The split is made once, after stage 2 (the paper; the
official code re-splits before every fine-tune epoch). SimCLR views: defend/simclr.py (random resized crop from 20%
of the area, brightness and contrast jitter; a flip only with ``flip``; no colour, greyscale or blur). The cost is
the self-supervised stage: ``details["ssl_cpu_seconds_per_epoch"]`` reports it (docs/backdoor-defenses.md).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.data.augment import augment
from poisonlab.defend.base import Defended, require
from poisonlab.defend.d_st import Projection
from poisonlab.defend.mixmatch import mixmatch_step
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.simclr import nt_xent_loss, simclr_view
from poisonlab.defend.training_loop import batch_norm_layers, epochs, fresh_model
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.models import FeatureExtractor, features, linear_head
from poisonlab.rng import generator, numpy_rng

RCE_LOG_ZERO = -math.log(1e-4)  # the one-hot label's zeros are clamped to 1e-4 in the reverse cross-entropy
SSL_OPTIMIZERS = {"sgd": 0.1, "adam": 1e-3}  # each with its default lr; "auto": sgd with batch norm, else adam


def symmetric_cross_entropy(logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.1, beta: float = 1.0,
                            reduction: str = "mean") -> torch.Tensor:
    """SCE = alpha CE(p, y) + beta RCE, RCE = -log(1e-4) (1 - p_y) (p clamped to [1e-7, 1] as the official)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    p_y = F.softmax(logits, 1).clamp(min=1e-7).gather(1, y[:, None]).squeeze(1)
    loss = alpha * ce + beta * RCE_LOG_ZERO * (1 - p_y)
    return loss.mean() if reduction == "mean" else loss


def lowest(losses: torch.Tensor, share: float) -> torch.Tensor:
    """A bool mask of the round(share * n) rows with the lowest loss (at least one; ties by index)."""
    mask = torch.zeros(len(losses), dtype=torch.bool, device=losses.device)
    mask[torch.sort(losses, stable=True).indices[:max(1, round(share * len(losses)))]] = True
    return mask


@DEFENSES.register("dbd", reference="Huang, Li, Wu, Qin & Ren, Backdoor Defense via Decoupling the Training"
                                    " Process, ICLR 2022")
class DBD:
    """A self-supervised backbone, a robust linear head, then MixMatch with the high-loss half unlabelled."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, ssl_epochs: int = 20, ssl_optimizer: str = "auto", ssl_lr: float | None = None,
                 ssl_batch_size: int = 128, temperature: float = 0.5, min_scale: float = 0.2, flip: bool = False,
                 proj_dim: int = 128, head_epochs: int = 100, head_lr: float = 0.05, alpha: float = 0.1,
                 beta: float = 1.0, epsilon: float = 0.5, finetune_epochs: int = 10,
                 finetune_lr: float = 5e-4, semi_batch_size: int = 64, lambda_u: float = 15.0):
        self.ssl_epochs = int(check_range("ssl_epochs", ssl_epochs, 1, 1000))
        if ssl_optimizer not in ("auto", *SSL_OPTIMIZERS):
            raise ConfigError(f"ssl_optimizer='{ssl_optimizer}' is not known; accepted: auto, "
                              f"{', '.join(SSL_OPTIMIZERS)}")
        self.ssl_optimizer = ssl_optimizer
        self.ssl_lr = None if ssl_lr is None else check_range("ssl_lr", ssl_lr, 0.0, None, low_open=True)
        self.ssl_batch_size = int(check_range("ssl_batch_size", ssl_batch_size, 2, None))
        self.temperature = check_range("temperature", temperature, 0.0, None, low_open=True)
        self.min_scale = check_range("min_scale", min_scale, 0.0, 1.0, low_open=True)
        if not isinstance(flip, bool):
            raise ConfigError(f"flip={flip!r} is not valid; accepted: true or false")
        self.flip = flip
        self.proj_dim = int(check_range("proj_dim", proj_dim, 1, 4096))
        self.head_epochs = int(check_range("head_epochs", head_epochs, 1, 1000))
        self.head_lr = check_range("head_lr", head_lr, 0.0, None, low_open=True)
        self.alpha = check_range("alpha", alpha, 0.0, None)
        self.beta = check_range("beta", beta, 0.0, None)
        self.epsilon = check_range("epsilon", epsilon, 0.0, 1.0, low_open=True, high_open=True)
        self.finetune_epochs = int(check_range("finetune_epochs", finetune_epochs, 0, 1000))
        self.finetune_lr = check_range("finetune_lr", finetune_lr, 0.0, None, low_open=True)
        self.semi_batch_size = int(check_range("semi_batch_size", semi_batch_size, 1, None))
        self.lambda_u = check_range("lambda_u", lambda_u, 0.0, None)

    def defend(self, *, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """A fresh model trained by the three stages; details: the rows left unlabelled (the suspected poison),
        the self-supervised stage's CPU seconds per epoch and its last loss."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        if data.x.dim() != 4:
            raise ConfigError(f"defense 'dbd' needs image data (c, h, w) for its augmentations; got samples of shape"
                              f" {tuple(data.x.shape[1:])}; accepted: image data")
        model = fresh_model(build, "dbd")
        device = model_device(model)
        x, y = data.x.to(device), data.y.to(device)
        started = time.process_time()
        ssl_loss = self.self_supervised(model, x, train_cfg, seed)
        per_epoch = (time.process_time() - started) / self.ssl_epochs
        labelled = lowest(self.fit_head(model, x, y, train_cfg, seed), self.epsilon)
        self.fine_tune(model, x, y, labelled, linear_head(model)[1].out_features, self.finetune_epochs, seed)
        progress.step("DBD done", last=True)
        return Defended(model.eval(), details={"labelled": int(labelled.sum()),
                                               "unlabelled_rows": torch.nonzero(~labelled).flatten().cpu().tolist(),
                                               "ssl_cpu_seconds_per_epoch": per_epoch, "ssl_loss": ssl_loss,
                                               "ssl_optimizer": self.optimizer_for(model)})

    def optimizer_for(self, model: nn.Module) -> str:
        """The self-supervised stage's optimizer: ssl_optimizer; for "auto" sgd when model has batch norm, else adam."""
        if self.ssl_optimizer != "auto":
            return self.ssl_optimizer
        return "sgd" if batch_norm_layers(model) else "adam"

    def self_supervised(self, model: nn.Module, x: torch.Tensor, cfg, seed: int) -> float:
        """ssl_epochs of SimCLR on every row (labels unused), the model's body trained in place; the last loss."""
        body = FeatureExtractor(model)
        head = Projection(features(model, x[:1]).shape[1], self.proj_dim, x.device, seed)
        params = [p for n, p in model.named_parameters() if not n.startswith(body.feature_layer + ".")]
        params += list(head.parameters())
        kind = self.optimizer_for(model)
        lr = self.ssl_lr if self.ssl_lr is not None else SSL_OPTIMIZERS[kind]
        opt = (torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4) if kind == "sgd"
               else torch.optim.Adam(params, lr=lr))
        schedule = cfg.model_copy(update={"lr_schedule": "cosine", "batch_size": self.ssl_batch_size})
        views = generator(seed, "dbd-views")
        loss = torch.zeros(())
        model.train()
        for _, idx in epochs(opt, schedule, len(x), self.ssl_epochs, seed, "dbd-ssl", device=x.device,
                             lr=lr, what="DBD self-supervised epoch"):
            if len(idx) < 2:
                continue
            v1 = simclr_view(x[idx], views, self.min_scale, self.flip)
            v2 = simclr_view(x[idx], views, self.min_scale, self.flip)
            loss = nt_xent_loss(head(body(v1)), head(body(v2)), self.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        return float(loss.detach())

    def fit_head(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg, seed: int) -> torch.Tensor:
        """head_epochs of SCE (Adam) on the frozen features, the last Linear in place; each row's SCE loss after."""
        _, head = linear_head(model)
        h = features(model, x)
        opt = torch.optim.Adam(head.parameters(), lr=self.head_lr)
        schedule = cfg.model_copy(update={"lr_schedule": "constant", "batch_size": 128})
        for _, idx in epochs(opt, schedule, len(h), self.head_epochs, seed, "dbd-head", device=x.device,
                             lr=self.head_lr, what="DBD head epoch"):
            opt.zero_grad(set_to_none=True)
            symmetric_cross_entropy(head(h[idx]), y[idx], self.alpha, self.beta).backward()
            opt.step()
        with torch.no_grad():
            return symmetric_cross_entropy(head(h), y, self.alpha, self.beta, reduction="none")

    def fine_tune(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor,
                  num_classes: int, count: int, seed: int) -> None:
        """count passes of MixMatch over the labelled rows (the unlabelled ones cycled beside them), whole model."""
        xs, ys, us = x[labelled], y[labelled], x[~labelled]
        if count == 0 or len(us) == 0:
            return
        b = min(self.semi_batch_size, len(xs), len(us))
        per_epoch = len(xs) // b
        total = count * per_epoch
        pad = max(1, round(x.shape[-1] / 8))
        crops, mixes, rng = generator(seed, "dbd-crops"), generator(seed, "dbd-mixup"), numpy_rng(seed, "dbd-beta")
        opt = torch.optim.Adam(model.parameters(), lr=self.finetune_lr)
        model.train()
        step = 0
        for epoch in range(count):
            xo = torch.randperm(len(xs), generator=generator(seed, "dbd-labelled", epoch), device="cpu").to(x.device)
            uo = torch.randperm(len(us), generator=generator(seed, "dbd-unlabelled", epoch), device="cpu").to(x.device)
            for i in range(per_epoch):
                rows = xo[i * b:(i + 1) * b]
                urows = uo[(torch.arange(i * b, (i + 1) * b, device=x.device)) % len(us)]
                lx, lu = mixmatch_step(model, xs[rows], ys[rows], us[urows], num_classes,
                                       lambda v: augment(v, crops, crop_padding=pad, flip=self.flip), rng, mixes)
                loss = lx + self.lambda_u * (step / total) * lu
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            progress.step(f"DBD MixMatch epoch {epoch + 1}/{count}")
        model.eval()
