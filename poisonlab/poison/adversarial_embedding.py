"""Adversarial Embedding (Tan & Shokri 2020, EuroS&P): a backdoor whose latent representation hides.

Tan and Shokri, "Bypassing backdoor detection algorithms in deep learning". The attacker controls training.
The data is poisoned as by BadNets (``rate`` of the data stamped with the trigger and relabelled; any
poisonlab trigger and target form), and the model is trained against a discriminator D that reads the
model's latent features h(x) (the input of ``feature_layer``, default the last nn.Linear) and tries to tell
poisoned rows from clean ones. Every mini-batch alternates (the paper's min-max game):
  1. D takes one Adam step on  L_D = CE(D(h(x) + n), b),  b = 1 on poisoned rows, h(x) held fixed;
  2. the model takes its optimizer step on  L = CE(f(x), y) - lambda * CE(D(h(x) + n), b)  (D held fixed),
     i.e. it keeps its accuracy while making the backdoor's latent indistinguishable from clean latents,
     which is what latent-separation defenses (activation clustering, spectral signatures) rely on.
n is Gaussian noise on D's input. Defaults follow ART's implementation (``PoisoningAttackAdversarialEmbedding``):
rate 0.05, lambda 10, D = Dense(256)-BN-LeakyReLU(0.2)-Dense(128)-BN-LeakyReLU(0.2)-Dense(2), noise std 1,
Adam lr 1e-4 (ART trains model and D jointly in one Keras graph; here they alternate as in the paper).
``apply`` returns the poisoned set; the adversarial training is ``train_model`` (poison/base.py's training
hook, called by run_centralized instead of plain training; concat injection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.models.build import init_parameters
from poisonlab.models.feature_layer import capture_input, feature_module
from poisonlab.poison.attacker_training import train_with_step
from poisonlab.poison.backdoor import Backdoor
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import Trigger
from poisonlab.rng import construction_stream, generator


def discriminator(width: int, hidden: Sequence[int], seed: int) -> nn.Sequential:
    """D: Linear-BN-LeakyReLU(0.2) per hidden width, then Linear(., 2); on the CPU, weights from the seed."""
    layers, c = [], int(width)
    with construction_stream(seed, "adversarial-embedding", "discriminator"), torch.device("cpu"):
        for h in hidden:
            layers += [nn.Linear(c, int(h)), nn.BatchNorm1d(int(h)), nn.LeakyReLU(0.2)]
            c = int(h)
        net = nn.Sequential(*layers, nn.Linear(c, 2))
    init_parameters(net, generator(seed, "adversarial-embedding", "discriminator"))
    return net


def embedding_loss(logits: torch.Tensor, y: torch.Tensor, d_logits: torch.Tensor, is_poison: torch.Tensor,
                   regularization: float) -> torch.Tensor:
    """The model's loss: CE(f(x), y) - lambda * CE(D(h(x)), b) (it maximises the discriminator's loss)."""
    return F.cross_entropy(logits, y) - regularization * F.cross_entropy(d_logits, is_poison)


def feature_width(model: nn.Module, x: torch.Tensor, feature_layer: str | None) -> int:
    """The number of features the model's feature layer receives (one eval-mode forward of two inputs)."""
    _, module = feature_module(model, feature_layer)
    seen, handle = capture_input(module)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x[:2])
    finally:
        handle.remove()
        model.train(was_training)
    return int(seen[-1].shape[1])


@POISONS.register("adversarial_embedding", reference="Tan & Shokri 2020, Bypassing backdoor detection algorithms in "
                                                     "deep learning (EuroS&P)")
@dataclass(frozen=True)
class AdversarialEmbedding(Backdoor):
    """BadNets data poison plus adversarial training against a latent discriminator (poisoned vs clean)."""

    trigger: Trigger | dict | str = field(default_factory=lambda: {"name": "patch", "params": {"size": 3}})
    rate: float | None = 0.05
    regularization: float = 10.0
    hidden: Sequence[int] = (256, 128)
    noise: float = 1.0
    disc_lr: float = 1e-4
    feature_layer: str | None = None
    trains_model = True
    name = "adversarial_embedding"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("regularization", float(self.regularization), 0.0)
        check_range("noise", float(self.noise), 0.0)
        check_range("disc_lr", float(self.disc_lr), 0.0, low_open=True)
        hidden = tuple(self.hidden)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ConfigError(f"hidden={list(hidden)} is not valid; accepted: a list of layer widths (ints >= 1)")
        object.__setattr__(self, "hidden", hidden)

    def apply(self, data, seed: int = 0) -> Poisoned:
        """The BadNets poisoned set (Backdoor.apply), named and described as this attack."""
        out = super().apply(data, seed)
        info = {**out.info, "attack": "adversarial_embedding", "regularization": float(self.regularization)}
        return Poisoned(out.data.replace(name=f"{data.name}+adversarial-embedding"), out.mask, info)

    def train_model(self, model, poisoned: Poisoned, cfg, seed: int = 0, precision: str = "fp32") -> list[float]:
        """Train model in place on the poisoned set, alternating discriminator and model steps every batch."""
        device = model_device(model)
        width = feature_width(model, poisoned.data.x.to(device), self.feature_layer)
        disc = discriminator(width, self.hidden, seed).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=float(self.disc_lr))
        is_poison = poisoned.mask.long().to(device)
        _, module = feature_module(model, self.feature_layer)
        seen, handle = capture_input(module)

        def step(xb: torch.Tensor, yb: torch.Tensor, rows: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
            seen.clear()
            logits = model(xb)
            h, b = seen[-1], is_poison[rows.to(device)]
            if len(xb) < 2:  # batch norm in D needs two rows: a last batch of one trains the classifier alone
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                return loss
            n = (torch.randn(h.shape, generator=rng, device="cpu") * float(self.noise)).to(device)  # drawn on the CPU
            opt_d.zero_grad(set_to_none=True)
            F.cross_entropy(disc(h.detach() + n), b).backward()
            opt_d.step()
            loss = embedding_loss(logits, yb, disc(h + n), b, float(self.regularization))
            loss.backward()  # the discriminator's grads it leaves are cleared before D's next step
            return loss

        try:
            return train_with_step(model, poisoned.data, cfg, seed, step, "adversarial-embedding", precision)
        finally:
            handle.remove()
