"""``poisonlab demo``: the default job, offline on scikit-learn's digits (provisional: clean centralized run)."""

from __future__ import annotations

from poisonlab.console import console, percent, table
from poisonlab.data import load
from poisonlab.models import make_model
from poisonlab.training import TrainConfig, evaluate, train

NAME = "demo"
HELP = "Run the default experiment offline on scikit-learn's digits and print a summary table."


def add_arguments(parser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    data = load("digits")
    train_set, test_set = data.split(0.2, seed=args.seed)
    rows = []
    for name in ("logistic", "mlp", "cnn"):
        model = make_model(name, data.input_shape, data.num_classes, seed=args.seed)
        train(model, train_set, TrainConfig(epochs=10), seed=args.seed)
        rows.append((name, percent(evaluate(model, test_set).accuracy)))
    console.print(table("digits, clean training", ["model", "test accuracy"], rows))
    return 0
