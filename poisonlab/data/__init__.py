"""Datasets and their sources: embedded (digits, breast_cancer, wine) and real files."""

from poisonlab.data.dataset import Dataset
from poisonlab.data.sources import SOURCES, load

__all__ = ["Dataset", "SOURCES", "load"]
