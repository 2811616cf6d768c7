"""FLANDERS (Gabrielli, Pica and Tolomei 2023): forecast each client's model with a matrix autoregressive
model over rounds and set aside the clients the forecast misses most.

X_t (m, n): m sampled coordinates of the local models w_t + x_i (ctx.global_params plus the update)
of the n clients, one column each. MAR(1) (Chen, Xiao and Yang 2021): X_t = A X_{t-1} B^T + E_t,
A (m, m), B (n, n), fitted by alternating least squares on the stored rounds (B = I to start,
`iterations` sweeps, pseudo-inverses since A is under-determined for m > n x rounds):
  A = (sum_t X_t B X_{t-1}^T)(sum_t X_{t-1} B^T B X_{t-1}^T)^+,
  B = (sum_t X_t^T A X_{t-1})(sum_t X_{t-1}^T A^T A X_{t-1})^+.
The forecast of this round is A X_last B^T; client i's anomaly score is ||X_t[:, i] - forecast[:, i]||^2.
The ceil(keep * n) clients of lowest score are kept (FLANDERS keeps a fixed number, `to_keep` in the
Flower baseline); update = weighted mean of the kept rows and of the rows not scored.

Scaled down as the brief allows: m = `sample` coordinates drawn once from the seed (not the whole
model), `window` stored rounds. A client is scored only when it took part in each stored round
(MAR needs the same columns every round; with full participation every client is); before `window`
rounds are stored, or with fewer than 2 such clients, no row is set aside.
selected: rows kept; scores: the anomaly score (0 for a row not scored).
State: 'history' (window, K, m) float64 of the stored rounds' sampled coordinates, 'present' (window, K).
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import Rule, check_int, check_positive, client_ids, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Gabrielli, Pica and Tolomei 2023, A Robust Aggregation Rule for Federated Learning via"
             " Matrix Autoregressive Anomaly Detection (FLANDERS, arXiv:2303.16668)")


def fit_mar(series: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (m, m), B (n, n)) of X_t = A X_{t-1} B^T by alternating least squares on series (T, m, n), T >= 2."""
    prev, nxt = series[:-1], series[1:]
    n = series.shape[2]
    b = torch.eye(n, dtype=series.dtype, device=series.device)
    a = None
    for _ in range(iterations):
        a = torch.einsum("tmn,nk,tjk->mj", nxt, b, prev) @ torch.linalg.pinv(
            torch.einsum("tmn,nk,tjk->mj", prev, b.T @ b, prev))
        b = torch.einsum("tmi,mj,tjk->ik", nxt, a, prev) @ torch.linalg.pinv(
            torch.einsum("tmi,mj,tjk->ik", prev, a.T @ a, prev))
    return a, b


def anomaly_scores(series: torch.Tensor, now: torch.Tensor, iterations: int) -> torch.Tensor:
    """||now[:, i] - (A X_last B^T)[:, i]||^2 for each column, the MAR fitted on series (T, m, n)."""
    a, b = fit_mar(series, iterations)
    forecast = a @ series[-1] @ b.T
    return ((now - forecast) ** 2).sum(dim=0)


def sampled_coordinates(d: int, m: int, seed: int, device) -> torch.Tensor:
    """m coordinate indices of d, drawn once per (seed, d), sorted."""
    return torch.randperm(d, generator=generator(seed, "flanders", d), device="cpu")[:m].sort().values.to(device)


@AGGREGATORS.register("flanders", reference=REFERENCE)
def flanders(window: int = 5, sample: int = 500, keep: float = 0.5, iterations: int = 20) -> Rule:
    """FLANDERS: MAR(1) forecast of sampled model coordinates over rounds; keep the best-forecast clients."""
    window = check_int("flanders", "window", window, low=2)
    sample = check_int("flanders", "sample", sample, low=1)
    keep = check_positive("flanders", "keep", keep)
    if keep > 1:
        raise ConfigError(f"flanders: keep={keep!r} is out of range; accepted: (0, 1]")
    iterations = check_int("flanders", "iterations", iterations, low=1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.global_params is None:
            raise ConfigError("flanders needs the global model (RoundContext.global_params, which the engines"
                              " pass); a call without a round context has none")
        k, d = updates.shape
        dev = updates.device
        ids = client_ids(ctx, k)
        idx = sampled_coordinates(d, min(sample, d), ctx.seed, dev)
        now = (ctx.global_params.double()[idx][None, :] + updates[:, idx].double()).T  # (m, k)
        clients = max(int(ids.max()) + 1, ctx.num_clients)
        st = ctx.state or {}
        hist, present = st.get("history"), st.get("present")
        if hist is None or hist.shape[2] != len(idx):
            hist = torch.zeros(0, clients, len(idx), dtype=torch.float64, device=dev)
            present = torch.zeros(0, clients, dtype=torch.bool, device=dev)
        hist, present = hist.to(dev), present.to(dev)
        if hist.shape[1] < clients:
            grow = clients - hist.shape[1]
            hist = torch.cat([hist, hist.new_zeros(len(hist), grow, hist.shape[2])], 1)
            present = torch.cat([present, present.new_zeros(len(present), grow)], 1)
        scores = torch.zeros(k, dtype=torch.float64, device=dev)
        kept = torch.ones(k, dtype=torch.bool, device=dev)
        scored = present[:, ids].all(dim=0) if len(hist) >= window else torch.zeros(k, dtype=torch.bool, device=dev)
        if int(scored.sum()) >= 2:
            rows = torch.nonzero(scored).flatten()
            series = hist[:, ids[rows], :].transpose(1, 2)  # (T, m, n)
            s = anomaly_scores(series, now[:, rows], iterations)
            s = torch.where(torch.isfinite(s), s, torch.full_like(s, float("inf")))
            order = s.argsort(stable=True)
            kept[rows[order[math.ceil(keep * len(rows)):]]] = False
            scores[rows] = s.nan_to_num(posinf=torch.finfo(torch.float64).max)
        update = normalized(weights * kept).to(updates.dtype) @ updates
        row = torch.zeros(1, clients, len(idx), dtype=torch.float64, device=dev)
        row[0, ids] = now.T
        mask = torch.zeros(1, clients, dtype=torch.bool, device=dev)
        mask[0, ids] = True
        nxt = {"history": torch.cat([hist, row])[-window:], "present": torch.cat([present, mask])[-window:]}
        return Aggregate(update, kept, scores.float(), {"scored": int(scored.sum())}, nxt)

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        m = min(sample, d)
        return {"flanders history (window x {clients} x sample)": 8 * (window + 1) * clients * m + 8 * m * m * 3}

    return Rule(apply, f"flanders(window={window}, sample={sample}, keep={keep}, iterations={iterations})",
                memory=memory)
