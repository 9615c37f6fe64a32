"""Source predictors (xlingual/predictors.py): phonotactic distances, the combination rule, leave-one-out configs."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import save_source, write_tiny_corpus
from xlingual.config import LIDConfig, UnitConfig
from xlingual.predictors import combine, js_distance, loo_config, phone_ngrams, phonotactic_scores
from xlingual.runspec import load_language


@pytest.mark.parametrize("p, q, expected", [
    (Counter(a=2, b=2), Counter(a=1, b=1), 0.0),  # the same distribution, other counts
    (Counter(a=1), Counter(b=1), 1.0),  # disjoint supports: the largest distance
    (Counter(a=1, b=1), Counter(a=1), 0.5579),  # sqrt((KL(P|M) + KL(Q|M)) / 2), M = (0.75, 0.25): by hand
    (Counter(), Counter(a=1), 1.0),  # nothing transcribed: as far as can be
])
def test_js_distance(p, q, expected):
    assert js_distance(p, q) == pytest.approx(expected, abs=1e-4)
    assert js_distance(q, p) == pytest.approx(js_distance(p, q))


@pytest.mark.parametrize("parts, expected", [
    # one predictor: its within-target ranks scaled to [0, 1]
    ([{"t": {"a": 0.9, "b": 0.5, "c": 0.1}}], {"t": {"a": 1.0, "b": 0.5, "c": 0.0}}),
    # two that disagree on a/b: both at the mean; scale-free (posteriors and distances mix)
    ([{"t": {"a": 0.9, "b": 0.5, "c": 0.1}}, {"t": {"a": -30.0, "b": -1.0, "c": -50.0}}],
     {"t": {"a": 0.75, "b": 0.75, "c": 0.0}}),
    # a source or target one part lacks is left out
    ([{"t": {"a": 1, "b": 2, "c": 3}, "u": {"a": 1, "b": 2}}, {"t": {"a": 1, "b": 2}}],
     {"t": {"a": 0.0, "b": 1.0}}),
])
def test_combination_is_the_mean_normalized_rank(parts, expected):
    out = combine(parts)
    assert out.keys() == expected.keys()
    for t in out:
        assert out[t] == pytest.approx(expected[t])


def test_loo_config_leaves_the_target_out_and_starts_from_its_fold():
    cfg = LIDConfig(languages=["bn", "as", "tr"], out_dir="exp/lid")
    sub = loo_config(cfg, "as", init_from="exp/phones/without_as/best.pt")
    assert sub.languages == ["bn", "tr"] and sub.out_dir == "exp/lid/loo/without_as"
    assert sub.init_from == "exp/phones/without_as/best.pt"
    new = loo_config(cfg, "hi")  # not an LID language: the LID itself is already leave-one-out for it
    assert new == cfg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def test_phonotactic_scores_compare_transcriptions_of_target_and_sources(corpus, tmp_path):
    """The mechanics on an untrained IPA recognizer: n-gram counts of its transcriptions, and per target a score
    for every source but itself (minus a distance: at most 0)."""
    both = load_language(corpus, "bn")["train"] + load_language(corpus, "tr")["train"]
    ckpt = save_source(tmp_path / "phones.pt", corpus, "bn", UnitConfig(kind="ipa"), texts_from=both)
    utts = {lang: load_language(corpus, lang)["test"] for lang in ("bn", "tr")}
    grams = phone_ngrams(ckpt, utts["bn"], order=2, cache_dir=tmp_path / "feats")
    assert len(grams) == 2 and all(len(k) == 1 for k in grams[0]) and all(len(k) == 2 for k in grams[1])
    assert sum(grams[0].values()) >= 2 * len(utts["bn"])  # at least the utterance edges ^ and $
    scores = phonotactic_scores({"bn": ckpt}, {"bn": utts["bn"]}, utts, order=2, cache_dir=tmp_path / "feats")
    assert list(scores) == ["bn"] and list(scores["bn"]) == ["tr"] and -1.0 <= scores["bn"]["tr"] <= 0.0
