"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent), small datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Test workloads are small: one intra-op thread is as fast and never oversubscribes a shared machine.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test with a clear reason if it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def mnist_dir() -> Path:
    """Directory holding the real MNIST test set idx files."""
    return shared_path("mnist")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as a poisonlab Dataset."""
    from poisonlab.data import load

    return load("digits")
