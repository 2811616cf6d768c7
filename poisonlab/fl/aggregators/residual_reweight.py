"""Residual-based reweighting (Fu, Xie, Li and Chen 2019): per-coordinate robust regression, IRLS weights.

For each coordinate j, with the n values y_i of the round's rows and x_i = the rank of y_i (0..n-1):
1. a robust line through (x, y): line="repeated_median" (Siegel 1982, the paper's estimator):
   slope b = med_a med_{c != a} (y_(c) - y_(a)) / (c - a) over the sorted values y_(0..n-1), intercept
   a0 = med(y) - b (n - 1) / 2 (the authors' code); line="median": the flat line a0 = med(y), b = 0
   (the authors' cheaper variant; the paper's line costs a (k, k) slope matrix per coordinate);
2. residuals r_i = y_i - (a0 + b x_i); scale tau = 1.4826 (1 + 5 / (n - 1)) med |r| over the n - 1 largest
   |r_i| (the smallest dropped, as the authors' code does: the line passes through a point);
3. standardized residual e_i = r_i / (tau sqrt(1 - h_i)), leverage h_i = 1/n + (x_i - xbar)^2 / sum (x - xbar)^2;
4. weight w_ij = psi(e_i) / e_i for Huber's psi clipped at K = lambda sqrt(2 / n): min(1, K / |e_i|)
   (1 where r_i = 0; 0 where tau = 0 and r_i != 0);
5. values with w_ij < threshold are replaced by the line's a0 + b x_i;
6. each client's confidence c_i = sum_j w_ij s_j, s_j the (unbiased) std over clients of w_.j;
   c <- (c / max c)^2 (all 1 when max c = 0: every client equally trusted);
update = sum_i c_i n_i y'_i / sum_i c_i n_i (n_i the client weights, y' the values after step 5).
selected: c_i > 0; scores: 1 - c_i. Everything runs on column chunks of the (k, d) matrix (no loop over
clients or coordinates); memory: a (k, k, chunk) slope block of at most chunk_bytes.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, column_chunks, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Fu, Xie, Li and Chen 2019, Attack-Resistant Federated Learning with Residual-based Reweighting"
             " (arXiv:1912.11464); Siegel 1982 (repeated median)")
LINES = ("repeated_median", "median")


def middle(values: torch.Tensor, lo: int, m: int) -> torch.Tensor:
    """The median along the last dim of the m values ranked lo .. lo + m - 1 (0-based) of each row, by
    selection (torch.kthvalue, no full sort); even m: the mean of the two middle ones."""
    first = torch.kthvalue(values, lo + (m - 1) // 2 + 1, dim=-1).values
    return first if m % 2 else (first + torch.kthvalue(values, lo + m // 2 + 1, dim=-1).values) / 2


def line_fit(v: torch.Tensor, line: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(intercept, slope), each (cw,), of the line through the points (c, v[:, c]) of the rows of v (cw, n),
    each row sorted ascending."""
    n = v.shape[1]
    med = v[:, (n - 1) // 2] if n % 2 else (v[:, n // 2 - 1] + v[:, n // 2]) / 2  # rows already sorted
    if line == "median" or n < 2:
        return med, torch.zeros_like(med)
    x = torch.arange(n, dtype=v.dtype, device=v.device)
    gap = x[None, :] - x[:, None]  # c - a
    gap.fill_diagonal_(1.0)
    slopes = (v[:, None, :] - v[:, :, None]) / gap  # [j, a, c] = (v_c - v_a) / (c - a)
    slopes.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # each inner median skips c = a: ranked last
    return med - (slope := middle(middle(slopes, 0, n - 1), 0, n)) * (n - 1) / 2, slope


def chunk_weights(y: torch.Tensor, line: str, lam: float, threshold: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights w (cw, n), values after replacement y' (cw, n)) for one chunk y (cw, n) of coordinates x clients,
    float64."""
    cw, n = y.shape
    v, order = y.sort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=y.device).expand(cw, n))
    intercept, slope = line_fit(v, line)
    fit = intercept[:, None] + slope[:, None] * rank.to(y.dtype)
    r = y - fit
    abs_r = r.abs()
    scale = middle(abs_r, 1, n - 1) if n > 1 else torch.zeros_like(y[:, 0])  # the n - 1 largest |r|
    tau = 1.4826 * (1 + 5 / max(n - 1, 1)) * scale
    x = torch.arange(n, dtype=y.dtype, device=y.device)
    spread = ((x - x.mean()) ** 2).sum()
    h = 1 / n + ((x - x.mean()) ** 2 / spread if n > 1 else torch.zeros_like(x))
    root = (1 - h).clamp_min(0).sqrt()[rank]  # sqrt(1 - h_i) of each value's rank
    k_huber = lam * (2 / n) ** 0.5
    w = (k_huber * tau[:, None] * root / abs_r).nan_to_num(nan=0.0, posinf=1.0).clamp_max(1.0)
    w = torch.where(abs_r == 0, torch.ones_like(w), w)
    return w, torch.where(w < threshold, fit, y)


@AGGREGATORS.register("residual_reweight", reference=REFERENCE)
def residual_reweight(lam: float = 2.0, threshold: float = 0.1, line: str = "repeated_median",
                      chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Residual reweighting: per-coordinate robust line and Huber weights; clients weighted by confidence.

    Values whose weight is below threshold are replaced by the line's value (see the module docstring)."""
    lam = check_positive("residual_reweight", "lam", lam)
    threshold = check_positive("residual_reweight", "threshold", threshold, allow_zero=True)
    if line not in LINES:
        raise ConfigError(f"residual_reweight: line={line!r} is not known; accepted: {', '.join(LINES)}")
    chunk_bytes = check_int("residual_reweight", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        conf = torch.zeros(k, dtype=torch.float64, device=updates.device)
        cleaned = torch.empty_like(updates)
        per_entry = 24 * k if line == "repeated_median" else 64  # the (cw, k, k) slope block and selections
        for cols in column_chunks(k, d, per_entry, chunk_bytes):
            w, y = chunk_weights(updates[:, cols].T.double(), line, lam, threshold)
            spread = w.std(dim=1) if k > 1 else torch.zeros_like(w[:, 0])
            conf += spread @ w
            cleaned[:, cols] = y.T.to(updates.dtype)
        top = conf.max()
        c = (conf / top) ** 2 if bool(top > 0) else torch.ones_like(conf)
        update = normalized(weights * c).to(updates.dtype) @ cleaned
        return Aggregate(update, c > 0, (1 - c).float(), {"confidence": c.tolist()})

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        return {"residual_reweight cleaned copy": 4 * k * d,
                "residual_reweight chunk": min(chunk_bytes, 24 * k * k * d)}

    return Rule(apply, f"residual_reweight(lam={lam}, threshold={threshold}, line={line!r})", memory=memory)
