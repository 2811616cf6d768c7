"""``poisonlab train``: centralized training on a dataset; prints test accuracy and the confusion matrix."""

from __future__ import annotations

from poisonlab.commands._device import add_device, chosen_device
from poisonlab.console import console, percent, table
from poisonlab.data import load
from poisonlab.data.sources import SOURCES
from poisonlab.errors import ConfigError
from poisonlab.model_spec import build_model
from poisonlab.outdir import claim, output_dir
from poisonlab.registry import check_params
from poisonlab.training import TrainConfig, evaluate, train

NAME = "train"
HELP = "Train a model on a dataset (seeded stratified split) and print test accuracy and the confusion matrix."


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (see 'poisonlab list datasets')")
    parser.add_argument("--data-dir", help="directory with the dataset files (file-based datasets; for image_folder"
                                           " and npz, the folder or .npz file)")
    parser.add_argument("--part", help="which part to load, e.g. 'test' for the MNIST test set")
    parser.add_argument("--model", default="cnn", help="model name (see 'poisonlab list models') or package.module:factory")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the trained model as DIR/model.safetensors (the checkpoint format"
                                      " 'poisonlab scan --model' and load_checkpoint read)")
    add_device(parser, "auto")


def dataset_params(args) -> dict:
    """The loader parameters given on the command line, checked against the chosen source."""
    path_key = "path" if args.dataset in ("image_folder", "npz") else "data_dir"
    params = {k: v for k, v in ((path_key, args.data_dir), ("part", args.part)) if v is not None}
    check_params(f"dataset '{args.dataset}'", SOURCES.entry(args.dataset).factory, params)
    return params


def run(args) -> int:
    data = load(args.dataset, **dataset_params(args))
    train_set, test_set = data.split(args.test_fraction, seed=args.seed)
    if args.epochs < 1:
        raise ConfigError(f"--epochs={args.epochs} must be at least 1")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    device = chosen_device(args.device)
    model = build_model(args.model, data.input_shape, data.num_classes, seed=args.seed).to(device)
    out = claim(output_dir(args.out, None, "train"), "train") if args.out is not None else None
    with console.status(f"training {args.model} on {data.name} ({len(train_set)} samples, {args.epochs} epochs)"):
        losses = train(model, train_set, cfg, seed=args.seed)
    ev = evaluate(model, test_set)
    console.print(f"[bold]{data.name}[/] {args.model}: train {len(train_set)}, test {len(test_set)},"
                  f" final train loss {losses[-1]:.4f}")
    console.print(f"test accuracy: [bold]{percent(ev.accuracy)}[/]  (loss {ev.loss:.4f}, seed {args.seed})")
    header = ["true \\ pred"] + list(data.classes)
    rows = [[data.classes[i]] + row for i, row in enumerate(ev.confusion)]
    console.print(table("confusion matrix (rows: true class, columns: predicted)", header, rows))
    if out is not None:
        from poisonlab.model_checkpoint import save_checkpoint

        path = save_checkpoint(model, out / "model.safetensors", args.model, data.input_shape, data.num_classes)
        console.print(f"model: {path}")
    return 0
