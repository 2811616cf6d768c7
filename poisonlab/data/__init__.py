"""Datasets and their sources: embedded (digits, breast_cancer, wine), synthetic, and real files.

The registry ``SOURCES`` lives in the leaf module ``data/registry.py``; each source registers itself
in its own file, imported below.
"""

from poisonlab.data.dataset import Dataset
from poisonlab.data.registry import SOURCES
from poisonlab.data.sources import load
from poisonlab.data import synthetic  # noqa: F401  (registers "synthetic")

__all__ = ["Dataset", "SOURCES", "load"]
