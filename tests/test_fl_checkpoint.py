"""Checkpoints: round trip, atomic files, inconsistency detected, aggregator state restored."""

import json

import pytest
import torch

from poisonlab.errors import DataError
from poisonlab.fl.checkpoint import META, TENSORS, load_checkpoint, save_checkpoint


def test_round_trip_and_no_temp_files(tmp_path):
    t = {"global_params": torch.arange(5, dtype=torch.float32), "aggregator.h": torch.ones(2, 3)}
    save_checkpoint(tmp_path, 4, t, {"history": [{"round": 0}], "aggregator": {"count": 3}})
    tensors, meta = load_checkpoint(tmp_path)
    assert torch.equal(tensors["global_params"], t["global_params"]) and torch.equal(tensors["aggregator.h"], t["aggregator.h"])
    assert meta["round"] == 4 and meta["aggregator"] == {"count": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([META, TENSORS])


def test_missing_and_inconsistent(tmp_path):
    assert load_checkpoint(tmp_path / "none") is None
    save_checkpoint(tmp_path, 1, {"x": torch.zeros(1)}, {})
    meta = json.loads((tmp_path / META).read_text())
    meta["round"] = 7
    (tmp_path / META).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="inconsistent"):
        load_checkpoint(tmp_path)


def test_federation_saves_and_restores_aggregator_state(tmp_path):
    from tests.test_fl_federation import _federation
    from tests.test_fl_federation import weighted_mean
    from tests.support import history_without_times

    states = []

    def counting(updates, weights, ctx):
        """A stateful rule: the mean, scaled by 1/(rounds seen + 1); its state comes in ctx.state and
        goes out in Aggregate.state (it must survive a resume)."""
        seen = (ctx.state["seen"] if ctx.state is not None else torch.zeros(1)) + 1
        if ctx.state is not None:
            assert ctx.state["name"] == "counting"
        states.append(float(seen))
        agg = weighted_mean(updates, weights, ctx)
        return type(agg)(agg.update / seen, agg.selected, state={"seen": seen, "name": "counting"})

    full = _federation(rounds=4, aggregator=counting).run()
    assert states == [1.0, 2.0, 3.0, 4.0]
    _federation(rounds=4, aggregator=counting, checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(stop_after=2)
    tensors, meta = load_checkpoint(str(tmp_path))
    assert torch.equal(tensors["aggregator.seen"], torch.tensor([2.0])) and meta["aggregator"] == {"name": "counting"}
    states.clear()
    resumed = _federation(rounds=4, aggregator=counting, checkpoint_every=2,
                          checkpoint_dir=str(tmp_path)).run(resume=True)
    assert states == [3.0, 4.0]
    assert history_without_times(resumed.history) == history_without_times(full.history)
    assert torch.equal(resumed.params, full.params)
