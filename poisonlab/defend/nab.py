"""Non-Adversarial Backdoor, NAB (Liu, Sangiovanni-Vincentelli & Yue, "Beating Backdoor Attack at Its Own
Game", ICCV 2023), as a training-stage defense: the defender plants its own backdoor, whose trigger maps
an input to its true class, and stamps that trigger on every input at inference, so it overrides the
attacker's.

1. Detect: ABL's LGA isolation (defend/abl.py: ``isolation_ratio``, 5%, of the rows with the lowest loss after
   the LGA epochs), the official code's detector (github.com/damianliumin/non-adversarial_backdoor,
   backdoor_detection_lga.py); or any registered data detector (``detector: {name, params}``, e.g. spectre,
   which the paper also names) scanning the model handed to ``defend`` (build() trained on the data when none
   is given).
2. Pseudo-label: a fresh model (build()) trained ``labeller_epochs`` on the defender's clean set labels the
   flagged rows (``labeller="clean"``: the official "VD" labeller, trained on a small clean subset); or,
   with ``labeller="rest"``, one trained on the rows the detector left (train_cfg; the undetected poison is
   still there, so on a backdoor it labels its own trigger: measured on digits, it relabelled 0 of 63 rows).
   The paper's nearest-centre labeller for self-supervised backbones is not built.
3. Plant the defensive backdoor: every flagged row takes its pseudo-label and the defender's trigger
   (``stamp="all"``), or only those whose label that changes are stamped
   (``"changed"``, the official train_nab.py; on digits it cost 29 points of clean accuracy where "all" cost
   10: with few flagged rows the model never sees the trigger on a row it must leave alone); a fresh model
   is trained on the result with train_cfg.
4. Inference: the returned model stamps the defender's trigger on every input before classifying it
   (``Stamped``), so the defensive backdoor (trigger -> true class) overrides the attacker's.

The defender's trigger: a ``size`` x ``size`` (default 2, the official) checkerboard (1 where row + column is
even, else 0) in the top-left corner of every channel. The official trigger is a 2x2 patch at 0 in the
normalised space (the dataset's mean colour); on MNIST, whose corners are already black, a constant patch can
be a no-op, so a pattern that differs from any flat background. Cost: three trainings with LGA (isolation,
labeller, final), or a scan plus two.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended, require
from poisonlab.defend.detector_spec import build_detector
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.abl import ABL, isolate, sample_losses
from poisonlab.defend.training_loop import fresh_model, optimizer
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.training import predict, train

LABELLERS = ("clean", "rest")
STAMPS = ("all", "changed")


def stamp_checkerboard(x: torch.Tensor, size: int) -> torch.Tensor:
    """x (n, c, h, w) with its top-left size x size pixels set to a 0/1 checkerboard (1 at even row + column)."""
    if x.dim() != 4 or x.shape[-1] < size or x.shape[-2] < size:
        raise ConfigError(f"nab stamps a {size}x{size} patch on images; got inputs of shape {tuple(x.shape)[1:]};"
                          f" accepted: images (c, h, w) of at least {size}x{size}")
    board = ((torch.arange(size, device=x.device)[:, None] + torch.arange(size, device=x.device)[None, :]) % 2 == 0)
    out = x.clone()
    out[..., :size, :size] = board.to(x.dtype)
    return out


class Stamped(nn.Module):
    """model applied to its input stamped with NAB's defensive trigger."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(stamp_checkerboard(x, self.size))


def plant(data: Dataset, flagged: torch.Tensor, pseudo: torch.Tensor, size: int, stamp: str = "all") -> Dataset:
    """data with its flagged rows relabelled with pseudo (one per flag) and stamped with the defensive trigger:
    every flagged row (``stamp="all"``), or only those whose label that changes (``"changed"``, the official
    train_nab.py's ``add_stamp = (label != pseudo) & isolated``)."""
    x, y = data.x.clone(), data.y.clone()
    rows = torch.nonzero(flagged).flatten()
    pseudo = pseudo.to(y.device, y.dtype)
    stamped = rows if stamp == "all" else rows[pseudo != y[rows]]
    x[stamped] = stamp_checkerboard(x[stamped], size)
    y[rows] = pseudo
    return data.replace(x=x, y=y)


@DEFENSES.register("nab", reference="Liu, Sangiovanni-Vincentelli & Yue, Beating Backdoor Attack at Its Own Game,"
                                    " ICCV 2023")
class NAB:
    """Detect suspicious rows, stamp them with a defensive trigger and their pseudo-labels, train, stamp at test."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, detector: dict | str = "lga", isolation_ratio: float = 0.05, size: int = 2,
                 labeller: str = "clean", labeller_epochs: int = 20, stamp: str = "all"):
        if detector == "lga":
            self.detector_name, self.detector = "lga", None
        else:
            self.detector_name, _, self.detector = build_detector(detector, "data")
        self.isolation_ratio = check_range("isolation_ratio", isolation_ratio, 0.0, 1.0, low_open=True, high_open=True)
        self.size = int(check_range("size", size, 1, 64))
        if labeller not in LABELLERS:
            raise ConfigError(f"labeller='{labeller}' is not known; accepted: {', '.join(LABELLERS)}")
        self.labeller = labeller
        self.labeller_epochs = int(check_range("labeller_epochs", labeller_epochs, 1, 1000))
        if stamp not in STAMPS:
            raise ConfigError(f"stamp='{stamp}' is not known; accepted: {', '.join(STAMPS)}")
        self.stamp = stamp

    def defend(self, *, model=None, data=None, clean=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """The model trained with the defensive backdoor, stamping every input; details: the rows flagged and
        how many of them the pseudo-labels relabelled."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        stamp_checkerboard(data.x[:1], self.size)  # images only: a one-line error before any training
        if self.labeller == "clean" and clean is None:
            raise ConfigError("nab: labeller='clean' needs the defender's clean set; pass defend(clean=...) or use"
                              " labeller='rest'")
        flagged = self.detect(model, data, clean, build, train_cfg, seed)
        if bool(flagged.all()):
            raise ConfigError(f"nab: detector '{self.detector_name}' flagged every training row; no clean model can"
                              " be trained for the pseudo-labels (accepted: detector params that flag fewer)")
        pseudo = self.pseudo_labels(data, flagged, clean, build, train_cfg, seed)
        final = fresh_model(build, "nab")
        train(final, plant(data, flagged, pseudo, self.size, self.stamp), train_cfg, seed=seed)
        final.eval()
        relabelled = int((pseudo.to(data.y.device) != data.y[flagged]).sum())
        return Defended(Stamped(final, self.size), details={"detector": self.detector_name, "flagged": int(flagged.sum()),
                                                            "relabelled": relabelled})

    def detect(self, model, data: Dataset, clean, build, train_cfg, seed: int) -> torch.Tensor:
        """(n,) bool flags of the suspicious rows: ABL's LGA isolation, or the detector's scan of the given model
        (a fresh one trained on data when none is given)."""
        if self.detector is None:
            return lga_isolation(data, build, train_cfg, self.isolation_ratio, seed)
        scout = model
        if scout is None:
            scout = fresh_model(build, "nab")
            train(scout, data, train_cfg, seed=seed)
        return self.detector.scan(data=data, model=scout, validation=clean).flagged.to(data.y.device)

    def pseudo_labels(self, data: Dataset, flagged: torch.Tensor, clean, build, train_cfg, seed: int) -> torch.Tensor:
        """The labeller's predictions on the flagged rows: a fresh model trained on the defender's clean set
        (labeller_epochs epochs) or on the rows not flagged (train_cfg's epochs)."""
        if not bool(flagged.any()):
            return data.y[:0]
        labeller = fresh_model(build, "nab")
        if self.labeller == "clean":
            train(labeller, clean, train_cfg.model_copy(update={"epochs": self.labeller_epochs}), seed=seed)
        else:
            train(labeller, data.subset(torch.nonzero(~flagged).flatten()), train_cfg, seed=seed)
        return predict(labeller, data.x[flagged])


def lga_isolation(data: Dataset, build, train_cfg, ratio: float, seed: int) -> torch.Tensor:
    """(n,) bool flags of the ratio share of rows with the lowest loss after ABL's LGA isolation (defend/abl.py)."""
    abl = ABL(isolation_ratio=ratio)
    model = fresh_model(build, "nab")
    x, y = data.x.to(model_device(model)), data.y.to(model_device(model))
    abl.isolation(model, optimizer(model, train_cfg), x, y, train_cfg, seed)
    flags = torch.zeros(len(data), dtype=torch.bool, device=data.y.device)
    flags[isolate(sample_losses(model, x, y), ratio).to(data.y.device)] = True
    return flags
