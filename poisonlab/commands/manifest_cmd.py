"""``poisonlab manifest create|verify``: per-sample content hashes of a dataset (or per-tensor hashes of a
safetensors checkpoint), signed with HMAC-SHA256 or Ed25519; ``verify`` checks the signature and reports
every changed, added and removed sample.

Keys: ``--key FILE`` holding a shared secret (HMAC-SHA256, raw bytes) or an Ed25519 private key in
PEM (signing) / public key in PEM (verifying); ``manifest keygen`` writes an Ed25519 key pair.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from poisonlab.commands._options import load_dataset
from poisonlab.console import console, table
from poisonlab.errors import ConfigError, DataError
from poisonlab.outdir import check_new_file
from poisonlab.rundir import atomic_write_bytes

NAME = "manifest"
HELP = "Create or verify a signed manifest of per-sample hashes for a dataset or checkpoint (reports every change)."


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["create", "verify", "keygen"])
    parser.add_argument("target", help="dataset (.npz or name), checkpoint (.safetensors), or key-file prefix for keygen")
    parser.add_argument("--data-dir", help="directory with the dataset files (named file-based datasets)")
    parser.add_argument("--part", help="which part to load, e.g. 'test'")
    parser.add_argument("--manifest", help="manifest path (default <target>.manifest.signed.json)")
    parser.add_argument("--key", help="HMAC secret file, or Ed25519 private (create) / public (verify) key PEM")
    parser.add_argument("--force", action="store_true",
                        help="keygen: replace existing key files; create: replace a file that is not a manifest")


def read_key(path: str | None, private: bool):
    """An Ed25519 key from a PEM file, or the file's raw bytes as an HMAC secret; None without a path."""
    if path is None:
        return None
    raw = Path(path).read_bytes()
    if b"-----BEGIN" not in raw:
        if not raw:
            raise ConfigError(f"--key {path} is empty; accepted: a non-empty secret or an Ed25519 PEM key")
        return raw
    try:
        key = serialization.load_pem_private_key(raw, None) if b"PRIVATE" in raw else serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as err:
        raise DataError(f"--key {path} is not a readable PEM key: {err}") from None
    if not isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        raise ConfigError(f"--key {path} holds a {type(key).__name__}; accepted: Ed25519 keys or an HMAC secret")
    if private and isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"--key {path} is a public key; signing needs the Ed25519 private key")
    return key


def build(args) -> dict:
    """The unsigned manifest of the target."""
    from poisonlab.detect.provenance import checkpoint_manifest, dataset_manifest

    if args.target.endswith(".safetensors"):
        return checkpoint_manifest(args.target, lineage={"path": args.target})
    return dataset_manifest(load_dataset(args.target, args), lineage={"source": args.target})


def keygen(prefix: str, force: bool = False) -> int:
    """Write <prefix>.pem (Ed25519 private, mode 0600) and <prefix>.pub.pem (public).

    An existing key file is never overwritten without --force: losing a private key loses every
    signature made with it.
    """
    private, public = Path(prefix + ".pem"), Path(prefix + ".pub.pem")
    for path in (private, public):
        check_new_file(path, "keygen", force)
    key = Ed25519PrivateKey.generate()
    atomic_write_bytes(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), mode=0o600)
    atomic_write_bytes(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    console.print(f"wrote {prefix}.pem (private, keep secret) and {prefix}.pub.pem (public)")
    return 0


def check_manifest_target(path: Path, force: bool) -> None:
    """Refuse to write a manifest over a file that is not one (the user's own file), unless --force."""
    if path.is_dir():
        raise ConfigError(f"--manifest {path} is a directory; accepted: a file path")
    if not path.exists() or force:
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = None
    if not (isinstance(existing, dict) and existing.get("kind") in ("dataset", "checkpoint") and "samples" in existing):
        raise ConfigError(f"--manifest {path} exists and is not a poisonlab manifest; poisonlab does not overwrite"
                          " it; accepted: another --manifest path, or --force to replace it")


def run(args) -> int:
    from poisonlab.detect.provenance import check_manifest_shape, diff, sign, verify_signature

    if args.action == "keygen":
        return keygen(args.target, args.force)
    path = Path(args.manifest or args.target + ".manifest.signed.json")
    current = build(args)
    if args.action == "create":
        check_manifest_target(path, args.force)
        key = read_key(args.key, private=True)
        manifest = sign(current, key) if key is not None else current
        atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())
        console.print(f"manifest of {current['n']} entries -> {path}"
                      f" ({manifest['signature']['algorithm'] if key is not None else 'UNSIGNED'})")
        return 0
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"manifest {path} is not valid JSON: {err.msg}") from None
    except (UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"manifest {path} is not readable JSON ({type(err).__name__})") from None
    check_manifest_shape(saved, str(path))
    signature = "not checked (no --key)"
    if args.key:
        signature = "valid" if verify_signature(saved, read_key(args.key, private=False)) else "INVALID"
    d = diff(saved, current)
    rows = [("target", args.target), ("manifest", str(path)), ("signature", signature), ("changed", len(d.changed)),
            ("added", len(d.added)), ("removed", len(d.removed))]
    console.print(table("manifest verify", ["", "value"], rows))
    for kind, ids in (("changed", d.changed), ("added", d.added), ("removed", d.removed)):
        for i in ids:
            console.print(f"{kind}: {i}")
    return 0 if d.clean and signature != "INVALID" else 1
