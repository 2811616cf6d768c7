"""poisonlab flat vectors / nn.Module parameters <-> Flower ArrayRecord, and the validation reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from flwr.app import Array, ArrayRecord  # noqa: E402

from poisonlab.errors import DataError  # noqa: E402
from poisonlab.fl.local import flat_params  # noqa: E402
from poisonlab.flower.arrays import ArraySpec, from_record, module_to_record, read_record, to_record  # noqa: E402
from poisonlab.models import make_model  # noqa: E402


def test_module_round_trip_matches_engine_flat_layout():
    model = make_model("cnn", (1, 8, 8), 10, seed=0)
    spec = ArraySpec.from_module(model)
    assert spec.dim == sum(p.numel() for p in model.parameters())
    record = module_to_record(model)
    assert list(record.keys()) == [n for n, _ in model.named_parameters()]
    flat = from_record(record, spec)
    assert torch.equal(flat, flat_params(model))  # same order as the built-in engine's flat vectors
    other = make_model("cnn", (1, 8, 8), 10, seed=1)
    torch.nn.utils.vector_to_parameters(flat, other.parameters())
    assert torch.equal(flat_params(other), flat)


def test_buffers_travel_beside_the_parameters_with_their_dtypes():
    """A batch-norm model's record holds its running statistics (float32) and its batch counter (int64, 0-d)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[1].running_mean.fill_(0.5)
    model[1].num_batches_tracked.fill_(7)
    spec = ArraySpec.from_module(model)
    assert spec.buffers == (("1.running_mean", (4,), "float32"), ("1.running_var", (4,), "float32"),
                            ("1.num_batches_tracked", (), "int64"))
    flat, buffers = read_record(module_to_record(model), spec)
    assert torch.equal(flat, flat_params(model))
    assert buffers["1.num_batches_tracked"].dtype == torch.int64 and int(buffers["1.num_batches_tracked"]) == 7
    assert torch.equal(buffers["1.running_mean"], torch.full((4,), 0.5))
    with pytest.raises(DataError, match="buffers .* missing"):
        to_record(flat, spec)
    params_only = to_record(flat, ArraySpec(spec.names, spec.shapes))  # a sender that drops the buffers
    with pytest.raises(DataError, match="missing arrays"):
        read_record(params_only, spec)
    broken = dict(buffers, **{"1.running_var": torch.full((4,), float("nan"))})
    with pytest.raises(DataError, match="non-finite"):
        read_record(to_record(flat, spec, broken), spec)


def test_to_record_rejects_wrong_length():
    spec = ArraySpec(("a",), ((2, 2),))
    with pytest.raises(DataError, match="expected d=4"):
        to_record(torch.zeros(5), spec)


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: r.__delitem__("b"), r"missing arrays \['b'\]"),
    (lambda r: r.__setitem__("extra", Array(np.zeros(1, np.float32))), r"unexpected arrays \['extra'\]"),
    (lambda r: r.__setitem__("a", Array(np.zeros((4,), np.float32))), r"shape \(4,\); expected \(2, 2\)"),
    (lambda r: r.__setitem__("a", Array(np.zeros((2, 2), np.int64))), "dtype int64; expected float32"),
    (lambda r: r.__setitem__("b", Array(np.array([np.inf, 1, np.nan], np.float32))), r"1 NaN, 1 Inf"),
])
def test_from_record_reasons(mutate, reason):
    spec = ArraySpec(("a", "b"), ((2, 2), (3,)))
    record = to_record(torch.arange(7.0), spec)
    mutate(record)
    with pytest.raises(DataError, match=reason):
        from_record(record, spec)


def test_lying_metadata_and_garbage_bytes_are_rejected_without_unpickling():
    spec = ArraySpec(("a",), ((2, 2),))
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3), np.float32), allow_pickle=False)
    liar = ArrayRecord({"a": Array(dtype="float32", shape=(2, 2), stype="numpy.ndarray", data=buf.getvalue())})
    with pytest.raises(DataError, match="decodes to"):
        from_record(liar, spec)
    garbage = ArrayRecord({"a": Array(dtype="float32", shape=(2, 2), stype="numpy.ndarray", data=b"\x80\x04junk")})
    with pytest.raises(DataError, match="cannot be decoded"):
        from_record(garbage, spec)
    huge = ArrayRecord({"a": Array(dtype="float32", shape=(2, 2), stype="numpy.ndarray", data=b"0" * 100_000)})
    with pytest.raises(DataError, match="payload is 100000 bytes"):
        from_record(huge, spec)
    with pytest.raises(DataError, match="missing arrays"):
        from_record(None, spec)


def test_lazy_package_raises_config_error_without_flower(monkeypatch):
    import poisonlab.flower as pf
    from poisonlab.errors import ConfigError

    monkeypatch.setattr(pf, "flower_available", lambda: False)
    with pytest.raises(ConfigError, match=r"Flower is not installed; install poisonlab\[flower\]"):
        pf.RobustStrategy
