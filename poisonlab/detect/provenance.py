"""Data provenance: per-sample content hashes, signed manifests, and the per-source provenance defense.

- per-sample content hashes: ``poisonlab.hashing.sample_hashes`` (raw float32 bytes, then the int64 label).
- ``dataset_manifest`` / ``checkpoint_manifest``: a JSON-able record of a dataset (one entry per
  sample: id, hash, label, source) or of a safetensors checkpoint (one hash per tensor), plus a
  digest of the whole. ``sign`` adds an HMAC-SHA256 (shared secret) or Ed25519 (private key)
  signature over the canonical JSON (sorted keys, no spaces) of everything but the signature;
  ``verify_signature`` checks it. ``diff`` reports every changed, added and removed sample.
- ``provenance`` detector (Baracaldo et al., "Mitigating Poisoning Attacks on Machine Learning
  Models: A Data Provenance Based Approach", AISec 2017): group the training data by source; a
  source whose removal improves validation accuracy by more than ``epsilon`` is flagged.
  Learner: a logistic-regression head on fixed features (the model's penultimate activations or
  raw inputs), all leave-one-source-out heads trained at once (see features.fit_heads).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.features import fit_heads, heads_metrics, representations, standardize
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import ConfigError, DataError
from poisonlab.hashing import sample_hashes, sha256_file

MANIFEST_VERSION = 1


def canonical(manifest: dict) -> bytes:
    """The bytes that are signed: canonical JSON of the manifest without its signature."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def dataset_manifest(data: Dataset, sources=None, ids=None, lineage: dict | None = None) -> dict:
    """Manifest of a dataset: one {id, sha256, label, source} per sample, a digest over all, lineage."""
    hashes = sample_hashes(data.x, data.y)
    ids = [str(i) for i in (range(len(data)) if ids is None else ids)]
    sources = ["unknown"] * len(data) if sources is None else [str(s) for s in np.asarray(sources).tolist()]
    if len(ids) != len(data) or len(sources) != len(data):
        raise DataError(f"ids/sources have {len(ids)}/{len(sources)} entries for {len(data)} samples; they must match")
    samples = [{"id": i, "sha256": h, "label": int(lab), "source": s}
               for i, h, lab, s in zip(ids, hashes, data.y.tolist(), sources)]
    return {"version": MANIFEST_VERSION, "kind": "dataset", "name": data.name, "n": len(data),
            "sample_shape": list(data.input_shape), "classes": list(data.classes),
            "digest": hashlib.sha256("".join(hashes).encode()).hexdigest(), "lineage": lineage or {},
            "samples": samples}


def checkpoint_manifest(path, lineage: dict | None = None) -> dict:
    """Manifest of a safetensors checkpoint: SHA-256 of the file and of every tensor (name, dtype, shape, bytes)."""
    from safetensors import safe_open

    path = Path(path)
    tensors = []
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
        for name in sorted(f.keys()):
            a = np.ascontiguousarray(f.get_tensor(name))
            h = hashlib.sha256(f"{name}|{a.dtype.str}|{a.shape}|".encode() + a.tobytes()).hexdigest()
            tensors.append({"id": name, "sha256": h, "shape": list(a.shape), "dtype": a.dtype.str})
    return {"version": MANIFEST_VERSION, "kind": "checkpoint", "name": path.name, "n": len(tensors),
            "file_sha256": sha256_file(path), "metadata": meta, "lineage": lineage or {},
            "samples": tensors}


def sign(manifest: dict, key: bytes | Ed25519PrivateKey) -> dict:
    """A copy of manifest with a signature: HMAC-SHA256 for a bytes key, Ed25519 for a private key."""
    body = canonical(manifest)
    if isinstance(key, Ed25519PrivateKey):
        public = key.public_key().public_bytes_raw().hex()
        sig = {"algorithm": "ed25519", "public_key": public, "value": key.sign(body).hex()}
    elif isinstance(key, (bytes, bytearray)) and len(key) > 0:
        sig = {"algorithm": "hmac-sha256", "value": hmac.new(bytes(key), body, hashlib.sha256).hexdigest()}
    else:
        raise ConfigError(f"signing key of type {type(key).__name__} is not usable; accepted: non-empty bytes"
                          " (HMAC-SHA256) or an Ed25519 private key")
    return {**manifest, "signature": sig}


def verify_signature(manifest: dict, key: bytes | Ed25519PublicKey | Ed25519PrivateKey) -> bool:
    """True if the manifest's signature matches its content under key (HMAC secret or Ed25519 public key)."""
    sig = manifest.get("signature")
    if not isinstance(sig, dict) or "value" not in sig:
        raise DataError("manifest has no signature; sign it with 'poisonlab manifest create --key ...'")
    body = canonical(manifest)
    if sig.get("algorithm") == "hmac-sha256":
        if not isinstance(key, (bytes, bytearray)):
            raise ConfigError("manifest is signed with HMAC-SHA256; pass the shared secret (bytes) to verify it")
        return hmac.compare_digest(hmac.new(bytes(key), body, hashlib.sha256).hexdigest(), sig["value"])
    if sig.get("algorithm") == "ed25519":
        public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("manifest is signed with Ed25519; pass the Ed25519 public key to verify it")
        try:
            public.verify(bytes.fromhex(sig["value"]), body)
            return True
        except (InvalidSignature, ValueError):
            return False
    raise DataError(f"signature algorithm '{sig.get('algorithm')}' is not known; accepted: hmac-sha256, ed25519")


def check_manifest_shape(manifest, where: str) -> dict:
    """manifest if it has the shape verify reads (a JSON object whose 'samples' is a list of objects with a
    string or integer 'id' and a string 'sha256'; 'signature', if any, an object), else a one-line
    DataError naming the first misfit (a manifest is an untrusted file)."""
    if not isinstance(manifest, dict):
        raise DataError(f"manifest {where} holds a JSON {type(manifest).__name__}; accepted: a JSON object"
                        " written by 'poisonlab manifest create'")
    samples = manifest.get("samples")
    if not isinstance(samples, list):
        raise DataError(f"manifest {where}: 'samples' is {type(samples).__name__}; accepted: a list of entries")
    for i, s in enumerate(samples):
        if not (isinstance(s, dict) and isinstance(s.get("sha256"), str)
                and isinstance(s.get("id"), (str, int)) and not isinstance(s.get("id"), bool)):
            raise DataError(f"manifest {where}: samples[{i}] is not an entry with a string 'sha256' and an id;"
                            " accepted: {\"id\": ..., \"sha256\": \"...\"}")
    signature = manifest.get("signature", {})
    if not isinstance(signature, dict) or not isinstance(signature.get("value", ""), str):
        raise DataError(f"manifest {where}: 'signature' is not an object; accepted: the signature written by"
                        " 'poisonlab manifest create --key'")
    return manifest


@dataclass(frozen=True)
class ManifestDiff:
    """Sample ids changed (same id, new content), added (new id) and removed (id gone) since the manifest."""

    changed: list[str]
    added: list[str]
    removed: list[str]

    @property
    def clean(self) -> bool:
        """True when nothing changed."""
        return not (self.changed or self.added or self.removed)


def diff(old: dict, new: dict) -> ManifestDiff:
    """Every changed, added and removed entry between two manifests.

    Entries whose content hash appears on both sides (as a multiset) are unchanged, wherever they
    moved; of the rest, an id present on both sides is changed, only in new is added, only in old
    is removed. (So inserting one sample reports one addition, not a shifted tail of changes.)
    """
    from collections import Counter

    def unmatched(a: list[dict], b: list[dict]) -> list[str]:
        pool = Counter(s["sha256"] for s in b)
        left = []
        for s in a:
            if pool[s["sha256"]] > 0:
                pool[s["sha256"]] -= 1
            else:
                left.append(s["id"])
        return left

    gone, fresh = unmatched(old["samples"], new["samples"]), unmatched(new["samples"], old["samples"])
    both = set(gone) & set(fresh)
    return ManifestDiff([i for i in fresh if i in both], [i for i in fresh if i not in both],
                        [i for i in gone if i not in both])


@DETECTORS.register("provenance",
                    reference="Baracaldo et al., Mitigating Poisoning Attacks on ML Models: A Data Provenance Based Approach, AISec 2017")
class Provenance:
    """Per-source defense: leave each source out; flag sources whose removal improves validation accuracy > eps."""

    inspects = "sources"
    requires = ("data", "sources", "validation")

    def __init__(self, *, epsilon: float = 0.01, steps: int = 200, lr: float = 0.1, feature_layer: str | None = None):
        self.epsilon, self.steps, self.lr = float(epsilon), int(steps), float(lr)
        self.feature_layer = feature_layer  # module whose input is the features; None: the last nn.Linear

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None,
             validation: Dataset | None = None, sources=None) -> Detection:
        """One score per sample = the validation-accuracy gain when its source is left out (flags per source).

        sources: one source id per sample of data; validation: held-out clean data.
        """
        require(self, data=data, sources=sources, validation=validation)
        src = np.asarray(sources)
        if src.shape != (len(data),):
            raise DataError(f"sources has shape {src.shape}; expected ({len(data)},), one source id per sample")
        names, codes = np.unique(src, return_inverse=True)
        feats, fval = standardize(representations(data.x, model, self.feature_layer),
                                  representations(validation.x, model, self.feature_layer))
        codes = torch.from_numpy(codes).to(feats.device)
        kinds = torch.arange(len(names), device=feats.device)
        weights = torch.cat([torch.ones(1, len(data), device=feats.device), (codes[None] != kinds[:, None]).float()])
        W, b = fit_heads(feats, data.y, data.num_classes, weights=weights, steps=self.steps, lr=self.lr)
        acc, _ = heads_metrics(W, b, fval, validation.y)
        gain = acc[1:] - acc[0]
        scores = gain[codes].double()
        flagged_sources = [str(names[k]) for k in torch.nonzero(gain > self.epsilon).flatten().tolist()]
        return Detection(scores, scores > self.epsilon, {
            "accuracy_all": float(acc[0]), "flagged_sources": flagged_sources,
            "gain_by_source": {str(n): float(g) for n, g in zip(names, gain)}})
