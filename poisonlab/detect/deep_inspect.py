"""DeepInspect (Chen, Fu, Zhao & Koushanfar, "DeepInspect: A Black-box Trojan Detection and Mitigation Framework
for Deep Neural Networks", IJCAI 2019).

No clean data is needed (``clean`` is used for nothing but the input shape when given):
1. model inversion: ``per_class`` substitute images per label t, each optimised from seeded noise to
   maximise the model's probability of t: minimise CE(f(x), t) + ``tv_weight`` TV(x) (Adam, ``invert_steps``);
2. a conditional generator G(z, t) (a small size-preserving conv stack, poison/generator_nets.py, fed
   ``noise_channels`` noise planes and one one-hot plane per label) learns a trigger for every label at once:
   x' = clip(x + G(z, t)) on substitute images of other labels, loss CE(f(x'), t) + ``shape_weight``
   mean |G(z, t)| (the paper's target loss and trigger-magnitude loss; the mean over pixels, so the weight does
   not depend on the image size; 3 measured on digits: at 1.2 a clean model's triggers saturate, at 6 a
   second label of the backdoored model is flagged), Adam for ``steps`` steps;
3. each label's perturbation magnitude: the mean L1 norm of G(z, t) over ``draws`` noise draws; a label whose
   trigger sends fewer than ``min_success`` (0.9) of the other labels' substitute images to it has no
   trustworthy magnitude and is never flagged (details["trigger_success"]);
4. the double MAD test: the deviation of each magnitude below the median, divided by 1.4826 times the MAD of
   the magnitudes at or below the median (the lower half's own spread; a skewed distribution's outliers on
   the small side are not masked by a wide upper half); a label with deviation factor > ``threshold`` (2) is
   a Trojan target.
Score per label: that deviation factor (0 at or above the median). Differences from the paper: no GAN
discriminator (the paper adds one to keep the triggered inputs close to the substitute data), a fixed
magnitude weight, and the model patching (fine-tuning on the generator's triggered inputs with their true
labels) is left out. Sizes scaled to a CPU: 10 images per label, 300 inversion steps, 800 generator steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.registry import DETECTORS
from poisonlab.detect.tabor import total_variation
from poisonlab.device import as_tensor, model_device
from poisonlab.errors import DataError, check_range
from poisonlab.poison.generator_nets import conv_stack, seeded
from poisonlab.rng import generator
from poisonlab.stats import MAD_TO_STD


def double_mad_factor(values: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Per value below the median: (median - v) / (1.4826 MAD_low), MAD_low the median absolute deviation of the
    values at or below the median; 0 at or above the median (float64)."""
    v = values.double()
    med = v.median()
    low = v[v <= med]
    scale = MAD_TO_STD * (low - med).abs().median()
    return ((med - v) / scale.clamp_min(floor)).clamp_min(0.0)


def invert(model: nn.Module, shape: tuple[int, ...], num_labels: int, per_class: int, steps: int, lr: float,
           tv_weight: float, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (L * per_class, c, h, w), labels): model inversion from seeded noise, one batch for every label."""
    labels = torch.arange(num_labels, device=device).repeat_interleave(per_class)
    raw = torch.randn(len(labels), *shape, generator=generator(seed, "deep_inspect", "invert"), device="cpu").to(device)
    raw.requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    for step in range(steps):
        x = torch.sigmoid(raw)
        loss = nn.functional.cross_entropy(model(x), labels) + tv_weight * total_variation(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.step(f"DeepInspect model inversion: step {step + 1}/{steps}")
    return torch.sigmoid(raw).detach(), labels


class ConditionalTrigger(nn.Module):
    """G(z, t): noise planes and one one-hot plane per label -> an additive trigger in [-1, 1] of the image's shape."""

    def __init__(self, channels: int, num_labels: int, noise_channels: int, width: int):
        super().__init__()
        self.num_labels, self.noise_channels = num_labels, noise_channels
        self.body = conv_stack(noise_channels + num_labels, channels, width)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        planes = nn.functional.one_hot(t, self.num_labels).to(z.dtype)[:, :, None, None].expand(-1, -1, *z.shape[2:])
        return torch.tanh(self.body(torch.cat([z, planes], dim=1)))


@DETECTORS.register("deep_inspect", reference="Chen et al., DeepInspect: A Black-box Trojan Detection and Mitigation "
                                              "Framework for Deep Neural Networks, IJCAI 2019")
class DeepInspect:
    """Model inversion, a conditional trigger generator, and the double MAD test on the triggers' magnitudes."""

    inspects = "model"
    requires = ("model",)

    def __init__(self, *, per_class: int = 10, invert_steps: int = 300, invert_lr: float = 0.1,
                 tv_weight: float = 0.01, steps: int = 800, batch_size: int = 64, lr: float = 0.01,
                 shape_weight: float = 3.0, noise_channels: int = 2, width: int = 16, draws: int = 20,
                 threshold: float = 2.0, min_success: float = 0.9, input_shape: tuple | list | None = None,
                 seed: int = 0):
        self.per_class = int(check_range("per_class", per_class, 1))
        self.invert_steps = int(check_range("invert_steps", invert_steps, 1))
        self.invert_lr = check_range("invert_lr", invert_lr, 0.0, low_open=True)
        self.tv_weight = check_range("tv_weight", tv_weight, 0.0)
        self.steps = int(check_range("steps", steps, 1))
        self.batch_size = int(check_range("batch_size", batch_size, 1))
        self.lr = check_range("lr", lr, 0.0, low_open=True)
        self.shape_weight = check_range("shape_weight", shape_weight, 0.0)
        self.noise_channels = int(check_range("noise_channels", noise_channels, 1))
        self.width = int(check_range("width", width, 1))
        self.draws = int(check_range("draws", draws, 1))
        self.threshold = check_range("threshold", threshold, 0.0)
        self.min_success = check_range("min_success", min_success, 0.0, 1.0)
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.seed = int(seed)

    def _shape(self, clean) -> tuple[int, ...]:
        if clean is not None:
            x = clean.x if isinstance(clean, Dataset) else as_tensor(clean)
            if x.dim() == 4:
                return tuple(x.shape[1:])
        if self.input_shape is None or len(self.input_shape) != 3:
            raise DataError("DeepInspect needs the image shape; accepted: clean images (n, c, h, w) or"
                            " input_shape=(c, h, w)")
        return self.input_shape

    def train_generator(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        num_labels: int) -> ConditionalTrigger:
        """G trained so that clip(x + G(z, t)) is classified t on substitute images of labels other than t."""
        dev = x.device
        g = generator(self.seed, "deep_inspect", "generator")
        net = seeded(lambda: ConditionalTrigger(x.shape[1], num_labels, self.noise_channels, self.width),
                     self.seed, "deep_inspect").to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        for step in range(self.steps):
            pick = torch.randint(len(x), (self.batch_size,), generator=g, device="cpu").to(dev)
            shift = torch.randint(1, num_labels, (self.batch_size,), generator=g, device="cpu").to(dev)
            t = (y[pick] + shift) % num_labels                      # a target other than the image's own label
            z = torch.randn(self.batch_size, self.noise_channels, *x.shape[2:], generator=g, device="cpu").to(dev)
            trigger = net(z, t)
            logits = model((x[pick] + trigger).clamp(0, 1))
            loss = nn.functional.cross_entropy(logits, t) + self.shape_weight * trigger.abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.step(f"DeepInspect generator: step {step + 1}/{self.steps}")
        return net.eval().requires_grad_(False)

    @torch.no_grad()
    def magnitudes(self, model: nn.Module, net: ConditionalTrigger, x: torch.Tensor, y: torch.Tensor,
                   num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean L1 norm of G(z, t), share of other labels' substitute images it sends to t) per label t."""
        g = generator(self.seed, "deep_inspect", "draws")
        norms, success = [], []
        for t in range(num_labels):
            src = x[y != t]
            z = torch.randn(self.draws, self.noise_channels, *x.shape[2:], generator=g, device="cpu").to(x.device)
            trig = net(z, torch.full((self.draws,), t, device=x.device))
            norms.append(trig.abs().flatten(1).sum(1).mean())
            stamped = (src.unsqueeze(0) + trig[:4].unsqueeze(1)).clamp(0, 1).flatten(0, 1)
            success.append((model(stamped).argmax(1) == t).float().mean())
        return torch.stack(norms).cpu(), torch.stack(success).cpu()

    def scan(self, *, data=None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """One score per label: its double MAD deviation factor (small triggers score high); flagged > threshold."""
        require(self, model=model)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        dev = model_device(frozen)
        shape = self._shape(clean)
        with torch.no_grad():
            num_labels = int(frozen(torch.zeros(1, *shape, device=dev)).shape[1])
        with progress.phase("DeepInspect"):
            x, y = invert(frozen, shape, num_labels, self.per_class, self.invert_steps, self.invert_lr,
                          self.tv_weight, self.seed, dev)
            with torch.no_grad():
                inverted = float((frozen(x).argmax(1) == y).float().mean())
            net = self.train_generator(frozen, x, y, num_labels)
            norms, success = self.magnitudes(frozen, net, x, y, num_labels)
        factor = double_mad_factor(norms)
        reached = success >= self.min_success
        flagged = (factor > self.threshold) & reached
        details = {"trigger_l1": norms.tolist(), "trigger_success": success.tolist(), "inverted_accuracy": inverted,
                   "flagged_labels": torch.nonzero(flagged).flatten().tolist()}
        if int(reached.sum()) < (num_labels + 1) // 2:
            progress.warn(f"DeepInspect: only {int(reached.sum())} of {num_labels} labels got a working trigger;"
                          " the generator did not converge (more steps, or another shape_weight)")
            details["note"] = "generator did not converge: the magnitudes are not comparable"
        return Detection(factor, flagged, details)
