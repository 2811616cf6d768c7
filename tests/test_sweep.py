"""Sweep mechanics: grid expansion, skipping finished cells, mean/std over seeds."""

from __future__ import annotations

import json

import pytest

from poisonlab.errors import ConfigError
from poisonlab.sweep import expand_grid, markdown_table, run_sweep, summarize


def test_grid_is_the_cartesian_product_with_unique_dirs():
    cells = expand_grid({"grid": {"seed": [0, 1, 2], "train.epochs": [1, 2]}})
    assert len(cells) == 6
    assert len({c.slug for c in cells}) == 6
    assert cells[0].doc == {"seed": 0, "train": {"epochs": 1}}


def test_grid_must_be_lists():
    with pytest.raises(ConfigError, match="grid.seed must be a non-empty list"):
        expand_grid({"grid": {"seed": 3}})
    with pytest.raises(ConfigError, match="needs a 'grid:' section"):
        expand_grid({"name": "x"})


def test_rerun_skips_finished_cells(tmp_path):
    calls = []

    def run_one(config, cell_dir):
        calls.append(config.seed)
        metrics = {"final": {"clean_accuracy": 0.5 + config.seed / 10, "attack_success_rate": None}, "history": []}
        (cell_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    doc = {"name": "s", "grid": {"seed": [0, 1]}}
    first = run_sweep(doc, tmp_path, run_one, log=lambda _: None)
    assert calls == [0, 1]
    second = run_sweep(doc, tmp_path, run_one, log=lambda _: None)
    assert calls == [0, 1], "a rerun must not run finished cells"
    assert first == second
    doc["train"] = {"epochs": 2}  # a changed config is not 'finished'
    run_sweep(doc, tmp_path, run_one, log=lambda _: None)
    assert calls == [0, 1, 0, 1]


def test_summary_mean_and_std_over_seeds():
    rows = [{"agg": "mean", "seed": 0, "clean_accuracy": 0.8, "attack_success_rate": 0.2},
            {"agg": "mean", "seed": 1, "clean_accuracy": 0.6, "attack_success_rate": 0.4},
            {"agg": "median", "seed": 0, "clean_accuracy": 0.9, "attack_success_rate": None}]
    summary = summarize(rows)
    mean_row = next(r for r in summary if r["agg"] == "mean")
    assert mean_row["seeds"] == 2
    assert mean_row["clean_accuracy_mean"] == pytest.approx(0.7)
    assert mean_row["clean_accuracy_std"] == pytest.approx(0.1)
    median_row = next(r for r in summary if r["agg"] == "median")
    assert median_row["attack_success_rate_mean"] is None
    table = markdown_table(summary)
    assert "70.0 ± 10.0" in table and "| median |" in table


def test_matrix_table_rows_attacks_columns_rules():
    from poisonlab.sweep import matrix_table

    rows = [{"adv": "none", "agg": "mean", "seed": 0, "clean_accuracy": 0.9, "attack_success_rate": None},
            {"adv": "backdoor+scale", "agg": "mean", "seed": 0, "clean_accuracy": 0.8, "attack_success_rate": 0.99},
            {"adv": "none", "agg": "krum", "seed": 0, "clean_accuracy": 0.85, "attack_success_rate": None}]
    table = matrix_table(summarize(rows), "adv", "agg").splitlines()
    assert table[0] == "| adv \\ agg | mean | krum |"
    assert table[2] == "| none | 90.0 | 85.0 |"
    assert table[3] == "| backdoor+scale | 80.0 / 99.0 |  |"


def test_a_defended_cells_log_line_gives_each_defenses_figures_after_the_undefended_ones():
    from poisonlab.sweep import cell_result

    line = cell_result({"final": {"clean_accuracy": 0.9, "attack_success_rate": 0.99},
                        "defense": {"defenses": [{"defense": "nad", "clean_accuracy": 0.85, "attack_success_rate": 0.02},
                                                 {"defense": "dp_sgd", "refused": "batch norm"}]}})
    assert line == "clean acc. 90.0%, ASR 99.0%, after nad: clean acc. 85.0%, ASR 2.0%, dp_sgd refused"
