"""How a federation runs: the settings the YAML's `federated` section and the engine's FederationConfig share,
defined once (FederatedTraining), and the engine's run-time additions (FederationConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from poisonlab.config.base import MAX_EPOCHS, Section
from poisonlab.config.local import LocalConfig

ENGINE_MEMORY_BUDGET = 1 << 30
"""Default bytes for one chunk of clients trained together (fl/local.py); resources.py estimates with it."""


class FederatedTraining(Section):
    """rounds; sample: a fraction of K (float in (0, 1]) or a count (int) per round; local: client SGD;
    server_lr: eta; eval_every: evaluate every n rounds (and after the last); checkpoint_every: checkpoint
    every n rounds (0 = never); batch_norm: "shared" (batch-norm layers are averaged like every layer) or "local"
    (FedBN, Li et al. 2021: each client keeps its batch-norm parameters and statistics; fl/fedbn.py);
    client_gpus: GPUs reserved per Flower ClientApp (engine flower only; 0: the clients train on the CPU;
    e.g. 0.25 runs four ClientApps per GPU; needs device cuda); engine: how the clients' local training is
    computed: "vectorized" (all clients at once, fl/local.py; the default), "reference" (the plain per-client loop,
    fl/reference.py, for checks and benchmarks), "reference_channels_last" (the same loop in channels_last) or "auto"
    (the fastest of the three for the model's shape, timed once per machine and cached: fl/engine_choice.py;
    opt-in, since the paths differ by float rounding)."""

    rounds: int = Field(30, ge=1, le=MAX_EPOCHS)
    sample: float | int = 1.0
    local: LocalConfig = Field(default_factory=LocalConfig)
    server_lr: float = Field(1.0, gt=0.0)
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(0, ge=0)
    batch_norm: Literal["shared", "local"] = "shared"
    client_gpus: float = Field(0.0, ge=0.0)
    engine: Literal["vectorized", "reference", "reference_channels_last", "auto"] = "vectorized"

    @field_validator("sample")
    @classmethod
    def _check_sample(cls, sample: float | int) -> float | int:
        if (isinstance(sample, float) and not 0.0 < sample <= 1.0) or (isinstance(sample, int) and sample < 1):
            raise ValueError("out of range; accepted: a fraction of the clients in (0, 1] or a count >= 1")
        return sample


class FederationConfig(FederatedTraining):
    """The engine's settings: the shared ones above plus seed; memory_budget: bytes per chunk of clients
    trained together (None: from the device, fl/local.py engine_budget); checkpoint_dir (needed by checkpoint_every); target: backdoor target class for ASR (or a target map, poison/targets.py);
    flips: (source, target) pairs to count on the test set; quiet: no progress bar."""

    seed: int = 0
    memory_budget: int | None = Field(None, ge=1)
    checkpoint_dir: str | None = None
    target: int | tuple[int, ...] | None = None
    flips: tuple[tuple[int, int], ...] = ()
    quiet: bool = False

    @model_validator(mode="after")
    def _checkpoint_dir_given(self) -> FederationConfig:
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir")
        return self
