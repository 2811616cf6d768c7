"""External poison: a folder of real photos, ingested to the dataset's sample shape and labelled as one class.

The classic example (Shafahi et al. 2018, discussing web-scraped data; the "label 25 unusual
airplanes as bird" scenario) injects photos of an unusual object with a chosen label, so the
model learns to map that kind of object to the chosen class. Photos of any size and any format
PIL reads are padded to a centred square and resized (poisonlab.data.images.ingest).
The poison rows are CONCATENATED to the dataset (mask marks them). An optional ``test_folder``
of held-out photos is the probe: how the model classifies unseen photos of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly in folder (suffixes PIL can open, hidden names included), sorted by name."""
    from poisonlab.data.images import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"poison image folder {folder} does not exist or is not a directory")
    files = list_images(folder, skip_hidden=False)
    if not files:
        raise DataError(f"poison image folder {folder} holds no image files PIL can read")
    return files


def load_photos(folder: str | Path, shape: tuple[int, int, int], invert: bool = False) -> torch.Tensor:
    """Every photo in folder ingested to (n, *shape) in [0, 1]; invert gives 1 - x (light-on-dark, like MNIST)."""
    from poisonlab.data.images import ingest_many

    x = ingest_many(image_files(folder), shape)
    return 1.0 - x if invert else x


def resolve_class(label: int | str, classes: tuple[str, ...]) -> int:
    """A class index from an index or a class name."""
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    try:
        idx = int(label)
    except (TypeError, ValueError):
        raise ConfigError(f"label={label!r} is not a class; accepted: 0..{len(classes) - 1} or {', '.join(classes)}") from None
    if not 0 <= idx < len(classes):
        raise ConfigError(f"label={label!r} is not a class; accepted: 0..{len(classes) - 1} or {', '.join(classes)}")
    return idx


@POISONS.register("external", reference="Shafahi et al. 2018 (web-scraped poison photos labelled as a chosen class)")
@dataclass(frozen=True)
class ExternalPhotos(Poison):
    """Concatenate the photos in folder (each repeated `repeat` times), labelled `label`; optional held-out probe."""

    folder: str
    label: int | str = 0
    repeat: int = 1
    invert: bool = False
    test_folder: str | None = None
    name = "external"

    def __post_init__(self) -> None:
        if int(self.repeat) < 1:
            raise ConfigError(f"repeat={self.repeat} is not valid; accepted: 1 or more")

    @property
    def target(self) -> int | str:
        """The class the photos are labelled as (reported as the attack's target)."""
        return self.label

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """data followed by the ingested photos labelled as the chosen class (seed unused: deterministic)."""
        if not data.is_image:
            raise DataError(f"external photos need an image dataset; '{data.name}' is tabular {data.input_shape}")
        label = resolve_class(self.label, data.classes)
        x = load_photos(self.folder, data.input_shape, self.invert).repeat(int(self.repeat), 1, 1, 1)
        poison = data.replace(x=x, y=torch.full((len(x),), label, dtype=torch.long))
        mask = torch.cat([torch.zeros(len(data), dtype=torch.bool), torch.ones(len(x), dtype=torch.bool)])
        info = {"attack": "external", "count": len(x), "label": label, "folder": str(self.folder),
                "files": [p.name for p in image_files(self.folder)]}
        return Poisoned(data.concat(poison, name=f"{data.name}+external"), mask, info)

    def probe(self, data: Dataset) -> dict | None:
        """The held-out photos (test_folder) as x (n, *shape) with their file names, or None."""
        if self.test_folder is None:
            return None
        return {"x": load_photos(self.test_folder, data.input_shape, self.invert),
                "files": [p.name for p in image_files(self.test_folder)],
                "target": resolve_class(self.label, data.classes)}
