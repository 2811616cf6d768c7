"""The backdoor attack zoo on the MNIST split: clean accuracy and ASR of every attack at its paper's default rate.

Run:  .venv/bin/python benchmarks/backdoor_zoo.py [--model cnn] [--data-dir ../shared/data] [--out docs/poisoning-zoo]
      .venv/bin/python benchmarks/backdoor_zoo.py --gallery-only     # only the gallery PNGs (seconds)
      .venv/bin/python benchmarks/backdoor_zoo.py --model resnet20 --only badnets blended --resume --no-gallery
      python benchmarks/backdoor_zoo.py --device cuda --no-gallery      # on a GPU: models train and evaluate there
Seeded 8,000/2,000 split of the real MNIST test set, as benchmarks/poisoning_experiments.py; one clean
model (same seed, data order and initial weights) is trained once and shared by every row. Writes
<out>/results-<model>.json (after every row), <out>/<attack>.png galleries, and prints the markdown table
that docs/poisoning-zoo.md shows. --seeds 0 1 2 repeats every row with those training seeds (the split stays
seed 0's) and the table shows each figure's mean and min-max. --only runs a subset (names as slug() gives them); --resume keeps the rows
already in the results JSON and runs the others; the clean model is cached (safetensors, never pickle) in
<repo>/tmp/zoo-clean-<model>-seed0[-<device type>].safetensors so that a resumed run does not retrain it.
--device (default cpu) is where the models train and are evaluated (run_centralized's device); each result records
it, since CPU and CUDA runs differ by float rounding. The attacks' own networks and optimisations run where the
poison puts them (the bound clean model's device for those that optimise on it).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from poisonlab.centralized import run_centralized, train_clean_model
from poisonlab.data import load
from poisonlab.device import describe, resolve
from poisonlab.model_checkpoint import load_checkpoint, save_checkpoint
from poisonlab.poison import POISONS
from poisonlab.poison.bullseye_polytope import BullseyePolytope
from poisonlab.poison.gallery import render_gallery
from poisonlab.poison.generated import GeneratedBackdoor
from poisonlab.poison.latent_backdoor import LatentBackdoor
from poisonlab.poison.low_frequency import LowFrequency
from poisonlab.poison.trojannn import TrojanNN
from poisonlab.rng import derive_seed
from poisonlab.rundir import atomic_write_text
from poisonlab.training import TrainConfig

SEED = 0
TRIGGER_FROM_MODEL = (LowFrequency, TrojanNN, LatentBackdoor, BullseyePolytope)  # optimised on the clean model
TRIGGER_FROM_DATA = (LowFrequency, LatentBackdoor, GeneratedBackdoor)  # computed / trained in apply()
CFG = TrainConfig(epochs=5, batch_size=64, lr=0.05, momentum=0.9)
PHOTOS = Path("poison-images") / "embraer-190"  # under --data-dir: ReFool's reflection photos
CACHE = Path(__file__).resolve().parents[1] / "tmp"
HEADER = ("| attack | poisoning rate | clean acc, clean model | clean acc, poisoned | ASR | ASR, clean model | time |\n"
          "|---|---|---|---|---|---|---|")


def attacks(photos: Path) -> dict[str, tuple[dict, str]]:
    """name -> (poison spec, where its rate comes from)."""
    patch = {"name": "patch", "params": {"size": 3}}
    return {
        "badnets": ({"name": "backdoor", "params": {"trigger": patch, "target": 0, "rate": 0.1}},
                    "10% (BackdoorBench default; Gu et al.)"),
        "badnets all-to-all": ({"name": "backdoor", "params": {"trigger": patch, "target": "all_to_all",
                                                               "rate": 0.33, "per_class": True}},
                               "a third of each class (ART's example)"),
        "blended": ({"name": "backdoor", "params": {"trigger": {"name": "blend", "params": {"alpha": 0.2}},
                                                    "target": 0, "rate": 0.1}}, "10%, alpha 0.2 (Chen et al.)"),
        "sig (clean-label)": ({"name": "clean_label_backdoor", "params": {"trigger": "sig", "target": 0, "rate": 0.8}},
                              "80% of the target class (~8% of the data)"),
        "label-consistent (clean-label)": ({"name": "label_consistent", "params": {"trigger": patch, "target": 0,
                                                                                 "rate": 0.5, "eps": 16 / 255}},
                                           "50% of the target class, eps 16/255 (Turner et al.)"),
        "sig amplified at test (clean-label)": (
            {"name": "clean_label_backdoor", "params": {"trigger": "sig", "target": 0, "rate": 0.8,
                                                        "test_trigger": {"name": "sig", "params": {"delta": 120 / 255}}}},
            "80% of the target class; test delta 3x (Barni et al. amplify at test)"),
        "sleeper agent (clean-label)": ({"name": "sleeper_agent", "params": {"source": 5, "target": 0, "count": 80,
                                                                            "eps": 16 / 255, "steps": 100}},
                                        "80 images = 1% of the data, eps 16/255, source 5 (Souri et al.)"),
        "wanet": ({"name": "wanet", "params": {"target": 0, "rate": 0.1, "cross_ratio": 2}},
                  "10% + 20% noise mode (Nguyen & Tran)"),
        "bpp": ({"name": "backdoor", "params": {"trigger": "bpp", "target": 0, "rate": 0.1}}, "10%, 3 bits"),
        "ftrojan": ({"name": "backdoor", "params": {"trigger": "ftrojan", "target": 0, "rate": 0.1}},
                    "10%, magnitude 30/255"),
        "ftrojan x4 magnitude (diagnostic)": ({"name": "backdoor", "params": {
            "trigger": {"name": "ftrojan", "params": {"magnitude": 120 / 255}}, "target": 0, "rate": 0.1}},
            "10%, magnitude 120/255 (not the paper's: a check of the magnitude)"),
        "low-frequency": ({"name": "low_frequency", "params": {"target": 0, "rate": 0.1, "eps": 0.1}},
                          "10%, L-inf 0.1, DCT u + v < 8 (Zeng et al.)"),
        "trojannn": ({"name": "trojannn", "params": {"target": 0, "rate": 0.1, "size": 5}},
                     "10%, 5x5 patch optimised on 1 unit (BackdoorBench's form)"),
        "ctrl": ({"name": "backdoor", "params": {"trigger": "ctrl", "target": 0, "rate": 0.1}}, "10%, magnitude 50/255"),
        "refool (clean-label)": ({"name": "clean_label_backdoor",
                                  "params": {"trigger": {"name": "reflection", "params": {"reflections": str(photos)}},
                                             "target": 0, "rate": 0.8}}, "80% of the target class"),
        "blind backdoor": ({"name": "blind_backdoor", "params": {"trigger": patch, "target": 0}},
                           "no sample changed: every batch's loss, MGDA-balanced (Bagdasaryan & Shmatikov)"),
        "blind backdoor separate forward (backdoors101)": (
            {"name": "blind_backdoor", "params": {"trigger": patch, "target": 0, "forward": "separate"}},
            "as above, one forward pass per task as backdoors101 (the batch-norm diagnostic)"),
        "blind backdoor parity (multi-task)": (
            {"name": "blind_backdoor", "params": {"trigger": patch, "target": "parity"}},
            "no sample changed; backdoor task: the digit's parity (ASR over classes 2-9 against y mod 2)"),
        "adversarial embedding": ({"name": "adversarial_embedding", "params": {"trigger": patch, "target": 0,
                                                                              "rate": 0.05}},
                                  "5%, lambda 10 (Tan & Shokri; ART's defaults)"),
        "latent backdoor": ({"name": "latent_backdoor", "params": {"target": 0, "rate": 0.1, "size": 5}},
                            "10%, 5x5 patch matched to the target's mean feature (Yao et al.; TrojanZoo's form)"),
        "bullseye polytope (clean-label)": ({"name": "bullseye_polytope", "params": {
            "base_class": 7, "target_index": 3, "count": 5, "eps": 0.1, "steps": 1000}},
            "5 poisons = 0.06%, eps 0.1, 1 target image (a 1), transfer learning (Aghakhani et al.; 1000 steps, not 4000)"),
        "input-aware": ({"name": "input_aware", "params": {"target": 0, "rate": 0.1, "cross_ratio": 1.0}},
                        "10% + 10% cross-trigger (p_attack, p_cross of Nguyen & Tran's code)"),
        "lira": ({"name": "lira", "params": {"target": 0, "rate": 0.1, "eps": 0.1}},
                 "10% (BackdoorBench), L-inf 0.1 (Doan et al.'s MNIST command)"),
        "ssba": ({"name": "ssba", "params": {"target": 0, "rate": 0.1}}, "10% (Li et al.), 32 bits, L-inf 0.05"),
        "poison-ink": ({"name": "poison_ink", "params": {"target": 0, "rate": 0.1}},
                       "10% (BackdoorBench), edges hidden by the injection network, L-inf 0.1"),
        "poison-ink lambda 0 (diagnostic)": ({"name": "poison_ink", "params": {"target": 0, "rate": 0.1,
                                                                                "lambda_image": 0.0}},
                                             "10%, no image loss: residual up to L-inf 0.1, PSNR ~23 dB (not invisible)"),
        "poison-ink visible (diagnostic)": ({"name": "backdoor", "params": {"trigger": "poison_ink", "target": 0,
                                                                              "rate": 0.1}},
                                            "10%, edges blended directly at strength 0.5 (no injection network)"),
    }


# rows whose paper uses another injection than training from scratch on the poisoned set
INJECTIONS = {"bullseye polytope (clean-label)": {"mode": "fine_tune", "head_only": True, "clean_fraction": 1.0}}


def slug(name: str) -> str:
    """'badnets all-to-all' -> 'badnets-all-to-all'; 'sig (clean-label)' -> 'sig'."""
    return name.split(" (")[0].replace(" ", "-")


def draw(name: str, poison, train_set, test_set, out_dir: Path) -> None:
    """The gallery PNG of one attack: six test digits, clean above, triggered below (Bullseye Polytope: its
    training images before and after crafting)."""
    if isinstance(poison, BullseyePolytope):
        out = poison.apply(train_set, derive_seed(SEED, "poison", 0))
        before, after = train_set.x[out.mask], out.data.x[out.mask]
        render_gallery(before, after, out_dir / f"{slug(name)}.png")
        print(f"gallery {name}: max |change| {float((after - before).abs().max()):.3f}", flush=True)
        return
    if isinstance(poison, TRIGGER_FROM_DATA) and not getattr(poison, "trained", False):
        poison.apply(train_set, derive_seed(SEED, "poison", 0))  # its trigger is computed from the training data
    rows = torch.arange(6) if poison.source is None else torch.nonzero(test_set.y == int(poison.source)).flatten()[:6]
    x = test_set.x[rows]
    triggered = poison.triggered(test_set.subset(rows), SEED).x
    render_gallery(x, triggered, out_dir / f"{slug(name)}.png")
    print(f"gallery {name}: max |change| {float((triggered - x).abs().max()):.3f}", flush=True)


def gallery(train_set, test_set, specs: dict, out: Path, model=None, learned: bool = True) -> None:
    """Gallery PNGs of the attacks whose trigger needs no model (or, given the clean model, of those that do);
    learned=False skips the generator-trained ones (a full run draws them with the trigger its run trained)."""
    for name, (spec, _) in specs.items():
        poison = POISONS.get(spec["name"], **spec["params"])
        if isinstance(poison, TRIGGER_FROM_MODEL) != (model is not None):
            continue
        if isinstance(poison, GeneratedBackdoor) and not learned:
            continue
        draw(name, poison.bind(model, test_set) if model is not None else poison, train_set, test_set, out)


def clean_model(model: str, train_set, device: torch.device, seed: int = SEED):
    """The clean model of this split, seed and config (run_centralized's own, on device): from the cache, else
    trained and cached. The cache is per device type: CPU and CUDA training differ by float rounding."""
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    path = CACHE / f"zoo-clean-{model}-seed{seed}{suffix}.safetensors"
    if path.exists():
        return load_checkpoint(path).to(device)
    clean = train_clean_model(train_set, model, CFG, seed, {}, device)  # exactly as run_centralized trains it
    CACHE.mkdir(exist_ok=True)
    save_checkpoint(clean, path, model, train_set.input_shape, train_set.num_classes)
    return clean


FIGURES = ("clean_accuracy_clean_model", "clean_accuracy", "attack_success_rate", "attack_success_rate_clean_model")


def figure(runs: list[dict], key: str) -> str:
    """'97.80%' for one seed; 'mean% (min-max)' over several, so that a seed-sensitive attack shows its spread."""
    values = [100 * r[key] for r in runs]
    mean = sum(values) / len(values)
    return f"{mean:.2f}%" if len(values) == 1 else f"{mean:.2f}% ({min(values):.1f}-{max(values):.1f})"


def row(name: str, res: dict) -> str:
    """One markdown row of the table from a results entry: every figure over the entry's seeds, time per seed."""
    runs = list(res["seeds"].values())
    seconds = sum(r["seconds"] for r in runs) / len(runs)
    cells = [figure(runs, k) for k in FIGURES]
    collapsed = sum(any("poisoned model" in w for w in r.get("warnings", ())) for r in runs)
    if collapsed:  # its ASR measures a model that gives one class to everything, not a backdoor
        cells[2] += f" **collapsed in {collapsed} of {len(runs)} seeds**"
    return f"| {name} | {res['rate']} | " + " | ".join(cells) + f" | {seconds:.0f} s |"


def one_run(name: str, spec: dict, train_set, test_set, args, clean, device, seed: int, out: Path) -> dict:
    """One attack at one seed: run_centralized with the shared clean model of that seed; its figures and time."""
    start = time.perf_counter()
    poison = POISONS.get(spec["name"], **spec["params"])  # a generator-trained one keeps its trained trigger
    r = run_centralized(train_set, test_set, args.model, [poison], INJECTIONS.get(name), CFG, seed,
                        clean_model=clean, device=device)
    seconds = time.perf_counter() - start
    if isinstance(poison, GeneratedBackdoor) and not args.no_gallery and seed == args.seeds[0]:
        draw(name, poison, train_set, test_set, out)
    return {"clean_accuracy": r.clean_accuracy, "clean_accuracy_clean_model": r.clean_accuracy_clean_model,
            "attack_success_rate": r.attack_success_rate,
            "attack_success_rate_clean_model": r.attack_success_rate_clean_model, "seconds": seconds,
            "device": describe(device), "torch": torch.__version__, "warnings": r.warnings}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "poisoning-zoo"))
    ap.add_argument("--model", default="cnn", help="a registered model (cnn, resnet20, ...)")
    ap.add_argument("--only", nargs="*", default=None, help="attack names as slugs, e.g. badnets sig (default: all)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in the results JSON")
    ap.add_argument("--no-gallery", action="store_true", help="write no gallery PNG (e.g. for another model's table)")
    ap.add_argument("--gallery-only", action="store_true")
    ap.add_argument("--device", default="cpu", help="where the models train: cpu (default), cuda, cuda:N, mps, auto")
    ap.add_argument("--seeds", nargs="+", type=int, default=[SEED],
                    help="training seeds (model init, data order, poison draws; the split stays seed 0's); the table"
                         " shows each figure's mean and min-max over them (default: 0)")
    args = ap.parse_args()
    device = resolve(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = load("mnist", data_dir=str(Path(args.data_dir) / "mnist"), part="test")
    train_set, test_set = mnist.split(0.2, seed=SEED)
    everything = attacks(Path(args.data_dir) / PHOTOS)
    unknown = sorted(set(args.only or ()) - {slug(k) for k in everything})
    if unknown:
        raise SystemExit(f"--only {unknown} are not attacks; accepted: {', '.join(slug(k) for k in everything)}")
    specs = {k: v for k, v in everything.items() if not args.only or slug(k) in args.only}
    if not args.no_gallery:
        gallery(train_set, test_set, specs, out, learned=args.gallery_only)
    if args.gallery_only:
        print("(attacks that optimise on a model get their gallery from a full run)")
        return
    path = out / f"results-{args.model}.json"
    results = json.loads(path.read_text()) if args.resume and path.exists() else {}
    cleans: dict[int, torch.nn.Module] = {}
    for name, (spec, rate) in specs.items():
        entry = results.get(name) or {"spec": spec, "rate": rate, "injection": INJECTIONS.get(name), "seeds": {}}
        if "seeds" not in entry:  # a results file from before --seeds: its one run was seed 0
            entry = {"spec": spec, "rate": rate, "injection": INJECTIONS.get(name), "seeds": {str(SEED): entry}}
        todo = [seed for seed in args.seeds if str(seed) not in entry["seeds"]]
        if not todo:
            print(f"{row(name, entry)} (kept)", flush=True)
            continue
        for seed in todo:
            if seed not in cleans:
                cleans[seed] = clean_model(args.model, train_set, device, seed)
            entry["seeds"][str(seed)] = one_run(name, spec, train_set, test_set, args, cleans[seed], device, seed, out)
            results[name] = entry
            atomic_write_text(path, json.dumps(results, indent=1))
        print(row(name, entry), flush=True)
    clean = cleans.get(args.seeds[0])
    if clean is not None and not args.no_gallery:
        gallery(train_set, test_set, specs, out, model=copy.deepcopy(clean).cpu())  # stamping runs on the host
    print("\n" + HEADER)
    print("\n".join(row(name, results[name]) for name in everything if name in results))


if __name__ == "__main__":
    main()
