"""3DFed (Li et al., IEEE S&P 2023, "3DFed: Adaptive and Extensible Framework for Covert Backdoor Attack in
Federated Learning"), update-level form: indicator feedback, adaptive tuning, noise masks and decoy rows."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.alt_min import benign_estimate, boosted_within, stealth_radius
from poisonlab.fl.attacks.base import check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.replacement import round_weights
from poisonlab.fl.attacks.signguard_adaptive import finite_rows
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator

REFERENCE = ("Li, Ye, Hu, Li, Wang, Fang and Shi 2023, 3DFed: Adaptive and Extensible Framework for Covert Backdoor"
             " Attack in Federated Learning (IEEE S&P)")


def feedback(ctx: RoundContext, d: int, device) -> float | None:
    """The indicator feedback of the previous round: the global model's change at the indicator coordinates
    over the change the backdoor rows' indicators would make if fully accepted (mean ratio; about 1 accepted,
    about 0 rejected, in between scaled down). None without a state from the round just before."""
    state = ctx.attack_state or {}
    if "global" not in state or state.get("round") != ctx.round - 1 or ctx.global_params is None:
        return None
    idx = state["indices"].to(device)
    now = ctx.global_params.to(device).flatten()
    if now.shape != (d,):
        return None
    observed = (now[idx] - state["global"].to(now)[idx]).double()
    expected = state["expected"].to(observed)
    ratio = observed / expected.abs().clamp_min(1e-30) * expected.sign()
    value = float(ratio.mean())
    return value if value == value and abs(value) != float("inf") else None


def tuned(ctx: RoundContext, m: int, boost: float, low: float, high: float, up: float, down: float,
          threshold: float, adaptive: bool) -> tuple[float, int, float | None]:
    """(boost, decoys, feedback) for this round: accepted (feedback >= threshold) raises the boost by up, rejected
    lowers it by down and adds a decoy (at most m - 2 decoys, so two rows carry the masked backdoor); the first
    round starts at boost with no decoy."""
    state = ctx.attack_state or {}
    lam, decoys = float(state.get("boost", boost)), int(state.get("decoys", 0))
    seen = feedback(ctx, int(state["global"].numel()) if "global" in state else -1, "cpu") if adaptive else None
    if seen is not None:
        if seen >= threshold:
            lam = min(high, lam * up)
        else:
            lam, decoys = max(low, lam * down), decoys + 1
    return lam, min(decoys, max(0, m - 2)), seen


def zero_sum_noise(m: int, d: int, size: float, ctx: RoundContext) -> torch.Tensor:
    """(m, d) Gaussian noise masks whose rows sum to 0 (so the backdoor rows' mean is kept), of mean norm size
    (one common factor, so the sum stays 0)."""
    if m < 2 or size == 0:
        return torch.zeros(m, d, dtype=torch.float64, device="cpu")
    noise = torch.randn(m, d, generator=generator(ctx.seed, "attack", "threedfed", ctx.round), device="cpu",
                        dtype=torch.float64)
    noise = noise - noise.mean(dim=0)
    return noise * (size / float(noise.norm(dim=1).mean().clamp_min(1e-300)))


@ATTACKS.register("threedfed", reference=REFERENCE)
def threedfed(boost: float = 2.0, low: float = 0.5, high: float = 50.0, up: float = 1.5, down: float = 0.5,
              indicators: int = 20, kappa: float = 10.0, noise: float = 0.5, threshold: float = 0.5,
              adaptive: bool = True):
    """3DFed, update-level form (pair it with a backdoor poison on the same adversary).

    Each round, from the backdoor-trained rows x_m and the benign estimate d_ben (alt_min's: honest mean if
    omniscient, else the previous global update):
    - backdoor rows: d_ben + lambda * (mean x_m - d_ben), kept within the benign spread around d_ben
      (alt_min's stealth radius), the paper's constrained backdoor training in update form;
    - indicators: the `indicators` (at most d // 10) coordinates where |d_ben| is smallest (the rarely updated
      parameters, as the paper picks them) are set to kappa * the backdoor row's RMS entry; next round the
      global model's change there over the change full acceptance would make is the feedback (about 1
      accepted, about 0 rejected);
    - adaptive tuning: accepted raises lambda by `up` (at most high), rejected lowers it by `down` (at least
      low) and turns one more attacker into a decoy;
    - noise masks: zero-sum Gaussian masks of norm noise * the radius on the backdoor rows, so that each
      differs (against cosine-similarity and clustering defenses) while their sum is unchanged;
    - decoys: the decoy attackers send d_ben, a benign-looking update.
    Simplified from the paper: its noise masks and decoy models are optimised against the defense's loss
    (here drawn and set to d_ben), its indicator is implanted by training (here written on the update), and
    its tuning also changes the backdoor training's loss weights (here only lambda and the decoy count).
    The state (next_state: this round's global model, indicator coordinates and expected change, lambda,
    decoys) is kept by the engine between rounds; adaptive False keeps lambda and no decoy.
    """
    check_range("boost", boost, 0.0, low_open=True)
    check_range("low", low, 0.0, low_open=True)
    check_range("high", high, low)
    check_range("up", up, 1.0)
    check_range("down", down, 0.0, 1.0, low_open=True)
    check_range("kappa", kappa, 0.0)
    check_range("noise", noise, 0.0)
    check_range("threshold", threshold, 0.0, 1.0)
    if isinstance(indicators, bool) or not isinstance(indicators, int) or indicators < 0:
        raise ConfigError(f"threedfed indicators={indicators!r} is not valid; accepted: an integer >= 0")
    if not low <= boost <= high:
        raise ConfigError(f"threedfed boost={boost} is not in [low, high] = [{low}, {high}]")

    def plan(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext):
        """(new malicious rows (m, d) float64, indicator indices, lambda, decoys)."""
        m, d = int(malicious.sum()), updates.shape[1]
        lam, decoys, _ = tuned(ctx, m, boost, low, high, up, down, threshold, adaptive)
        centre = benign_estimate(updates, malicious, ctx).double()
        radius = stealth_radius(updates, malicious, ctx)
        own = finite_rows(updates[malicious]).double()
        target = own.mean(dim=0) if len(own) else centre
        backdoor = boosted_within(target[None], centre, lam, radius)[0]
        carriers = m - decoys
        rows = backdoor.expand(carriers, d) + zero_sum_noise(carriers, d, noise * radius, ctx).to(updates.device)
        idx = centre.abs().argsort()[:min(indicators, d // 10)]
        rms = float(backdoor.norm()) / d ** 0.5
        rows[:, idx] = kappa * rms
        out = torch.cat([rows, centre.expand(decoys, d)])
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), idx, lam, decoys

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        return rewrite(updates, malicious, plan(updates, malicious, ctx)[0])

    def next_state(before: torch.Tensor, after: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> dict:
        """This round's global model, indicator coordinates, their expected global change and the tuning."""
        malicious = check(before, malicious)
        if ctx.global_params is None or not bool(malicious.any()):
            return dict(ctx.attack_state or {})
        _, idx, lam, decoys = plan(before, malicious, ctx)
        a = round_weights(ctx, before.shape[0], torch.float64, before.device)
        expected = ctx.server_lr * (a[malicious, None] * after[malicious][:, idx].double()).sum(dim=0)
        return {"global": ctx.global_params.flatten().clone(), "round": ctx.round,
                "indices": idx.clone(), "expected": expected, "boost": lam, "decoys": decoys}

    attack.next_state = next_state
    return attack
