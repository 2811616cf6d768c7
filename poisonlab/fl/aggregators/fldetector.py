"""FLDetector (Zhang, Fang, Gong and Jia 2022): flag clients whose updates are inconsistent over rounds.

Round t, global model w_t (ctx.global_params), client i's update x_i^t:
1. Hessian-vector estimate. The last N pairs (dw_j, dg_j) = (w_j - w_{j-1}, u_j - u_{j-1}), u the
   aggregated update computed at w_j, feed the compact L-BFGS product of Byrd, Nocedal and Schnabel
   (1994), with S = [dw], Y = [dg], A = S^T Y = L + D + U (strictly lower, diagonal, upper),
   sigma = dg_N . dw_N / dw_N . dw_N:
     H v = sigma v - [sigma S, Y] M^{-1} [sigma S^T v; Y^T v],   M = [[sigma S^T S, L], [L^T, -D]].
   (Pairs of *updates* u = -lr * gradient give -lr H: the map is linear in Y, so the prediction below
   is the same as with gradients.) B satisfies the secant equations B dw_j = dg_j.
2. Prediction: x_hat_i = x_i^{t-1} + H (w_t - w_{t-1}); distance d_i = ||x_hat_i - x_i^t||,
   normalised over the round's scored clients, d_i / sum_j d_j.
3. Suspicious score s_i: the mean of client i's normalised distances over the last N rounds.
4. When N rounds of scores exist: the gap statistic (Tibshirani et al. 2001) on the scores of the
   round's clients; if it finds more than one cluster, exact 1-D 2-means splits them and the cluster
   with the larger mean score is flagged.
update = weighted mean of the rows not flagged. selected: rows not flagged; scores: s_i (0 for a
client without a score yet). The paper then removes flagged clients and restarts training; here
they are left out of the round's aggregate (as FLPoison does), the caller sees them in info.

Client sampling: a client is predicted only when it also took part in round t-1 (its x^{t-1} is
kept); with full participation every client is scored. State (tensors): 'prev_global', 'prev_update'
(d,), 'dw', 'dg' (<= N, d), 'last' (K, d) each client's previous update and 'last_round' (K,),
'dist' (N, K) normalised distances with 'dist_seen' (N, K). As FoolsGold's history, 'last' is updated in
place (a (K, d) copy per round would double the largest tensor of the run): pass a state once.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.auror import two_means_1d
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, client_ids, normalized
from poisonlab.fl.aggregators.foolsgold import default_history_bytes, grown_history
from poisonlab.fl.aggregators.gap_statistic import gap_clusters
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Zhang, Fang, Gong and Jia 2022, FLDetector: Defending Federated Learning Against Model"
             " Poisoning Attacks via Detecting Malicious Clients (KDD)")


def lbfgs_hvp(dw: torch.Tensor, dg: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The compact L-BFGS estimate B v (module docstring) from pairs dw, dg (N, d) and v (d,), float64."""
    s, y, v = dw.double(), dg.double(), v.double()
    a = s @ y.T  # a[i, j] = s_i . y_j
    low = torch.tril(a, -1)
    diag = torch.diag(torch.diagonal(a))
    sigma = (y[-1] @ s[-1]) / (s[-1] @ s[-1])
    m = torch.cat([torch.cat([sigma * (s @ s.T), low], 1), torch.cat([low.T, -diag], 1)], 0)
    p = torch.cat([sigma * (s @ v), y @ v])
    coef = torch.linalg.lstsq(m, p[:, None]).solution[:, 0]
    n = len(s)
    return sigma * v - (sigma * coef[:n]) @ s - coef[n:] @ y


def prediction_errors(last: torch.Tensor, who: torch.Tensor, hv: torch.Tensor, updates: torch.Tensor,
                      rows: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """||last[who_r] + hv - updates[rows_r]|| for each r, float64, from blocks of whole rows (gathering
    contiguous rows is a copy; gathering rows of a column slice is strided and 50x slower)."""
    d = updates.shape[1]
    out = torch.empty(len(rows), dtype=torch.float64, device=updates.device)
    step = max(1, int(chunk_bytes) // max(1, 16 * d))
    hv = hv.double()
    for lo in range(0, len(rows), step):
        diff = last.index_select(0, who[lo:lo + step]).double()
        diff += hv
        diff -= updates.index_select(0, rows[lo:lo + step])
        out[lo:lo + step] = torch.linalg.vector_norm(diff, dim=1)
    return out


def roll(window: torch.Tensor | None, row: torch.Tensor, n: int) -> torch.Tensor:
    """window (<= n, ...) with row appended, keeping the last n rows."""
    row = row[None]
    return row if window is None else torch.cat([window.to(row), row])[-n:]


def hessian_product(state: dict, w: torch.Tensor) -> torch.Tensor | None:
    """H (w - w_prev) from the state's pairs, float32 (d,); None without usable pairs (none yet, or the
    model did not move: dw = 0 makes sigma 0 / 0) or when the estimate is not finite."""
    dw, dg, prev = state.get("dw"), state.get("dg"), state.get("prev_global")
    if dw is None or prev is None:
        return None
    dw, dg = dw.to(w.device), dg.to(w.device)
    usable = (torch.linalg.vector_norm(dw.double(), dim=1) > 0) & torch.isfinite(dg).all(dim=1)
    if not bool(usable.any()) or not bool(usable[-1]):
        return None
    hv = lbfgs_hvp(dw[usable], dg[usable], w - prev.to(w.device))
    return hv.float() if bool(torch.isfinite(hv).all()) else None


@AGGREGATORS.register("fldetector", reference=REFERENCE)
def fldetector(window: int = 10, max_history_bytes: int | None = None) -> Rule:
    """FLDetector: L-BFGS-predicted updates over a window of rounds; flag the high-score gap-statistic cluster."""
    window = check_int("fldetector", "window", window, low=1)
    limit = default_history_bytes() if max_history_bytes is None else int(
        check_positive("fldetector", "max_history_bytes", max_history_bytes))

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        if ctx.global_params is None:
            raise ConfigError("fldetector needs the global model (RoundContext.global_params, which the engines"
                              " pass); a call without a round context has none")
        k, d = updates.shape
        dev = updates.device
        ids = client_ids(ctx, k)
        st = dict(ctx.state or {})
        w = ctx.global_params.float()
        clients = max(int(ids.max()) + 1, ctx.num_clients)
        last = grown_history(st.get("last"), clients, d, limit, dev)
        last_round = torch.full((clients,), -1, dtype=torch.long, device=dev)
        if st.get("last_round") is not None:
            last_round[: len(st["last_round"])] = st["last_round"].to(dev)
        dist = torch.zeros(k, dtype=torch.float64, device=dev)
        seen = torch.zeros(k, dtype=torch.bool, device=dev)
        hv = hessian_product(st, w)
        if hv is not None:
            seen = last_round[ids] == ctx.round - 1
            if bool(seen.any()):
                rows = torch.nonzero(seen).flatten()
                raw = prediction_errors(last, ids[rows], hv, updates, rows)
                total = raw.sum()
                dist[rows] = raw / total if bool(total > 0) else raw
        hist = roll(st.get("dist"), torch.zeros(clients, dtype=torch.float64, device=dev), window)
        hist_seen = roll(st.get("dist_seen"), torch.zeros(clients, dtype=torch.bool, device=dev), window)
        if hist.shape[1] < clients:  # more clients than the stored history knows
            grow = clients - hist.shape[1]
            hist = torch.cat([hist, hist.new_zeros(len(hist), grow)], 1)
            hist_seen = torch.cat([hist_seen, hist_seen.new_zeros(len(hist_seen), grow)], 1)
        hist[-1, ids], hist_seen[-1, ids] = dist, seen
        counts = hist_seen[:, ids].sum(0)
        score = (hist[:, ids] * hist_seen[:, ids]).sum(0) / counts.clamp_min(1)
        flagged = torch.zeros(k, dtype=torch.bool, device=dev)
        scored = counts >= window
        clusters = 1
        if int(scored.sum()) >= 3:
            g = generator(ctx.seed, "fldetector", ctx.round)
            clusters = gap_clusters(score[scored], g)
            if clusters >= 2:
                gap, n_left, rank = two_means_1d(score[scored][:, None])
                high = rank[:, 0] >= n_left[0]  # the upper cluster of the sorted scores
                flagged[torch.nonzero(scored).flatten()[high]] = True
        keep = ~flagged
        update = normalized(weights * keep).to(updates.dtype) @ updates
        nxt = {"last": last, "last_round": last_round, "dist": hist, "dist_seen": hist_seen,
               "prev_global": w.clone(), "prev_update": update.float().clone()}
        last.index_copy_(0, ids, updates.float())
        last_round[ids] = ctx.round
        if st.get("prev_global") is not None and st.get("prev_update") is not None:
            nxt["dw"] = roll(st.get("dw"), w - st["prev_global"].to(dev), window)
            nxt["dg"] = roll(st.get("dg"), update.float() - st["prev_update"].to(dev), window)
        info = {"clusters": clusters, "scored": int(scored.sum()), "flagged": ids[flagged].tolist()}
        return Aggregate(update, keep, score.float(), info, nxt)

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        return {"fldetector last updates ({clients} x {d})": min(limit, 4 * clients * d),
                "fldetector L-BFGS pairs (2 window x d)": 8 * window * d + 24 * d,
                "fldetector row blocks": min(CHUNK_BYTES, 16 * k * d)}

    return Rule(apply, f"fldetector(window={window})", memory=memory)
