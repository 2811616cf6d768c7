"""The backdoor leaderboard: rows from cells' defense records, means over seeds, the DER ranking, and a tiny
sweep end to end in which cells that differ only in their defense share one trained poisoned model."""

import json

import pytest

from poisonlab.leaderboard import attack_label, cell_rows, defense_labels, markdown, ranking, summarize


def record(asr, acc, der=None, name="d", params=None):
    return {"defense": name, "params": params or {}, "clean_accuracy": acc, "attack_success_rate": asr,
            "robust_accuracy": 1 - asr, "der": der, "wall_time": 2.0}


def metrics(base_asr, *defenses):
    return {"defense": {"baseline": record(base_asr, 0.9), "defenses": list(defenses)}}


def test_rows_and_means_over_seeds():
    rows = (cell_rows("badnets", 0, metrics(1.0, record(0.2, 0.8, 0.85, "fp")))
            + cell_rows("badnets", 1, metrics(0.9, record(0.4, 0.9, 0.75, "fp"))))
    for r in rows:
        r.pop("params")
    summary = {(e["attack"], e["defense"]): e for e in summarize(rows)}
    fp = summary[("badnets", "fp")]
    assert fp["seeds"] == 2
    assert fp["attack_success_rate_mean"] == pytest.approx(0.3)
    assert fp["attack_success_rate_std"] == pytest.approx(0.1)        # population std, as summary.md
    assert fp["der_mean"] == pytest.approx(0.8)
    assert summary[("badnets", "none")]["der_mean"] is None
    assert ranking(list(summary.values()))[0][:3] == ("fp", pytest.approx(0.8), 1)
    text = markdown(list(summary.values()))
    assert "| badnets | 95.0 ± 5.0 | 30.0 ± 10.0 |" in text           # ASR row: none, fp


def test_labels():
    assert attack_label([{"name": "backdoor", "params": {"trigger": {"name": "blend"}}}]) == "backdoor:blend"
    assert attack_label([{"name": "wanet", "params": {}}]) == "wanet"
    labels = defense_labels([("fp", {}), ("fp", {"fraction": 0.5}), ("nad", {})])
    assert labels[("fp", "{}")] == "fp" and labels[("fp", json.dumps({"fraction": 0.5}))] == "fp(fraction=0.5)"
    assert labels[("nad", "{}")] == "nad"
    spec = {"detector": {"name": "beatrix", "params": {"k": 2}}}
    assert defense_labels([("filt", {}), ("filt", spec)])[("filt", json.dumps(spec))] == "filt(detector=beatrix)"


def test_tiny_leaderboard_sweep_shares_models_and_changes_no_number(tmp_path):
    from poisonlab.config.load import parse
    from poisonlab.experiment import run_experiment
    from poisonlab.leaderboard import write_leaderboard
    from poisonlab.sweep import expand_grid, run_sweep
    from poisonlab.sweep_exec import sequential

    def backdoor(trigger):
        return [{"name": "backdoor", "params": {"trigger": trigger, "target": 0, "rate": 0.1}}]

    doc = {"name": "lb", "data": {"dataset": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 2},
           "output": {"report": False},
           "grid": {"poison": [backdoor({"name": "patch", "params": {"size": 2}}), backdoor({"name": "blend"})],
                    "defend.defenses": [[{"name": "fine_pruning"}],
                                        [{"name": "fine_pruning", "params": {"fraction": 0.5, "epochs": 0}}]]}}
    out = tmp_path / "lb"
    run_sweep(doc, out, lambda config, d: run_experiment(config, d, quiet=True), log=lambda _: None, report=False,
              executor=sequential)
    cells = expand_grid(doc)
    found = [json.loads((out / c.slug / "metrics.json").read_text()) for c in cells]
    assert found[0]["final"] == {**found[1]["final"], "wall_time": found[0]["final"]["wall_time"]}
    assert found[0]["defense"]["baseline"] == found[1]["defense"]["baseline"]
    assert found[0]["final"]["clean_accuracy_clean_model"] == found[2]["final"]["clean_accuracy_clean_model"]
    alone = run_experiment(parse(cells[3].doc), tmp_path / "alone", quiet=True)   # outside a sweep: nothing shared
    for key in ("clean_accuracy", "clean_accuracy_clean_model", "attack_success_rate"):
        assert alone["final"][key] == found[3]["final"][key]
    assert alone["defense"]["defenses"][0]["attack_success_rate"] == found[3]["defense"]["defenses"][0]["attack_success_rate"]
    paths = write_leaderboard(doc, out)
    text = paths[1].read_text()
    assert "fine_pruning(epochs=0, fraction=0.5)" in text and "| backdoor:blend |" in text
    assert "<table>" in paths[2].read_text()


def test_colliding_attack_labels_name_what_differs():
    from poisonlab.leaderboard import distinct_labels

    patch = {"name": "patch"}
    one = [{"name": "backdoor", "params": {"trigger": patch, "target": 0, "rate": 0.1}}]
    a2a = [{"name": "backdoor", "params": {"trigger": patch, "target": "all_to_all", "rate": 0.33}}]
    blend = [{"name": "backdoor", "params": {"trigger": {"name": "blend"}, "target": 0, "rate": 0.1}}]
    labels = list(distinct_labels([one, a2a, blend]).values())
    assert labels == ["backdoor:patch(rate=0.1, target=0)", "backdoor:patch(rate=0.33, target=all_to_all)",
                      "backdoor:blend"]


@pytest.mark.parametrize("name", ["backdoor-leaderboard", "backdoor-leaderboard-quick"])
def test_the_leaderboard_config_runs_every_defense_and_validates(name):
    from pathlib import Path

    from poisonlab.config.load import parse, read_yaml
    from poisonlab.config.validate import check_components
    from poisonlab.defend import DEFENSES
    from poisonlab.sweep import expand_grid

    doc = read_yaml(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    listed = {d["name"] for cell in doc["grid"]["defend.defenses"] for d in cell}
    assert listed == set(DEFENSES.names())
    cells = expand_grid(doc)
    for cell in cells[:: max(1, len(cells) // 40)]:
        check_components(parse(cell.doc))


def test_a_refused_defense_is_shown_as_refused_not_as_a_number():
    rows = cell_rows("badnets", 0, {"defense": {"baseline": record(1.0, 0.9), "defenses": [
        {"defense": "dp_sgd", "params": {}, "stage": "training", "refused": "batch norm", "wall_time": 0.1}]}})
    for r in rows:
        r.pop("params")
    summary = summarize(rows)
    text = markdown(summary)
    assert "| badnets | 100.0 | refused |" in text
    assert ranking(summary) == []


def test_the_ranking_counts_only_attacks_that_work_on_the_undefended_model():
    """DER on an attack whose undefended ASR is below 50% measures only the accuracy a defense costs."""
    rows = (cell_rows("works", 0, metrics(0.99, record(0.01, 0.9, 0.99, "a"), record(0.9, 0.9, 0.55, "b")))
            + cell_rows("fails", 0, metrics(0.05, record(0.0, 0.2, 0.2, "a"), record(0.05, 0.9, 0.9, "b"))))
    rank = ranking(summarize(rows))
    assert [r[0] for r in rank] == ["a", "b"], "by the effective attack's DER (a 0.99, b 0.55)"
    assert rank[0][1] == pytest.approx((0.99 + 0.2) / 2) and rank[0][4:] == (pytest.approx(0.99), 1)
    assert rank[1][1] == pytest.approx((0.55 + 0.9) / 2), "over all attacks b (0.725) would rank above a (0.595)"
    assert "| a | 99.0 | 1 | 59.5 | 2 |" in markdown(summarize(rows))
