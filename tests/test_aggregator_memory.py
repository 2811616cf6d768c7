"""FLAME and FoolsGold without their (k, d) copies give the same numbers as the copying code they replace.

The chunked pieces (base.row_abs_max, row_norms_float64, cosine_similarities(rows=...)) are compared with
the whole-matrix expressions the rules used before (kept here as the reference): equal, not close, on
random inputs with several chunks. benchmarks/aggregator_memory.py measures the memory they save.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.fl.aggregators import build_rule, get
from poisonlab.fl.aggregators.base import block_gram, column_chunks, cosine_similarities, row_abs_max, row_norms_float64
from poisonlab.fl.aggregators.flame import majority_cluster
from poisonlab.fl.aggregators.bulyan import closest_to_median_mean
from poisonlab.fl.aggregators.foolsgold import foolsgold_alpha
from poisonlab.fl.aggregators.median import coordinate_median
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator


def random_rows(k: int, d: int, key: str) -> torch.Tensor:
    x = torch.randn(k, d, generator=generator(5, key))
    x[1] *= 1e6  # rows of very different scales: the per-row power-of-two scaling matters
    x[2] *= 1e-6
    return x


def copying_cosines(x: torch.Tensor, chunk_bytes: int) -> torch.Tensor:
    """The code before: row maxima from x.abs() (a (k, d) copy), the Gram of x (or of a gathered x[ids])."""
    exponent = torch.frexp(x.abs().amax(dim=1).double()).exponent.clamp(-125, 125)
    gram = block_gram(x, chunk_bytes, row_scale=torch.ldexp(torch.ones(len(x), dtype=x.dtype), -exponent))
    norms = gram.diagonal().sqrt().clamp_min(1e-30)
    return gram / norms[:, None] / norms[None, :]


@pytest.mark.parametrize("chunk_bytes", [1000, 1 << 20])
def test_chunked_row_pieces_equal_the_whole_matrix_ones(chunk_bytes):
    x = random_rows(9, 3001, "pieces")
    assert torch.equal(row_abs_max(x, chunk_bytes=chunk_bytes), x.abs().amax(dim=1))
    assert torch.equal(row_norms_float64(x, chunk_bytes), torch.linalg.vector_norm(x.double(), dim=1))
    ids = torch.tensor([7, 0, 3, 3, 5])
    assert torch.equal(row_abs_max(x, ids, chunk_bytes), x[ids].abs().amax(dim=1))
    assert torch.equal(cosine_similarities(x, chunk_bytes), copying_cosines(x, chunk_bytes))
    assert torch.equal(cosine_similarities(x, chunk_bytes, rows=ids), copying_cosines(x[ids], chunk_bytes))


def copying_flame(x: torch.Tensor, ctx: RoundContext, noise_lambda: float = 0.001) -> torch.Tensor:
    """FLAME's update as computed before (float64 copy of x for the norms, abs() copy for the cosines)."""
    k, d = x.shape
    dist = (1 - copying_cosines(x, 256 * 2**20)).clamp(0, 2)
    dist.fill_diagonal_(0)
    admitted = torch.from_numpy(majority_cluster(((dist + dist.T) / 2).numpy())[0])
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    bound = float(norms.median()) if k % 2 else float(norms.double().quantile(0.5))
    factors = ((bound / norms.clamp_min(1e-30)).clamp_max(1.0) * admitted / admitted.sum()).float()
    noise = torch.randn(d, generator=generator(ctx.seed, "flame", ctx.round))
    return factors @ x + noise_lambda * bound * noise


@pytest.mark.parametrize("k", [7, 10])
def test_flame_update_is_unchanged(k):
    x = random_rows(k, 2000, f"flame{k}")
    x[k - 2:] = -x[k - 2:]  # a minority direction
    ctx = RoundContext(round=3, num_clients=k, sampled=torch.arange(k), seed=4)
    assert torch.equal(get("flame")(x, torch.ones(k), ctx).update, copying_flame(x, ctx))


def test_foolsgold_alpha_of_sampled_rows_is_unchanged():
    history = random_rows(12, 1500, "history")
    history[4] = history[9] * 2  # a sybil pair
    ids = torch.tensor([9, 2, 4, 11, 0])
    assert torch.equal(foolsgold_alpha(history, rows=ids), foolsgold_alpha(history[ids]))


def test_foolsgold_rounds_with_shuffled_samples_match_the_gathered_computation():
    """Three rounds of a chain-built FoolsGold on out-of-order samples: alphas equal a reference that
    gathers history[ids] (the code before) from its own copy of the history."""
    rule = build_rule("foolsgold")
    clients, d = 8, 600
    reference = torch.zeros(clients, d)
    state = None
    for r, ids in enumerate([[5, 1, 7], [0, 5, 3, 1], [7, 6, 2]]):
        ids = torch.tensor(ids)
        x = random_rows(len(ids), d, f"round{r}")
        agg = rule(x, torch.ones(len(ids)), RoundContext(round=r, num_clients=clients, sampled=ids, state=state))
        state = agg.state
        reference.index_add_(0, ids, x)
        assert agg.info["alpha"] == foolsgold_alpha(reference[ids]).tolist()
    assert torch.equal(state["1.history"], reference)


def test_foolsgold_history_limit_defaults_to_the_machine_and_stays_checked():
    from poisonlab.errors import ConfigError, ResourceError
    from poisonlab.fl.aggregators.foolsgold import default_history_bytes, grown_history

    assert default_history_bytes() > 0
    with pytest.raises(ConfigError, match="max_history_bytes"):
        get("foolsgold", max_history_bytes=float("nan"))
    with pytest.raises(ResourceError, match="max_history_bytes=100"):
        grown_history(None, 10, 100, 100)
    assert grown_history(None, 3, 5, 60).shape == (3, 5)


def test_flame_memory_part_is_chunks_not_a_copy():
    parts = get("flame").memory_parts(1000, 10**6)
    assert sum(parts.values()) < 0.1 * 4 * 1000 * 10**6
    assert np.isclose(sum(parts.values()), 8 * 1000**2 + 256 * 2**20)


def copying_closest_to_median_mean(x: torch.Tensor, beta: int, chunk_bytes: int) -> torch.Tensor:
    """Bulyan's coordinate stage as before: on the gathered copy x[chosen], the median taken whole."""
    theta, d = x.shape
    med = coordinate_median(x, chunk_bytes)
    out = torch.empty(d, dtype=x.dtype)
    for cols in column_chunks(theta, d, 3 * x.element_size() + 8, chunk_bytes):
        block = x[:, cols]
        nearest = torch.topk((block - med[cols]).abs(), beta, dim=0, largest=False).indices
        out[cols] = torch.gather(block, 0, nearest).mean(dim=0)
    return out


@pytest.mark.parametrize("chunk_bytes", [2000, 1 << 20])
def test_bulyan_coordinate_stage_on_gathered_blocks_is_unchanged(chunk_bytes):
    x = random_rows(11, 1700, "bulyan")
    chosen = torch.tensor([4, 0, 9, 2, 7, 5, 1])
    assert torch.equal(closest_to_median_mean(x, 3, chunk_bytes, rows=chosen),
                       copying_closest_to_median_mean(x[chosen], 3, chunk_bytes))
    assert torch.equal(closest_to_median_mean(x[chosen], 3, chunk_bytes),
                       copying_closest_to_median_mean(x[chosen], 3, chunk_bytes))
