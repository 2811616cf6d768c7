"""SSBA (Li et al. 2021) with the in-package encoder/decoder: the residual bound and the bits read back."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS
from poisonlab.poison.ssba import encode, parse_secret, warmup_bound


@pytest.fixture(scope="module")
def trained(digits):
    p = POISONS.get("ssba", target=0, rate=0.1, bits=8, eps=0.2, epochs=20, width=16, lambda_residual=0.0)
    before = digits.x.clone()
    return p, p.apply(digits, 0), before


def test_the_decoder_recovers_the_secret_and_another_string_from_encoded_images(trained, digits):
    p, _, _ = trained
    secret = p.trigger.secret
    stamped = p.triggered(digits, 0).x
    assert (p.trigger.decode(stamped) == secret.long()).float().mean().item() >= 0.9
    other = 1 - secret  # every bit flipped: a decoder that ignored the image could not read both
    with torch.no_grad():
        flipped = encode(p.trigger.encoder, digits.x, other)
    assert (p.trigger.decode(flipped) == other.long()).float().mean().item() >= 0.9


def test_residual_within_eps_rows_relabelled_input_untouched(trained, digits):
    p, out, before = trained
    assert torch.equal(digits.x, before)
    change = (out.data.x - digits.x).abs()
    assert change.max().item() <= 0.2 + 1e-6 and change[out.mask].mean().item() > 0
    assert torch.equal(change[~out.mask], torch.zeros_like(change[~out.mask]))
    assert out.count == round(0.1 * len(digits)) and bool((out.data.y[out.mask] == 0).all())
    assert out.info["trigger"]["params"]["secret"] == "".join(str(int(b)) for b in p.trigger.secret.tolist())


def test_secret_given_or_drawn_from_the_seed():
    assert parse_secret("0110", 4, 0).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert torch.equal(parse_secret(None, 16, 5), parse_secret(None, 16, 5))
    assert not torch.equal(parse_secret(None, 16, 5), parse_secret(None, 16, 6))
    for bad in ("012", "01"):
        with pytest.raises(ConfigError, match="secret"):
            POISONS.get("ssba", target=0, bits=3, secret=bad)


def test_seeded(digits):
    small = digits.subset(torch.arange(200))
    a = POISONS.get("ssba", target=0, bits=4, epochs=1, width=4).apply(small, 1)
    b = POISONS.get("ssba", target=0, bits=4, epochs=1, width=4).apply(small, 1)
    assert torch.equal(a.data.x, b.data.x) and torch.equal(a.mask, b.mask)
    for params in ({"eps": 2}, {"bits": 0}, {"lambda_residual": -1}, {"eps_start": 0.01}, {"warmup": 1.5}):
        with pytest.raises(ConfigError):
            POISONS.get("ssba", target=0, **params)


def test_the_bound_warms_up_from_eps_start_to_eps():
    # 100 steps, warm-up over the first 40: 0.3 at step 0, halfway (step 20) 0.175, eps from step 40 on
    assert [warmup_bound(t, 100, 0.05, 0.3, 0.4) for t in (0, 20, 40, 99)] == pytest.approx([0.3, 0.175, 0.05, 0.05])
    assert warmup_bound(0, 100, 0.05, 0.3, 0.0) == 0.05  # no warm-up: eps from the first step
