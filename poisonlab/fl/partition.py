"""Partitions of a labelled dataset across K clients: iid, dirichlet, shards, quantity skew.

A partitioner is built by name, ``PARTITIONS.get("dirichlet", alpha=0.5)``, and called as
``partitioner(labels (n,), num_clients, seed) -> list of K int64 index tensors`` (disjoint,
covering the data, each sorted). Draws come from ``poisonlab.rng`` streams derived from
(seed, "partition", name), so the same labels, K and seed always give the same partition.
``class_histogram`` gives the (K, C) per-client class counts for reports and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from poisonlab.errors import ConfigError, DataError, check_range
from poisonlab.registry import Registry
from poisonlab.rng import generator, numpy_rng

PARTITIONS = Registry("partition")

Partitioner = Callable[[torch.Tensor, int, int], list[torch.Tensor]]


def partition(name: str, labels: torch.Tensor, num_clients: int, seed: int = 0, **params) -> list[torch.Tensor]:
    """Convenience: PARTITIONS.get(name, **params)(labels, num_clients, seed)."""
    return PARTITIONS.get(name, **params)(labels, num_clients, seed)


def class_histogram(parts: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, num_classes) int64: how many samples of each class each client holds."""
    labels = torch.as_tensor(labels)
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(parts)), sizes)
    index = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    flat = torch.bincount(owner * num_classes + labels[index], minlength=len(parts) * num_classes)
    return flat.reshape(len(parts), num_classes)


def _check(labels: torch.Tensor, num_clients: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).long().flatten()
    if num_clients < 1:
        raise ConfigError(f"num_clients={num_clients} is invalid; accepted: 1 or more")
    if len(labels) < num_clients:
        raise DataError(f"cannot give {num_clients} clients at least one sample each from {len(labels)} samples")
    return labels


def _groups(order: np.ndarray, sizes: np.ndarray) -> list[torch.Tensor]:
    """Cut order into consecutive groups of the given sizes; each group sorted."""
    cuts = np.cumsum(sizes)[:-1]
    return [torch.from_numpy(np.sort(g)).long() for g in np.split(order, cuts)]


@PARTITIONS.register("iid", reference="McMahan et al. 2017, Communication-Efficient Learning (IID split)")
def iid() -> Partitioner:
    """Shuffle, then cut into K parts whose sizes differ by at most one."""

    def split(labels: torch.Tensor, num_clients: int, seed: int = 0) -> list[torch.Tensor]:
        labels = _check(labels, num_clients)
        order = torch.randperm(len(labels), generator=generator(seed, "partition", "iid"))
        return [p.sort().values for p in torch.tensor_split(order, num_clients)]

    return split


@PARTITIONS.register("dirichlet", reference="Hsu et al. 2019, Measuring the Effects of Non-Identical Data "
                                            "Distribution (Dirichlet label skew)")
def dirichlet(alpha: float = 0.5, min_size: int = 1, max_tries: int = 100) -> Partitioner:
    """Label skew: for each class c, client shares p_c ~ Dir(alpha * 1_K); small alpha -> few classes per client.

    Redraws (from the same seeded stream) until every client holds at least min_size samples,
    as in the reference implementation of Hsu et al.; gives up with a ConfigError after max_tries.
    """
    check_range("dirichlet alpha", alpha, 0.0, low_open=True)
    check_range("dirichlet min_size", min_size, 0)

    def split(labels: torch.Tensor, num_clients: int, seed: int = 0) -> list[torch.Tensor]:
        labels = _check(labels, num_clients).numpy()
        rng = numpy_rng(seed, "partition", "dirichlet")
        num_classes = int(labels.max()) + 1
        for _ in range(max_tries):
            owner = np.empty(len(labels), dtype=np.int64)
            for c in range(num_classes):  # loop over classes (10-100), not over clients or samples
                idx = np.flatnonzero(labels == c)
                rng.shuffle(idx)
                shares = rng.dirichlet(np.full(num_clients, alpha))
                counts = np.floor(shares * len(idx)).astype(np.int64)
                counts[np.argsort(-shares)[: len(idx) - counts.sum()]] += 1  # largest shares take the remainder
                owner[idx] = np.repeat(np.arange(num_clients), counts)
            sizes = np.bincount(owner, minlength=num_clients)
            if sizes.min() >= min_size:
                order = np.argsort(owner, kind="stable")
                return _groups(order, sizes)
        raise ConfigError(f"dirichlet alpha={alpha} could not give all {num_clients} clients >= {min_size} samples"
                          f" in {max_tries} draws; accepted: a larger alpha, fewer clients or a smaller min_size")

    return split


@PARTITIONS.register("shards", reference="McMahan et al. 2017 (pathological non-IID: each client holds c classes)")
def shards(classes_per_client: int = 2) -> Partitioner:
    """Pathological label skew: each client holds exactly c distinct classes.

    A random class order is dealt round-robin (client i gets order[(i*c + j) mod C], j < c), so
    every class has about K*c/C holders; each class's samples are shuffled and split evenly among
    its holders. (McMahan et al. cut sorted data into 2K shards, which gives at most c classes;
    this label-balanced variant gives exactly c.)
    """
    check_range("shards classes_per_client", classes_per_client, 1)

    def split(labels: torch.Tensor, num_clients: int, seed: int = 0) -> list[torch.Tensor]:
        labels = _check(labels, num_clients).numpy()
        num_classes = int(labels.max()) + 1
        c = int(classes_per_client)
        if c > num_classes:
            raise ConfigError(f"shards classes_per_client={c} exceeds the {num_classes} classes present")
        rng = numpy_rng(seed, "partition", "shards")
        order = rng.permutation(num_classes)
        held = order[(np.arange(num_clients)[:, None] * c + np.arange(c)[None, :]) % num_classes]  # (K, c)
        owner = np.full(len(labels), -1, dtype=np.int64)
        for cls in range(num_classes):  # loop over classes
            holders = np.flatnonzero((held == cls).any(axis=1))
            idx = np.flatnonzero(labels == cls)
            if len(holders) == 0:
                continue  # nobody holds this class (K*c < C): its samples are unused
            if len(idx) < len(holders):
                raise DataError(f"class {cls} has {len(idx)} samples for {len(holders)} shard holders")
            rng.shuffle(idx)
            owner[idx] = holders[np.arange(len(idx)) * len(holders) // len(idx)]
        used = owner >= 0
        sizes = np.bincount(owner[used], minlength=num_clients)
        order_idx = np.flatnonzero(used)[np.argsort(owner[used], kind="stable")]
        return _groups(order_idx, sizes)

    return split


@PARTITIONS.register("quantity_skew", reference="Li et al. 2022, Federated Learning on Non-IID Data Silos "
                                                "(quantity-based skew, sizes ~ Dir(beta))")
def quantity_skew(beta: float = 0.5, min_size: int = 1, max_tries: int = 100) -> Partitioner:
    """Unequal sizes, iid labels: client shares q ~ Dir(beta * 1_K), the shuffled data cut by q."""
    check_range("quantity_skew beta", beta, 0.0, low_open=True)
    check_range("quantity_skew min_size", min_size, 0)

    def split(labels: torch.Tensor, num_clients: int, seed: int = 0) -> list[torch.Tensor]:
        labels = _check(labels, num_clients)
        rng = numpy_rng(seed, "partition", "quantity_skew")
        n = len(labels)
        order = rng.permutation(n)
        for _ in range(max_tries):
            shares = rng.dirichlet(np.full(num_clients, beta))
            sizes = np.floor(shares * n).astype(np.int64)
            sizes[np.argsort(-shares)[: n - sizes.sum()]] += 1
            if sizes.min() >= min_size:
                return _groups(order, sizes)
        raise ConfigError(f"quantity_skew beta={beta} could not give all {num_clients} clients >= {min_size}"
                          f" samples in {max_tries} draws; accepted: a larger beta or fewer clients")

    return split
