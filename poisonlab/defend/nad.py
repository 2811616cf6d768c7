"""Neural Attention Distillation, NAD (Li, Lyu, Koren, Lyu, Li & Ma, "Neural Attention Distillation:
Erasing Backdoor Triggers from Deep Neural Networks", ICLR 2021), as a registered repair defense.

1. Teacher: the backdoored model fine-tuned on the defender's clean set (``teacher_epochs``).
2. Student: the backdoored model trained on the clean set with
   CE(student(x), y) + beta * sum over the chosen layers of AT(student, teacher),
   AT = mean squared difference of the two attention maps (the paper's code uses F.mse_loss), where a
   layer's attention map is A(a) = sum over channels of |a|^p, flattened per sample and divided by its
   L2 norm (+1e-6) (Zagoruyko & Komodakis 2017; summing or averaging over channels is the same after
   the normalisation). The teacher is frozen.

Layers: ``layers`` names modules whose outputs are distilled; by default the last three top-level
children of the model that contain a Conv2d (resnet20: layer1..layer3, the paper's post-group maps;
cnn: its two convolutions). A 2-D output (n, f) is its own attention map (|a|^p normalised over units).
Defaults: the paper's lr 0.1 (BackdoorBench uses 0.01, which on the small clean sets here leaves the
teacher as backdoored as the model), BackdoorBench's momentum 0.9, weight decay 1e-4 and p = 2, one
beta = 1000 for every layer (BackdoorBench: 500/1000/1000), its 10-epoch teacher and 20-epoch student
scaled to 5 and 10 epochs for a CPU; a constant learning rate where they anneal it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.loop import minibatches, sgd
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.training import TrainConfig, train


def attention_map(a: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """(n, positions): sum over channels of |a|^p, flattened per sample, divided by its L2 norm + eps."""
    am = a.abs().pow(p)
    am = am.sum(dim=1).flatten(1) if a.dim() > 2 else am
    return am / (am.norm(dim=1, keepdim=True) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """NAD's AT loss: the mean squared difference of the two attention maps."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher, p))


def default_layers(model: nn.Module, count: int = 3) -> list[str]:
    """The last `count` top-level children of model that contain a Conv2d."""
    names = [n for n, m in model.named_children() if any(isinstance(s, nn.Conv2d) for s in m.modules())]
    if not names:
        raise ConfigError(f"nad: model {type(model).__name__} has no convolutional block to distil;"
                          f" accepted: layers=[<module names>] naming the feature maps")
    return names[-count:]


def check_layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """model's named modules, after a one-line ConfigError if a name in names is not one of them."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or not n]
    if missing:
        shown = [n for n, _ in model.named_children()][:8]
        raise ConfigError(f"nad: layers {missing} are not modules of {type(model).__name__};"
                          f" accepted: names from named_modules(), e.g. {shown}")
    return modules


class Recorder:
    """Keeps the latest outputs of the named modules of a model (forward hooks, removed by close())."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = check_layers(model, names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(_module, _args, out):
            self.outputs[name] = out
        return hook

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()


@DEFENSES.register("nad", reference="Li, Lyu, Koren, Lyu, Li & Ma, Neural Attention Distillation, ICLR 2021")
class NAD:
    """Fine-tune a teacher on the clean set, then distil its attention maps into the backdoored model."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, teacher_epochs: int = 5, epochs: int = 10, lr: float = 0.1, beta: float = 1000.0,
                 p: float = 2.0, batch_size: int = 64, weight_decay: float = 1e-4, layers: list[str] | None = None):
        self.teacher_epochs = int(check_range("teacher_epochs", teacher_epochs, 1, 1000))
        self.epochs = int(check_range("epochs", epochs, 1, 1000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.beta = check_range("beta", beta, 0.0, None)
        self.p = check_range("p", p, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.weight_decay = check_range("weight_decay", weight_decay, 0.0, None)
        if layers is not None and (not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers)):
            raise ConfigError(f"nad: layers={layers!r} is not valid; accepted: a list of module names")
        self.layers = None if layers is None else list(layers)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The distilled student; details: the layers distilled and the last epoch's mean AT loss."""
        require(self, model=model, clean=clean)
        names = self.layers or default_layers(model)
        check_layers(model, names)
        teacher = trainable_copy(model)
        with progress.phase("nad teacher"):
            train(teacher, clean, TrainConfig(epochs=self.teacher_epochs, lr=self.lr, batch_size=self.batch_size,
                                              weight_decay=self.weight_decay), seed)
        teacher.eval().requires_grad_(False)
        student = trainable_copy(model)
        at = self._distil(student, teacher, clean, names, seed)
        return Defended(student, details={"layers": names, "attention_loss": at})

    def _distil(self, student: nn.Module, teacher: nn.Module, clean, names: list[str], seed: int) -> float:
        """Train student with CE + beta * sum of AT losses; returns the last epoch's mean AT loss."""
        rec_s, rec_t = Recorder(student, names), Recorder(teacher, names)
        opt = sgd(student.parameters(), self.lr, weight_decay=self.weight_decay)
        device = model_device(student)
        at_mean = 0.0
        try:
            student.train()
            for epoch in range(self.epochs):
                total, count = torch.zeros((), device=device), 0
                for x, y in minibatches(clean, self.batch_size, device, seed, "nad", epoch):
                    with torch.no_grad():
                        teacher(x)
                    ce = F.cross_entropy(student(x), y)
                    at = sum(attention_loss(rec_s.outputs[n], rec_t.outputs[n], self.p) for n in names)
                    opt.zero_grad(set_to_none=True)
                    (ce + self.beta * at).backward()
                    opt.step()
                    total, count = total + at.detach() * len(y), count + len(y)
                at_mean = float(total) / count
                progress.step(f"nad epoch {epoch + 1}/{self.epochs}: attention loss {at_mean:.4g}")
        finally:
            rec_s.close()
            rec_t.close()
            student.eval()
        return at_mean
