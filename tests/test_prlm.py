"""Phone n-gram language models for language ID (xlingual/prlm.py)."""

from __future__ import annotations

import math

import pytest
import torch

from xlingual.prlm import ORDER, WEIGHTS, PhoneLM, phonotactic_posteriors

A = [list("abcabc"), list("abcab"), list("bcabca")]  # "language" a: the cycle a b c
B = [list("acbacb"), list("cbacba"), list("acba")]  # "language" b: the other cycle


def test_weights_sum_to_one_and_cover_every_order():
    assert sorted(WEIGHTS) == list(range(1, ORDER + 1)) and sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_probabilities_are_normalized_over_the_phone_set():
    """After any context, the interpolated add-one estimates over the phone set (edges included) sum to 1."""
    lm = PhoneLM.fit(A, phones=5)
    phones = ["a", "b", "c", "$", "^"]
    for context in (["a", "b"], ["c", "c"], ["^", "^"]):
        total = sum(math.exp(lm.logprob_next(context, p)) for p in phones)
        assert total == pytest.approx(1.0)


def test_each_language_prefers_its_own_phonotactics():
    lms = {"a": PhoneLM.fit(A, 5), "b": PhoneLM.fit(B, 5)}
    post = phonotactic_posteriors(lms, ["a", "b"], {"x": list("abcabcab"), "y": list("acbacbac")})
    assert post["x"][0] > 0.99 and post["y"][1] > 0.99
    assert all(torch.allclose(p.sum(), torch.tensor(1.0)) for p in post.values())
    assert lms["a"].logprob(list("zz")) < 0  # unseen phones: small but never zero probability


def test_round_trip():
    lm = PhoneLM.fit(A, 5)
    again = PhoneLM.from_dict(lm.to_dict())
    assert again.logprob(list("abcacb")) == pytest.approx(lm.logprob(list("abcacb")))
