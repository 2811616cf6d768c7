"""data.size: a seeded stratified subset of the dataset, drawn before the train/test split."""

import pytest

from poisonlab.builders import load_split
from poisonlab.config.load import parse
from poisonlab.errors import ConfigError


def test_size_takes_a_stratified_seeded_subset():
    train, test = load_split(parse({"data": {"dataset": "digits", "size": 500}}))
    assert abs(len(train) + len(test) - 500) <= 10                    # per-class rounding
    assert len(set(train.y.tolist())) == 10
    again = load_split(parse({"data": {"dataset": "digits", "size": 500}}))
    assert (again[0].x == train.x).all()
    full = load_split(parse({"data": {"dataset": "digits"}}))
    assert len(full[0]) + len(full[1]) == 1797


def test_size_beyond_the_dataset_is_one_line():
    with pytest.raises(ConfigError, match="data.size=5000 exceeds the 1797 samples"):
        load_split(parse({"data": {"dataset": "digits", "size": 5000}}))
    with pytest.raises(ConfigError, match="size"):
        parse({"data": {"dataset": "digits", "size": 1}})
