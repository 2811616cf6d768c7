"""The aggregator registry (a leaf module: each rule's module registers itself here, nothing is imported back)."""

from __future__ import annotations

from poisonlab.registry import Registry

AGGREGATORS = Registry("aggregator")
