"""The experiment schema: defaults, overrides, and the one-line error messages users see."""

from __future__ import annotations

import pytest

from poisonlab.config import apply_overrides, load_config, parse
from poisonlab.config.validate import check_components
from poisonlab.errors import ConfigError


def error_of(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        check_components(parse(doc))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_a_centralized_digits_experiment():
    config = parse({})
    assert config.kind == "centralized"
    assert config.data.dataset == "digits" and config.model.name == "cnn"
    assert parse({"federated": {}}).kind == "federated"


def test_unknown_key_names_path_and_nearest_key():
    message = error_of({"federated": {"rouns": 3}})
    assert message.startswith("federated.rouns: unknown key; did you mean 'rounds'?")


def test_unknown_key_inside_a_list_item():
    message = error_of({"federated": {"adversary": [{"clients": 2, "schedule": {"evry": 2}}]}})
    assert "federated.adversary.0.schedule.evry" in message and "'every'" in message


def test_out_of_range_value_is_named():
    assert error_of({"federated": {"rounds": 0}}).startswith("federated.rounds=0:")
    assert "federated.adversary.clients=1.5" in error_of({"federated": {"adversary": {"clients": 1.5}}})
    assert "data.test_fraction=1.0" in error_of({"data": {"test_fraction": 1.0}})


def test_unknown_component_name_suggests_nearest():
    message = error_of({"data": {"dataset": "digitz"}})
    assert message.startswith("data.dataset: dataset 'digitz' is not known; did you mean 'digits'?")


def test_unknown_component_parameter_suggests_nearest():
    message = error_of({"model": {"name": "cnn", "params": {"hiden": 8}}})
    assert "model.name" in message and "'hiden'" in message and "did you mean 'hidden'" in message


def test_overrides_parse_yaml_values_and_create_sections():
    doc = apply_overrides({"federated": {"rounds": 3}}, ["federated.rounds=5", "seed=7",
                                                         "federated.aggregator={name: median}"])
    config = parse(doc)
    assert config.federated.rounds == 5 and config.seed == 7
    assert config.federated.aggregator.name == "median"


def test_bad_override_is_one_line():
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["federated.rounds"])


def test_load_config_reports_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)


def test_aggregators_that_cannot_aggregate_a_round_are_refused_before_running():
    fed = {"clients": 20, "sample": 0.5}  # n = 10 updates a round
    msg = error_of({"federated": {**fed, "aggregator": {"name": "krum", "params": {"f": 4}}}})
    assert msg.startswith("federated.aggregator: krum needs n > 2f + 2; got n=10, f=4")
    assert "federated.clients=20" in msg and "sample=0.5" in msg
    check_components(parse({"federated": {**fed, "aggregator": {"name": "krum", "params": {"f": 3}}}}))  # 10 > 8
    msg = error_of({"federated": {**fed, "aggregator": [{"name": "norm_clip"}, {"name": "bulyan", "params": {"f": 2}}]}})
    assert msg.startswith("federated.aggregator.1: bulyan needs n >= 4f + 3; got n=10, f=2")
    msg = error_of({"federated": {**fed, "aggregator": {"name": "multi_krum", "params": {"f": 1, "m": 10}}}})
    assert "multi_krum needs 1 <= m <= n - f; got m=10, n=10, f=1" in msg


def test_forced_attackers_count_towards_the_rows_of_a_round():
    """sample 5 of 20 alone gives n = 5 (krum f=2 needs 7), but 8 forced attackers make every round 8 rows."""
    doc = {"federated": {"clients": 20, "sample": 5, "aggregator": {"name": "krum", "params": {"f": 2}},
                         "adversary": {"clients": 8, "force_participation": True}}}
    check_components(parse(doc))
    doc["federated"]["adversary"]["force_participation"] = False
    assert "got n=5, f=2" in error_of(doc)
