"""Provenance: content hashes, manifest diffs, HMAC and Ed25519 signatures, the per-source defense."""

import hashlib

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.provenance import dataset_manifest, diff, sign, verify_signature
from poisonlab.errors import ConfigError, DataError
from poisonlab.hashing import sample_hashes
from test_detect_roni import blobs
from test_detect_common import single_thread  # noqa: F401 (autouse: torch on one thread)


def tiny():
    return Dataset(torch.arange(12, dtype=torch.float32).view(4, 3) / 12, torch.tensor([0, 1, 0, 1]), ("a", "b"))


def test_hash_is_sha256_of_float32_bytes_and_int64_label():
    data = tiny()
    want = hashlib.sha256(np.float32([0, 1 / 12, 2 / 12]).astype("<f4").tobytes() + np.int64(0).tobytes()).hexdigest()
    assert sample_hashes(data.x, data.y)[0] == want
    assert len(set(sample_hashes(data.x, data.y))) == 4


def test_diff_reports_changed_added_removed():
    data = tiny()
    before = dataset_manifest(data)
    x, y = data.x.clone(), data.y.clone()
    x[1, 0] += 1e-3  # one value of sample 1 changed
    changed = dataset_manifest(data.replace(x=x))
    assert diff(before, changed).changed == ["1"]
    grown = dataset_manifest(data.subset([0, 1]).concat(Dataset(torch.ones(1, 3), torch.tensor([1]), ("a", "b")))
                             .concat(data.subset([2, 3])))
    d = diff(before, grown)  # inserted at position 2: one addition, nothing shifted reported as changed
    assert (d.changed, d.added, d.removed) == ([], ["2"], [])
    d = diff(before, dataset_manifest(data.subset([0, 1, 2])))
    assert (d.changed, d.added, d.removed) == ([], [], ["3"])
    relabeled = dataset_manifest(data.replace(y=torch.tensor([0, 1, 1, 1])))
    assert diff(before, relabeled).changed == ["2"]
    assert diff(before, dataset_manifest(data)).clean


def test_hmac_and_ed25519_signatures_detect_tampering():
    manifest = dataset_manifest(tiny(), sources=["s1", "s1", "s2", "s2"])
    hm = sign(manifest, b"secret")
    assert hm["signature"]["algorithm"] == "hmac-sha256"
    assert verify_signature(hm, b"secret") and not verify_signature(hm, b"other")
    key = Ed25519PrivateKey.generate()
    ed = sign(manifest, key)
    assert verify_signature(ed, key.public_key())
    tampered = {**ed, "samples": [dict(ed["samples"][0], label=1)] + ed["samples"][1:]}
    assert not verify_signature(tampered, key.public_key())
    assert not verify_signature(ed, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ConfigError, match="signed with Ed25519"):
        verify_signature(ed, b"secret")
    with pytest.raises(DataError, match="no signature"):
        verify_signature(manifest, b"secret")


def test_provenance_defense_flags_the_poisoned_source():
    data = blobs(300, 3)
    sources = np.repeat(np.array(["a", "b", "c", "d", "e"]), 60)
    y = data.y.clone()
    y[240:] = (y[240:] + 1) % 3  # source 'e' flips every label
    det = get("provenance", epsilon=0.02, steps=150).scan(data=data.replace(y=y), sources=sources, validation=blobs(300, 4))
    assert det.details["flagged_sources"] == ["e"]
    assert bool(det.flagged[240:].all()) and not bool(det.flagged[:240].any())
    with pytest.raises(DataError, match="one source id per sample"):
        get("provenance").scan(data=data, sources=sources[:10], validation=data)
