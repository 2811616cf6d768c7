"""MoNNA, mean of the nearest neighbours of a trusted vector (Farhadkhani et al. 2023).

In the paper each honest worker averages the n - f vectors nearest to its own (momentum) vector,
its own included. A federated server has one vector it trusts, and poisonlab lets the config say
which (parameter ``trusted``):
- ``trusted=None`` (default): the server's own update on its root data, ``ctx.extras["server_update"]``
  (as FLTrust's g0; set federated.server_data.root_size). It is a reference point only: the answer
  is the mean of the n - f client rows nearest to it.
- ``trusted=<client id>``: that client's row (a client the operator trusts, e.g. its own device); it
  must be sampled in the round (DataError otherwise; a round where an earlier step dropped its row for
  NaN/Inf is skipped with a zero update), and is its own nearest row (distance 0).
update = (1 / (n - f)) sum of the n - f rows nearest to the trusted vector (ties to the lower row
index). If the trusted vector is honest, every chosen attacker row is no farther from it than some
honest row. Distances: exact, float64 column chunks (base.row_distances). Client
weights are not used (as in the paper). Needs n > f.
selected: the n - f chosen rows; scores: ||x_i - t||.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, client_ids, empty, require_extra, row_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Farhadkhani, Guerraoui, Gupta, Hoang, Pinot and Stephan 2023, Robust Collaborative Learning with"
             " Linear Gradient Overhead (ICML), MoNNA")


def trusted_vector(updates: torch.Tensor, ctx: RoundContext, trusted: int | None) -> torch.Tensor | None:
    """The (d,) vector MoNNA centres on: the server's update, or the row of client `trusted` (None if that
    row was dropped by an earlier step for NaN/Inf: the round is then skipped, as a round with too few rows)."""
    if trusted is None:
        t = require_extra(ctx, "server_update", "monna", "a trusted vector: the server's update on its root data"
                          " (or monna's trusted=<client id>)")
        t = torch.as_tensor(t, dtype=updates.dtype, device=updates.device).flatten()
        if t.shape != (updates.shape[1],) or not bool(torch.isfinite(t).all()):
            raise DataError(f"monna: server_update must be a finite ({updates.shape[1]},) vector;"
                            f" got shape {tuple(t.shape)}")
        return t
    row = torch.nonzero(client_ids(ctx, updates.shape[0]) == trusted).flatten()
    if row.numel() != 1 and ctx.extras.get("rows_dropped"):
        return None
    if row.numel() != 1:
        raise DataError(f"monna: trusted client {trusted} has no update in round {ctx.round} (not sampled, or"
                        " dropped for NaN/Inf); accepted: a client sampled every round, or trusted=None")
    return updates[int(row[0])]


@AGGREGATORS.register("monna", reference=REFERENCE)
def monna(f: int = 1, trusted: int | None = None, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """MoNNA: the mean of the n - f updates nearest to a trusted vector (the server's update, or a client's)."""
    f = check_int("monna", "f", f)
    trusted = None if trusted is None else check_int("monna", "trusted", trusted)
    chunk_bytes = check_int("monna", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        if not n > f:
            raise ConfigError(f"monna needs n > f; got n={n}, f={f}")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        n = updates.shape[0]
        t = trusted_vector(updates, ctx, trusted)
        if t is None:
            return empty(updates, {"trusted_missing": trusted})
        dist = row_distances(updates, t, chunk_bytes)
        chosen = torch.sort(dist, stable=True).indices[:n - f]
        coef = torch.zeros(n, dtype=updates.dtype, device=updates.device)
        coef[chosen] = 1.0 / (n - f)
        return Aggregate(coef @ updates, coef > 0, dist.float(), {})

    text = f"monna(f={f})" if trusted is None else f"monna(f={f}, trusted={trusted})"
    return Rule(apply, text, check_rows=check_rows,
                memory=lambda k, d, clients: {"monna distance chunks": min(chunk_bytes, 8 * k * d)})
