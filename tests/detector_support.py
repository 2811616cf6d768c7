"""Shared checks of the stateful detectors (tests/test_detector_*.py): a state that survives a checkpoint,
and several fuzzed rounds with non-finite rows (the registry-wide fuzzer runs two rounds; a detector
over rounds needs more before it acts)."""

from __future__ import annotations

import dataclasses

import torch

from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.checkpoint import load_checkpoint, save_checkpoint
from poisonlab.fl.types import RoundContext
from tests.test_fuzz_aggregators import SPECIALS, check_contract


def through_checkpoint(state: dict, directory) -> dict:
    """state written and read back as the federation's checkpoint stores it: tensors in safetensors,
    other values in JSON."""
    tensors = {f"aggregator.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
    meta = {"history": [], "aggregator": {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}}
    save_checkpoint(directory, 0, tensors, meta)
    tensors, meta = load_checkpoint(directory)
    return {**meta["aggregator"], **{k.removeprefix("aggregator."): v for k, v in tensors.items()}}


def resumes_exactly(rule, rounds: list[tuple[torch.Tensor, RoundContext]], directory) -> None:
    """Running every round in one go and running them with the state saved and reloaded after each round
    give the same updates, masks and scores."""
    def run(reload: bool):
        state, out = None, []
        for x, ctx in rounds:
            agg = rule(x.clone(), torch.ones(len(x)), dataclasses.replace(ctx, state=state))
            state = through_checkpoint(agg.state, directory) if reload and agg.state is not None else agg.state
            out.append(agg)
        return out

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a.update, b.update) and torch.equal(a.selected, b.selected)
        assert (a.scores is None) == (b.scores is None)
        if a.scores is not None:
            assert torch.equal(a.scores, b.scores)


def fuzz_rounds(name: str, params: dict, rounds: int = 5, seeds: int = 6) -> None:
    """build_rule(name, params) over `rounds` rounds of rows with NaN/Inf/huge entries: the contract of
    tests/test_fuzz_aggregators.check_contract every round (finite update, no non-finite row selected)."""
    rule = build_rule(name, params)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        k, d = 3 + seed, 5 + 3 * seed
        state = None
        for r in range(rounds):
            x = torch.randn(k, d, generator=g) * [1e-6, 1.0, 1e3][(seed + r) % 3]
            bad = torch.randint(0, k, (seed % 3,), generator=g)
            for i, row in enumerate(bad.tolist()):
                x[row, i % d] = SPECIALS[(seed + r + i) % len(SPECIALS)]
            state = check_contract(name, rule, x, torch.ones(k), r, state).state
