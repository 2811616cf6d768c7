"""The experiment schema (pydantic): one document for centralized and federated experiments.

Unknown keys and bad values are rejected; ``load.py`` turns pydantic's errors into one-line
ConfigErrors with the key path, the bad value and the nearest valid names. Component names
(dataset, model, poison, attack, aggregator, detector, partition) are checked against their
registries after parsing, in ``validate.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    """Base: unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(Strict):
    """A registered component by name with its parameters, e.g. {name: krum, params: {f: 2}}."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DataSpec(Strict):
    """Which dataset, its loader parameters, and the seeded stratified test split."""

    dataset: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)


class TrainSpec(Strict):
    """Optimiser settings for centralized (or local federated) training."""

    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: lr annealed to 0 over all steps


class LocalSpec(Strict):
    """Local training of each federated client (SGD)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)


class InjectionSpec(Strict):
    """How centralized poison enters training: concat and retrain, or fine-tune a clean model."""

    mode: Literal["concat", "fine_tune"] = "concat"
    clean_fraction: float = Field(0.0, ge=0.0, le=1.0)
    epochs: int = Field(3, ge=1)
    lr: float = Field(0.01, gt=0.0)
    batch_size: int | None = Field(None, ge=1)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    head_only: bool = False


class ScheduleSpec(Strict):
    """When an adversary acts: start <= round < end every n rounds, or exactly the listed rounds."""

    start: int = Field(0, ge=0)
    end: int | None = Field(None, ge=0)
    every: int = Field(1, ge=1)
    rounds: list[int] | None = None


class AdversarySpec(Strict):
    """Malicious clients: who (count, fraction or ids), their poisoned data, their update attack, when."""

    clients: int | float | list[int] = 0
    poison: Component | None = None
    attack: Component | None = None
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    boost: float = Field(1.0, gt=0.0)
    omniscient: bool = True
    force_participation: bool = True

    @field_validator("clients")
    @classmethod
    def _check_clients(cls, c: int | float | list[int]) -> int | float | list[int]:
        if isinstance(c, float) and not 0.0 <= c < 1.0:
            raise ValueError("a fraction of clients must be in [0, 1); give a count as an integer")
        if isinstance(c, int) and c < 0:
            raise ValueError("a count of clients must be >= 0")
        return c


class ServerDataSpec(Strict):
    """Clean data the server holds: a root set (FLTrust) and a validation set (rejection), from the train split."""

    root_size: int = Field(0, ge=0)
    validation_size: int = Field(0, ge=0)


class FederatedSpec(Strict):
    """A federated experiment: clients, partition, rounds, local training, adversaries, aggregation."""

    clients: int = Field(20, ge=1)
    partition: Component = Field(default_factory=lambda: Component(name="iid"))
    rounds: int = Field(30, ge=1)
    sample: float | int = 1.0
    local: LocalSpec = Field(default_factory=LocalSpec)
    server_lr: float = Field(1.0, gt=0.0)
    eval_every: int = Field(1, ge=1)
    adversary: AdversarySpec | list[AdversarySpec] | None = None
    aggregator: Component | list[Component] = Field(default_factory=lambda: Component(name="mean"))
    server_data: ServerDataSpec = Field(default_factory=ServerDataSpec)
    checkpoint_every: int = Field(0, ge=0)

    def adversaries(self) -> list[AdversarySpec]:
        """The adversaries as a list (none, one or several)."""
        if self.adversary is None:
            return []
        return self.adversary if isinstance(self.adversary, list) else [self.adversary]

    def aggregator_chain(self) -> list[Component]:
        """The aggregation steps as a list (a single rule is a chain of one)."""
        return self.aggregator if isinstance(self.aggregator, list) else [self.aggregator]


class OutputSpec(Strict):
    """Where the run directory goes (default runs/<name>) and what to write."""

    dir: str | None = None
    report: bool = True


class ExperimentConfig(Strict):
    """One experiment: data, model, training, poisoning, detection, federation, seed, output, grid."""

    name: str = "experiment"
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    model: Component = Field(default_factory=lambda: Component(name="cnn"))
    train: TrainSpec = Field(default_factory=TrainSpec)
    poison: list[Component] = Field(default_factory=list)
    injection: InjectionSpec = Field(default_factory=InjectionSpec)
    detect: list[Component] = Field(default_factory=list)
    federated: FederatedSpec | None = None
    output: OutputSpec = Field(default_factory=OutputSpec)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'federated' when a federated section is present, else 'centralized'."""
        return "federated" if self.federated is not None else "centralized"
