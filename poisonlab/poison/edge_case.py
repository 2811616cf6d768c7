"""Edge-case backdoor (Wang et al., NeurIPS 2020, "Attack of the tails").

The attacker holds rare inputs from the tail of the input distribution (e.g. photos of an unusual
airplane) and labels them as another class; they are mixed into its otherwise clean local data.
There is no trigger: the attack succeeds when held-out inputs of the same rare kind are classified
as the target. The photos are ingested with poisonlab.data.images (pad to square, resize) to the
dataset's sample shape, deduplicated by file stem (rb-14.jpeg and rb-14.webp are one photo), and
split by file into the attacker's training photos and held-out photos for the success rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned
from poisonlab.rng import generator


def photo_files(folder: str | Path) -> list[Path]:
    """Image files in folder, sorted by name, one per file stem (the first suffix in sorted order)."""
    from poisonlab.data.images import list_images  # PIL only when photos are read

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"edge-case folder {root} does not exist; expected a folder of photos")
    files = list_images(root, one_per_stem=True)
    if len(files) < 2:
        raise DataError(f"edge-case folder {root} has {len(files)} distinct photos; need at least 2 (train and test)")
    return files


@POISONS.register("edge_case", reference="Wang et al. 2020, Attack of the tails: yes, you really can backdoor"
                                        " federated learning (NeurIPS)")
@dataclass(frozen=True)
class EdgeCase(Poison):
    """Photos in path labelled target, appended `copies` times to the attacker's data; test_fraction held out."""

    path: str
    target: int = 0
    test_fraction: float = 0.3
    copies: int = 1
    split_seed: int = 0
    name = "edge_case"

    def __post_init__(self) -> None:
        check_range("test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_range("copies", self.copies, 1)

    def photos(self, sample_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(training photos, held-out photos) as (n, c, h, w) tensors; the split is by file, seeded by split_seed."""
        if len(sample_shape) != 3:
            raise ConfigError(f"edge-case photos need image data (c, h, w); got samples of shape {sample_shape}")
        from poisonlab.data.images import ingest_many

        files = photo_files(self.path)
        order = torch.randperm(len(files), generator=generator(self.split_seed, "edge_case", "split"))
        n_test = min(max(1, round(self.test_fraction * len(files))), len(files) - 1)
        x = ingest_many([files[i] for i in order.tolist()], sample_shape)
        return x[n_test:], x[:n_test]

    def _check(self, data: Dataset) -> None:
        if not 0 <= self.target < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """data followed by the training photos (copies times) labelled target; mask marks the photos."""
        self._check(data)
        train, _ = self.photos(data.input_shape)
        x = train.repeat(self.copies, 1, 1, 1)
        y = torch.full((len(x),), self.target, dtype=torch.int64)
        poisoned = data.concat(data.replace(x=x, y=y), name=f"{data.name}+edge_case")
        mask = torch.cat([torch.zeros(len(data), dtype=torch.bool), torch.ones(len(x), dtype=torch.bool)])
        info = {"attack": "edge_case", "count": len(x), "photos": len(train), "target": self.target, "path": str(self.path)}
        return Poisoned(poisoned, mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The held-out photos as a test set; labelled (target + 1) mod C, a placeholder class that is
        not the target, so metrics.attack_success_rate is the share of photos predicted as target."""
        self._check(test_set)
        _, held = self.photos(test_set.input_shape)
        y = torch.full((len(held),), (self.target + 1) % test_set.num_classes, dtype=torch.int64)
        return test_set.replace(x=held, y=y, name="edge_case_heldout")
