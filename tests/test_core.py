"""Core: error messages with did-you-mean, registry lookup and parameter checks, derived randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.errors import (ConfigError, DataError, PoisonlabError, ResourceError, check_range, did_you_mean,
                              unknown_name)
from poisonlab.registry import Registry, check_params
from poisonlab.rng import as_generator, derive_seed, generator, numpy_rng


def test_error_hierarchy():
    assert issubclass(ConfigError, PoisonlabError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataError, PoisonlabError) and issubclass(ResourceError, PoisonlabError)


def test_did_you_mean_and_unknown_name():
    assert did_you_mean("krun", ["krum", "median", "trimmed_mean"]) == " did you mean 'krum'?"
    assert did_you_mean("zzzz", ["krum", "median"]) == ""
    err = unknown_name("aggregator", "medain", ["median", "krum"])
    assert isinstance(err, ConfigError)
    assert str(err) == "aggregator 'medain' is not known; did you mean 'median'? known: krum, median"
    assert "\n" not in str(err)


def test_check_range():
    assert check_range("lr", 0.1, 0.0, low_open=True) == 0.1
    with pytest.raises(ConfigError, match=r"lr=0.0 is out of range; accepted: \(0.0, inf\)"):
        check_range("lr", 0.0, 0.0, low_open=True)
    with pytest.raises(ConfigError, match=r"beta=0.5 is out of range; accepted: \[0, 0.5\)"):
        check_range("beta", 0.5, 0, 0.5, high_open=True)
    with pytest.raises(ConfigError, match="out of range"):
        check_range("x", float("nan"), 0, 1)
    assert check_range("x", 1, 0, 1) == 1


def _registry() -> Registry:
    reg = Registry("widget")

    @reg.register("scaled", reference="Someone et al. 2020")
    def scaled(factor: float = 2.0, *, bias: float = 0.0):
        """Multiply by factor and add bias."""
        return lambda v: v * factor + bias

    @reg.register("anything")
    def anything(**kwargs):
        """Accept every parameter."""
        return kwargs

    return reg


def test_registry_get_and_entries():
    reg = _registry()
    assert reg.get("scaled", factor=3.0, bias=1.0)(2.0) == 7.0
    assert reg.names() == ["anything", "scaled"] and "scaled" in reg and "nope" not in reg
    entry = reg.entry("scaled")
    assert entry.summary == "Multiply by factor and add bias." and entry.reference == "Someone et al. 2020"
    assert reg.get("anything", whatever=1) == {"whatever": 1}


def test_registry_errors():
    reg = _registry()
    with pytest.raises(ConfigError, match=r"widget 'scalled' is not known; did you mean 'scaled'\? known: anything, scaled"):
        reg.get("scalled")
    with pytest.raises(ConfigError, match=r"widget 'scaled' does not take parameter 'factr'; did you mean 'factor'\?"
                                          r" accepted: factor, bias"):
        reg.get("scaled", factr=2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("scaled")(lambda: None)
    with pytest.raises(ConfigError, match="accepted: none"):
        check_params("thing", lambda: None, {"x": 1})


def test_derived_seeds_are_deterministic_and_distinct():
    assert derive_seed(0, "local", 3, 7) == derive_seed(0, "local", 3, 7)
    seeds = {derive_seed(s, p, r, c) for s in (0, 1) for p in ("local", "attack") for r in range(3) for c in range(4)}
    assert len(seeds) == 2 * 2 * 3 * 4
    assert all(0 <= s < 2 ** 63 for s in seeds)
    # keys are separated: ("a", "bc") is not ("ab", "c")
    assert derive_seed(0, "a", "bc") != derive_seed(0, "ab", "c")


def test_generators_are_reproducible_and_independent():
    a = torch.rand(1000, generator=generator(5, "local", 0, 1))
    b = torch.rand(1000, generator=generator(5, "local", 0, 1))
    c = torch.rand(1000, generator=generator(5, "local", 0, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # independent streams are uncorrelated (|r| small for 1000 uniform draws)
    r = np.corrcoef(a.numpy(), c.numpy())[0, 1]
    assert abs(r) < 0.15
    # adding a client does not reshuffle another client's stream
    before = torch.rand(10, generator=generator(5, "local", 0, 1))
    _ = [torch.rand(10, generator=generator(5, "local", 0, k)) for k in range(50)]
    assert torch.equal(before, torch.rand(10, generator=generator(5, "local", 0, 1)))
    assert np.array_equal(numpy_rng(1, "x").random(5), numpy_rng(1, "x").random(5))


def test_no_global_random_state_is_touched():
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    torch.rand(10, generator=generator(0, "p"))
    numpy_rng(0, "p").random(10)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(np_state[1], np.random.get_state()[1])


def test_as_generator():
    g = generator(1, "x")
    assert as_generator(g, "ignored") is g
    assert torch.equal(torch.rand(3, generator=as_generator(7, "k")), torch.rand(3, generator=generator(7, "k")))
    assert torch.equal(torch.rand(3, generator=as_generator(None, "k")), torch.rand(3, generator=generator(0, "k")))
