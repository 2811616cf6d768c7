"""``poisonlab poison``: write a poisoned dataset (npz) with its poison mask and a manifest of content hashes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from poisonlab.commands._options import json_params
from poisonlab.console import console
from poisonlab.data import load
from poisonlab.errors import ConfigError
from poisonlab.hashing import sample_hashes, sha256_file
from poisonlab.poison.registry import POISONS, make_poison

NAME = "poison"
HELP = "Poison a dataset (label_flip, backdoor, external, ...) and write it as npz with its mask and a hash manifest."


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (see 'poisonlab list datasets')")
    parser.add_argument("--data-dir", help="directory with the dataset files (file-based datasets)")
    parser.add_argument("--part", help="which part to load, e.g. 'test' for the MNIST test set")
    parser.add_argument("--attack", required=True, help=f"poison name: {', '.join(POISONS.names())}")
    parser.add_argument("--params", default="{}", help='attack parameters as JSON, e.g. \'{"source": 7, "target": 1, "fraction": 0.5}\'')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .npz path; the manifest goes to <out>.manifest.json")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file poisonlab did not write")


def check_poison_out(out: Path, source: str | None, force: bool) -> None:
    """Refuse an --out that is the input dataset itself, a directory, or a file poisonlab did not write
    (one without its <out>.manifest.json) unless --force: a user's data is never overwritten."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; accepted: a .npz file path")
    if not out.exists():
        return
    if source is not None and Path(source).exists() and out.resolve() == Path(source).resolve():
        raise ConfigError(f"--out {out} is the input dataset; poisonlab never overwrites its input;"
                          " accepted: another --out path")
    if not out.with_name(out.name + ".manifest.json").is_file() and not force:
        raise ConfigError(f"--out {out} exists and was not written by 'poisonlab poison' (no {out.name}.manifest.json"
                          " beside it); accepted: another --out path, or --force to replace it")


def run(args) -> int:
    from poisonlab.commands.train_cmd import dataset_params
    from poisonlab.data.formats import atomic_write_bytes

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out} should end in .npz")
    check_poison_out(out, args.data_dir, args.force)
    poison = make_poison({"name": args.attack, "params": json_params(args.params)})
    if poison.requires_model:
        raise ConfigError(f"attack '{args.attack}' needs a trained model; run it through 'poisonlab run' instead")
    if poison.trains_model:
        raise ConfigError(f"attack '{args.attack}' changes training, not only data; run it through 'poisonlab run' instead")
    data = load(args.dataset, **dataset_params(args))
    result = poison.apply(data, args.seed)
    x, y, mask = result.data.x.numpy(), result.data.y.numpy(), result.mask.numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y, classes=np.array(result.data.classes, dtype=str), mask=mask)
    atomic_write_bytes(out, buf.getvalue())
    manifest = {"dataset": args.dataset, "attack": args.attack, "params": json_params(args.params), "seed": args.seed,
                "n": int(len(y)), "poisoned": int(mask.sum()), "hash": "sha256(float32 x bytes + int64 label bytes)",
                "file_sha256": sha256_file(out), "info": result.info,
                "samples": [{"sha256": h, "poisoned": bool(m)} for h, m in zip(sample_hashes(x, y), mask)]}
    manifest_path = out.with_name(out.name + ".manifest.json")
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1, default=str).encode())
    console.print(f"{args.attack} on {data.name}: {int(mask.sum())} of {len(y)} samples poisoned -> {out}"
                  f" (manifest {manifest_path.name})")
    return 0
