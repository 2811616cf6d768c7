"""Blind backdoor (Bagdasaryan & Shmatikov 2021, USENIX Security): the attacker poisons the loss computation.

Bagdasaryan and Shmatikov, "Blind backdoors in deep learning models". The attacker never sees the data or
the model; their code replaces the training loss. For every mini-batch (x, y) it synthesises backdoor inputs
on the fly, x* = trigger(x), labelled y* = the backdoor task's label, and trains on two tasks at once:
    L = alpha * L_main + (1 - alpha) * L_backdoor,   L_main = CE(f(x), y),  L_backdoor = CE(f(x*), y*),
with alpha chosen per batch by MGDA (the multiple-gradient descent algorithm; Sener & Koltun 2018,
"Multi-task learning as multi-objective optimization", NeurIPS): the weights whose combined gradient has
the smallest norm. For two tasks the Frank-Wolfe step is exact (Sener & Koltun, Algorithm 1):
    alpha = clamp(((g2 - g1) . g2) / ||g1 - g2||^2, 0, 1),   g1 = grad L_main, g2 = grad L_backdoor
(over every trainable parameter, as the authors' backdoors101 code does). As there, each gradient is first
divided by a normaliser (``normalize``: ``loss`` = min(L, 10), their MNIST setting and the default; ``l2`` =
||g||; ``loss+`` = min(L ||g||, 10); ``none``) and alpha is kept in [0.001, 0.999] so neither task is ever
dropped; the weights then multiply the raw losses. ``alpha`` given as a number fixes the weight instead (the
paper's fixed-coefficient baseline). No training sample is changed: ``apply`` returns the data as is, and the
attack lives in ``train_model`` (poison/base.py's training hook; run_centralized calls it, concat injection).

The backdoor task (the paper's "complex" backdoors, which switch the model to another task) is ``target``:
one class (all-to-one), ``all_to_all`` (y -> y + 1 mod C), ``{source: target}``, or a label task of the true
class, ``parity`` (y mod 2) or ``upper_half`` (y >= C / 2, "is the digit > 4"); poison/targets.py defines them.
Rows whose class has no task label (the target itself; classes a task leaves unchanged) are left out of
L_backdoor, and the ASR counts the others against their own task label. ``semantic`` instead takes the paper's
semantic form: no trigger pixels, the backdoor inputs are a natural subpopulation (poison/semantic.py's
definition, e.g. the thickest 30% of the 7s), labelled ``target`` in L_backdoor and left out of L_main.
Not built: tasks computed from the input itself (the paper's counting / MultiMNIST sum), physical triggers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.device import host
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.attacker_training import gradients, train_with_step, trainable
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned
from poisonlab.poison.semantic import SemanticBackdoor
from poisonlab.poison.targets import check_classes, normalise_target, target_map
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


def flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """The dot product of two gradients given as lists of per-parameter tensors."""
    return sum((x * y).sum() for x, y in zip(a, b))


def mgda_two_tasks(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> float:
    """alpha in [0, 1] minimising ||alpha g1 + (1 - alpha) g2||^2 (Sener & Koltun 2018, two tasks, exact).

    Equal gradients leave every alpha optimal: 0.5 is returned then.
    """
    diff = [x - y for x, y in zip(g1, g2)]
    denom = float(flat_dot(diff, diff))
    if denom == 0.0:
        return 0.5
    return min(1.0, max(0.0, float(flat_dot([-d for d in diff], g2)) / denom))


NORMALIZERS = ("loss", "l2", "loss+", "none")
BOUNDS = (0.001, 0.999)  # backdoors101 keeps both tasks: alpha never reaches 0 or 1
FORWARDS = ("joint", "separate")  # one forward pass of [x; x*], or one each (backdoors101)
DEFAULT_TRIGGER = {"name": "patch", "params": {"size": 3}}


def normaliser(kind: str, loss: torch.Tensor, grads: list[torch.Tensor]) -> float:
    """What a task's gradient is divided by before MGDA (backdoors101's gradient_normalizers)."""
    if kind == "none":
        return 1.0
    norm = float(torch.sqrt(flat_dot(grads, grads)))
    value = float(loss.detach())
    return {"loss": min(value, 10.0), "l2": norm, "loss+": min(value * norm, 10.0)}[kind]


def mgda_weight(kind: str, losses: tuple[torch.Tensor, torch.Tensor],
                grads: tuple[list[torch.Tensor], list[torch.Tensor]]) -> float:
    """The main task's weight: MGDA on the normalised gradients, kept in BOUNDS."""
    scaled = [[g / (normaliser(kind, loss, gs) + 1e-5) for g in gs] for loss, gs in zip(losses, grads)]
    return min(BOUNDS[1], max(BOUNDS[0], mgda_two_tasks(*scaled)))


@POISONS.register("blind_backdoor", reference="Bagdasaryan & Shmatikov 2021, Blind backdoors in deep learning models "
                                              "(USENIX Security); MGDA: Sener & Koltun 2018")
@dataclass(frozen=True)
class BlindBackdoor(Poison):
    """Loss poisoning: each batch also trains a backdoor task (trigger(x) or natural inputs -> task label), MGDA-balanced."""

    trigger: Trigger | dict | str | None = None
    target: int | str | dict = 0
    alpha: float | None = None
    normalize: str = "loss"
    semantic: dict | SemanticBackdoor | None = None
    forward: str = "joint"
    trains_model = True
    name = "blind_backdoor"

    def __post_init__(self) -> None:
        target = normalise_target(self.target)
        object.__setattr__(self, "target", target if not isinstance(target, tuple) else {s: t for s, t in target})
        if self.semantic is None:
            object.__setattr__(self, "trigger", make_trigger(DEFAULT_TRIGGER if self.trigger is None else self.trigger))
        else:
            object.__setattr__(self, "semantic", semantic_members(self.semantic, self.target, self.trigger))
        if self.alpha is not None:
            check_range("alpha", float(self.alpha), 0.0, 1.0)
        if self.normalize not in NORMALIZERS:
            raise ConfigError(f"normalize={self.normalize!r} is not known; accepted: {', '.join(NORMALIZERS)}")
        if self.forward not in FORWARDS:
            raise ConfigError(f"forward={self.forward!r} is not known; accepted: {', '.join(FORWARDS)}")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target) pairs whose test flips are reported: the semantic source, or a per-source mapping."""
        if self.semantic is not None:
            return self.semantic.flip_pairs
        if isinstance(self.target, dict):
            return tuple(sorted((int(s), int(t)) for s, t in self.target.items()))
        return ()

    def task_map(self, num_classes: int) -> torch.Tensor:
        """(C,) long: the backdoor-task label of each true class, -1 where a class has no backdoor row."""
        return torch.tensor(target_map(self.target, num_classes), dtype=torch.long, device="cpu")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """The data unchanged (the attack is in the loss): an all-False mask."""
        if isinstance(self.target, int) and not 0 <= self.target < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        check_classes(self.target, data.num_classes, None, data.name)
        target = self.target if not isinstance(self.target, dict) else {str(s): t for s, t in self.target.items()}
        backdoor = ({"semantic": {"source": int(self.semantic.source), "property": self.semantic.property,
                                  "quantile": self.semantic.quantile, "above": self.semantic.above}}
                    if self.semantic is not None else {"trigger": self.trigger.to_dict()})
        info = {"attack": "blind_backdoor", "count": 0, "target": target, **backdoor,
                "balance": f"mgda ({self.normalize})" if self.alpha is None else f"fixed alpha {float(self.alpha)}"}
        return Poisoned(data.replace(name=f"{data.name}+blind-backdoor-loss"), torch.zeros(len(data), dtype=torch.bool),
                        info)

    def train_model(self, model, poisoned: Poisoned, cfg, seed: int = 0, precision: str = "fp32") -> list[float]:
        """Train model in place with the blind-backdoor loss on every batch (attacker_training.train_with_step)."""
        params = trainable(model)
        data = poisoned.data
        tmap = self.task_map(data.num_classes)
        members = None
        if self.semantic is not None:  # the natural backdoor inputs, by row of the training set
            members = torch.zeros(len(data), dtype=torch.bool, device="cpu")
            with host():  # computed on the host, as all data preparation (device.py)
                members[self.semantic.members(data)] = True

        def step(xb: torch.Tensor, yb: torch.Tensor, rows: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
            x_main, y_main, x_back, y_back = self.split_batch(xb, yb, rows, rng, tmap, members)
            if len(y_back) == 0:
                main = F.cross_entropy(model(x_main), y_main)
                main.backward()
                return main
            return self.balanced_step(model, params, (x_main, y_main), (x_back, y_back))

        return train_with_step(model, data, cfg, seed, step, "blind-backdoor", precision)

    def split_batch(self, xb, yb, rows, rng, tmap, members):
        """(x_main, y_main, x_back, y_back): the main task's rows and the backdoor task's synthesised rows.

        Trigger form: the whole batch for the main task; the backdoor copy is trigger(x) of the rows whose class
        has a task label, labelled with it. Semantic form: the member rows (the natural feature) are the backdoor
        rows, labelled target, and are left out of the main task (their true label would contradict it).
        """
        if members is not None:
            member = members[rows].to(yb.device)
            return xb[~member], yb[~member], xb[member], torch.full_like(yb[member], int(self.target))
        labels = tmap.to(yb.device)[yb.long()]
        keep = labels >= 0
        if not bool(keep.any()):
            return xb, yb, xb[:0], yb[:0]
        with host():  # synthesised on the host, as all stamping (device.py), then moved
            stamped = self.trigger(xb[keep].detach().cpu(), rng).to(xb.device)
        return xb, yb, stamped, labels[keep].to(yb.dtype)

    def losses(self, model, main_batch, back_batch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(L_main or None without main rows, L_backdoor), from one forward pass of both batches stacked
        (``forward: joint``) or from one pass each (``separate``, backdoors101's compute_normal_loss and
        compute_backdoor_loss); the two differ only on models with batch norm."""
        n = len(main_batch[1])
        if n == 0:
            return None, F.cross_entropy(model(back_batch[0]), back_batch[1])
        if self.forward == "joint":
            out = model(torch.cat([main_batch[0], back_batch[0]]))
            return F.cross_entropy(out[:n], main_batch[1]), F.cross_entropy(out[n:], back_batch[1])
        return (F.cross_entropy(model(main_batch[0]), main_batch[1]),
                F.cross_entropy(model(back_batch[0]), back_batch[1]))

    def balanced_step(self, model, params, main_batch, back_batch) -> torch.Tensor:
        """Set .grad to alpha g_main + (1 - alpha) g_backdoor (alpha by MGDA unless fixed); the weighted loss."""
        main, backdoor = self.losses(model, main_batch, back_batch)
        if main is None:
            backdoor.backward()
            return backdoor
        g_main, g_back = gradients(main, params), gradients(backdoor, params)
        a = (mgda_weight(self.normalize, (main, backdoor), (g_main, g_back)) if self.alpha is None
             else float(self.alpha))
        for p, gm, gb in zip(params, g_main, g_back):
            p.grad = a * gm + (1 - a) * gb
        return a * main.detach() + (1 - a) * backdoor.detach()

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The backdoor inputs of the test set with their TRUE labels: every input with the trigger (the ASR counts
        those whose class has a task label), or the semantic members (the held-out natural feature)."""
        if self.semantic is not None:
            return self.semantic.triggered(test_set, seed)
        return test_set.replace(x=self.trigger(test_set.x, generator(seed, "blind-backdoor", "test-stamp")),
                                name=f"{test_set.name}+trigger")


SEMANTIC_KEYS = ("source", "property", "quantile", "above")


def semantic_members(spec, target, trigger) -> SemanticBackdoor:
    """The semantic form's subpopulation (poison/semantic.py's definition), refusing a trigger or a non-int target."""
    if trigger is not None:
        raise ConfigError("blind_backdoor with semantic has no trigger (its backdoor inputs are natural); "
                          "accepted: trigger or semantic, not both")
    if not isinstance(target, int):
        raise ConfigError(f"blind_backdoor with semantic needs one target class; got target={target!r}")
    if isinstance(spec, SemanticBackdoor):  # rebuilt from its own fields (dataclasses.replace)
        spec = {k: getattr(spec, k) for k in SEMANTIC_KEYS}
    if not isinstance(spec, dict) or "source" not in spec:
        raise ConfigError(f"semantic={spec!r} is not valid; accepted: {{source: class, property: ink|slant|width, "
                          "quantile: (0, 1), above: bool}} (the target is blind_backdoor's own)")
    unknown = sorted(set(spec) - set(SEMANTIC_KEYS))
    if unknown:
        raise ConfigError(f"semantic has unknown key(s) {', '.join(map(str, unknown))}; accepted: {', '.join(SEMANTIC_KEYS)}")
    return SemanticBackdoor(**spec, target=target)
