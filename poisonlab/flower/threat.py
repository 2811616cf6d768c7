"""Where each adversary's update attack runs on Flower: on its node, or in the server's threat simulation.

A Flower node sees only its own data and its own update. So:

- **On the node** (``attack_on_node``): an adversary whose attack is non-omniscient and that controls ONE client
  (and any attack a node's own ``attack`` setting names). The node applies the boost and the attack to its own
  update, as a row of a matrix of ``round-size`` rows (the number of clients drawn this round, which the server
  sends with the model): its own row first, the other rows zero. A non-omniscient attack reads only the
  malicious rows (poisonlab.fl.attacks.base.benign_rows) and the number of rows, so this is the built-in
  engine's non-omniscient knowledge exactly. Each attack's estimate from a single own row:
  sign_flip, scale: -c x, gamma x (own row only, as on the engine);
  gaussian: sigma = ||x|| / sqrt(d) from the own row, the engine's draw (seed, round);
  ipm: -epsilon x (the own update is the "benign mean");
  alie: mu = x, sigma = 0, so the row stays x (z = alie_z(round-size, 1) is computed but multiplies 0);
  min_max / min_sum: mu = x with zero spread, so the search finds gamma = 0 and the row stays x;
  model_replacement (non-omniscient): gamma (X - G) with gamma = round-size / eta, equal weights 1/k
  (the engine uses the rows' sample counts: equal sizes give the same row);
  constrain_and_scale: boost round-size / eta, then the norm bound;
  sybil: one identity, its own (inner-attacked) row.
- **On the server, a threat simulation** (``server_threat``): an adversary whose attack is omniscient (reads the
  honest rows) or that controls several clients (colluding: its attack reads all its rows). Its nodes train on
  their poisoned data and send that update unchanged; the RobustStrategy then applies the adversary's boost and
  attack to their rows with the context the built-in engine gives (the valid rows of the round, the weights =
  sample counts, server lr, the server's extras), so the same config gives the same numbers on both engines.
  This is a simulation of a stronger attacker, not something a node can do: the history lists the rewritten
  clients per round (``simulated``) and the log says "threat simulation".

Order: the engine applies the adversaries in order on one matrix; on Flower the node-side ones have already
acted when the server-side ones run. The two agree unless a server-side adversary precedes a node-side one
and reads its row (an omniscient attack reading another adversary's attacked row).
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from poisonlab.fl.round import apply_adversaries
from poisonlab.fl.types import RoundContext


def on_server(adversary, clients: Collection[int]) -> bool:
    """True if this adversary's boost and attack run in the server's threat simulation (omniscient or colluding)."""
    return adversary.attack is not None and (bool(adversary.omniscient) or len(clients) > 1)


def attack_on_node(update: torch.Tensor, adversary, client: int, ctx: RoundContext, round_size: int) -> torch.Tensor:
    """The node's own attacked update (d,): boost and attack on its row of a round_size-row matrix (the others
    zero; a non-omniscient attack does not read them), with ctx.omniscient False."""
    k = max(1, int(round_size))
    rows = torch.zeros(k, update.numel(), dtype=update.dtype, device=update.device)
    rows[0] = update
    mask = torch.zeros(k, dtype=torch.bool, device=update.device)
    mask[0] = True
    sampled = torch.full((k,), -1, dtype=torch.long, device=update.device)
    sampled[0] = client
    ctx = RoundContext(round=ctx.round, num_clients=ctx.num_clients, sampled=sampled, global_params=ctx.global_params,
                       server_lr=ctx.server_lr, malicious=mask, omniscient=False, seed=ctx.seed)
    return apply_adversaries(rows, [mask], [adversary.model_copy(update={"omniscient": False})], ctx)[0]


def server_threat(adversaries, adversary_clients, excluded: Collection[int] = ()):
    """threat(round, sampled clients (k,), malicious (k,)) -> (adversaries, row masks) for RobustStrategy: the
    server-side adversaries (on_server) active this round and their rows, less the excluded clients (nodes that
    run their own attack or report an honest role)."""
    chosen = [(a, ids) for a, ids in zip(adversaries, adversary_clients) if on_server(a, ids)]

    def threat(rnd: int, clients: torch.Tensor, malicious: torch.Tensor):
        out, masks = [], []
        skip = torch.tensor(sorted(excluded), dtype=torch.long)
        for adversary, ids in chosen:
            if not adversary.schedule.active(rnd):
                continue
            rows = torch.isin(clients, torch.tensor(ids, dtype=torch.long)) & ~torch.isin(clients, skip)
            out.append(adversary)
            masks.append(rows)
        return out, masks

    threat.excluded = excluded
    return threat
