"""The Dataset: features, integer labels and class names, with seeded split, subset, concat.

Images are float32 NCHW in [0, 1]; tabular data is float32 (n, f); labels are int64.
A Dataset is immutable: every operation returns a new one and never changes its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from poisonlab.device import as_tensor
from poisonlab.errors import DataError, check_range
from poisonlab.rng import as_generator


@dataclass(frozen=True)
class Dataset:
    """x (float32, (n, c, h, w) images or (n, f) tabular), y (int64, (n,)), class names, name."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str = "dataset"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        x = as_tensor(self.x)  # a tensor stays on its device; arrays and lists become CPU tensors
        y = as_tensor(self.y)
        if x.dtype != torch.float32:
            x = x.float()
        if y.dtype != torch.int64:
            y = y.long()
        if x.dim() not in (2, 4):
            raise DataError(f"dataset '{self.name}': x has shape {tuple(x.shape)}; accepted: (n, f) or (n, c, h, w)")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"dataset '{self.name}': y has shape {tuple(y.shape)}; expected ({x.shape[0]},) to match x")
        classes = tuple(str(c) for c in self.classes)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"dataset '{self.name}': labels span [{int(y.min())}, {int(y.max())}]"
                            f" but there are {len(classes)} classes")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def _repr_html_(self) -> str:
        """Jupyter: size, shape and samples per class as a table, the first images (poisonlab.notebook)."""
        from poisonlab.notebook import dataset_html

        return dataset_html(self)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of the class-name list, not of the labels present)."""
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        """True for NCHW images, False for tabular features."""
        return self.x.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (c, h, w) or (f,)."""
        return tuple(self.x.shape[1:])

    def replace(self, **changes) -> Dataset:
        """A copy with some fields changed (x, y, classes, name, meta)."""
        return replace(self, **changes)

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> Dataset:
        """The samples at index (int positions or a boolean mask), in that order."""
        if not isinstance(index, torch.Tensor):
            index = np.asarray(index)
            index = as_tensor(index.astype(np.int64) if index.size == 0 else index)  # [] is float otherwise
        return self.replace(x=self.x[index], y=self.y[index])

    def concat(self, other: Dataset, name: str | None = None) -> Dataset:
        """This dataset followed by other (same sample shape and classes)."""
        if other.input_shape != self.input_shape:
            raise DataError(f"cannot concat '{other.name}' with sample shape {other.input_shape}"
                            f" onto '{self.name}' with {self.input_shape}")
        if other.classes != self.classes:
            raise DataError(f"cannot concat '{other.name}': its classes {other.classes} differ from {self.classes}")
        return self.replace(x=torch.cat([self.x, other.x]), y=torch.cat([self.y, other.y]),
                            name=name or self.name)

    def class_counts(self) -> torch.Tensor:
        """Samples per class, int64 of length num_classes."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def split(self, test_fraction: float = 0.2, seed: int | torch.Generator = 0,
              stratify: bool = True) -> tuple[Dataset, Dataset]:
        """Seeded (train, test) split; stratified keeps each class's share in both parts."""
        check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        g = as_generator(seed, "split")
        if not stratify:
            perm = torch.randperm(len(self), generator=g)
            n_test = int(round(test_fraction * len(self)))
            return self.subset(perm[n_test:].sort().values), self.subset(perm[:n_test].sort().values)
        test_parts = []
        for c in range(self.num_classes):
            idx = torch.nonzero(self.y == c).flatten()
            perm = idx[torch.randperm(len(idx), generator=g)]
            test_parts.append(perm[: int(round(test_fraction * len(idx)))])
        test_mask = torch.zeros(len(self), dtype=torch.bool)
        test_mask[torch.cat(test_parts)] = True
        return self.subset(~test_mask), self.subset(test_mask)
