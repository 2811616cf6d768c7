"""The experiment schema (pydantic): one document for centralized and federated experiments.

The sections that are also runtime configs (TrainConfig, Injection, LocalConfig, Schedule, the
adversary's and the federation's settings) are defined once, in their own modules of this package
(config/train.py, injection.py, local.py, schedule.py, adversary.py, federation.py), and used here as
they are. Unknown keys and bad values are rejected; ``load.py`` turns pydantic's errors into one-line
ConfigErrors with the key path, the bad value and the nearest valid names. Component names
(dataset, model, poison, attack, aggregator, detector, partition) are checked against their
registries after parsing, in ``validate.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from poisonlab.config.adversary import AdversaryConfig
from poisonlab.config.federation import FederatedTraining
from poisonlab.config.injection import Injection
from poisonlab.config.train import TrainConfig


class Strict(BaseModel):
    """Base: unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Component(Strict):
    """A registered component by name with its parameters, e.g. {name: krum, params: {f: 2}}."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DataSpec(Strict):
    """Which dataset, its loader parameters, and the seeded stratified test split; size: use a seeded stratified
    subset of this many samples (drawn before the split; quick experiments and leaderboards), None: all."""

    dataset: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    size: int | None = Field(None, ge=2)


class AdversarySpec(AdversaryConfig):
    """Malicious clients: who (count, fraction or ids), when, and the named poison and update attack that
    builders.build_adversaries turns into the runtime Adversary's callables."""

    poison: Component | None = None
    attack: Component | None = None


class ServerDataSpec(Strict):
    """Clean data the server holds: a root set (FLTrust) and a validation set (rejection), from the train split."""

    root_size: int = Field(0, ge=0)
    validation_size: int = Field(0, ge=0)


class FederatedSpec(FederatedTraining):
    """A federated experiment: clients, partition, adversaries, aggregation, server data, and the training
    settings it shares with the engine's FederationConfig (rounds, sample, local, server_lr, eval_every,
    checkpoint_every; defined once in config/federation.py)."""

    clients: int = Field(20, ge=1)
    partition: Component = Field(default_factory=lambda: Component(name="iid"))
    adversary: AdversarySpec | list[AdversarySpec] | None = None
    aggregator: Component | list[Component] = Field(default_factory=lambda: Component(name="mean"))
    server_data: ServerDataSpec = Field(default_factory=ServerDataSpec)

    @field_validator("aggregator")
    @classmethod
    def _chain_not_empty(cls, aggregator: Component | list[Component]) -> Component | list[Component]:
        if isinstance(aggregator, list) and not aggregator:
            raise ValueError("an empty chain; accepted: a rule {name: mean} or a non-empty list of steps")
        return aggregator

    def adversaries(self) -> list[AdversarySpec]:
        """The adversaries as a list (none, one or several)."""
        if self.adversary is None:
            return []
        return self.adversary if isinstance(self.adversary, list) else [self.adversary]

    def aggregator_chain(self) -> list[Component]:
        """The aggregation steps as a list (a single rule is a chain of one)."""
        return self.aggregator if isinstance(self.aggregator, list) else [self.aggregator]


class DefendSpec(Strict):
    """Backdoor defenses applied to a centralized experiment's poisoned model (poisonlab/defend/): each is scored
    beside the undefended model; clean_fraction: the share of the untouched training rows the defender holds."""

    clean_fraction: float = Field(0.05, gt=0.0, le=1.0)
    defenses: list[Component] = Field(default_factory=list)


class OutputSpec(Strict):
    """Where the run directory goes (default runs/<name>) and what to write."""

    dir: str | None = None
    report: bool = True


class ExperimentConfig(Strict):
    """One experiment: data, model, training, poisoning, detection, federation, seed, output, grid; device: where
    it computes (auto | cpu | cuda | cuda:N | mps; poisonlab/device.py); precision: fp32, or bf16 autocast for
    centralized and local training (poisonlab/precision.py says where bf16 is refused)."""

    name: str = "experiment"
    seed: int = 0
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    data: DataSpec = Field(default_factory=DataSpec)
    model: Component = Field(default_factory=lambda: Component(name="cnn"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    poison: list[Component] = Field(default_factory=list)
    injection: Injection = Field(default_factory=Injection)
    detect: list[Component] = Field(default_factory=list)
    defend: DefendSpec = Field(default_factory=DefendSpec)
    federated: FederatedSpec | None = None
    output: OutputSpec = Field(default_factory=OutputSpec)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        from poisonlab.device import ACCEPTED, check_spec

        try:
            return check_spec(device)
        except Exception:
            raise ValueError(f"not a device; accepted: {ACCEPTED}") from None

    @property
    def kind(self) -> str:
        """'federated' when a federated section is present, else 'centralized'."""
        return "federated" if self.federated is not None else "centralized"
