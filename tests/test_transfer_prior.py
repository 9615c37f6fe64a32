"""The transfer record as a ranking predictor (xlingual/transfer_prior.py): leave-one-out by construction, learned
where the matrix has a source-quality effect, and wired into the ranking evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlingual.rank_eval import _finish, run_rank_eval
from xlingual.rank_metrics import evaluate_ranking
from xlingual.transfer_prior import normalized_ranks, prior_scores, transfer_prior, with_prior

LANGS = ["a", "b", "c", "d", "e", "f", "g", "h"]


@pytest.mark.parametrize("row, expected", [
    ({"x": 3.0, "y": 1.0, "z": 2.0}, {"x": 1.0, "y": 0.0, "z": 0.5}),
    ({"x": 1.0, "y": 1.0}, {"x": 0.5, "y": 0.5}),  # equal values share their mean rank
    ({"x": 7.0}, {"x": 0.5}),
])
def test_normalized_ranks(row, expected):
    assert normalized_ranks(row) == pytest.approx(expected)


def test_the_record_leaves_the_excluded_language_out_as_target_and_as_source():
    errors = {"a": {"a": 5.0, "b": 10.0, "c": 20.0, "d": 30.0},  # a's own (diagonal) cell is not a transfer
              "b": {"a": 40.0, "c": 10.0, "d": 20.0},
              "c": {"a": 10.0, "b": 30.0, "d": 20.0}}
    # normalized ranks: a's row b 1, c .5, d 0; b's row c 1, d .5, a 0; c's row a 1, d .5, b 0
    assert transfer_prior(errors) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.75, "d": 1 / 3})
    # without a: a's row is out and a is no candidate in the others (b: c > d, c: d > b)
    assert transfer_prior(errors, {"a"}) == pytest.approx({"b": 0.0, "c": 1.0, "d": 0.5})


def _matrix(rng, quality_sd: float, relative_gain: float) -> tuple[dict, dict]:
    """A random matrix with a per-source quality (a global effect) and one relative per target (a gain); and a
    similarity predictor that sees the relative but not the quality."""
    quality = dict(zip(LANGS, rng.normal(0, quality_sd, len(LANGS))))
    relative = {t: LANGS[(i + 1) % len(LANGS)] for i, t in enumerate(LANGS)}
    errors = {t: {s: 40 + quality[s] - (relative_gain if relative[t] == s else 0) + rng.normal(0, 1)
                  for s in LANGS if s != t} for t in LANGS}
    similarity = {t: {s: (1.0 if relative[t] == s else 0.0) + rng.normal(0, 0.3) for s in LANGS if s != t}
                  for t in LANGS}
    return errors, similarity


def test_a_targets_own_cells_never_move_its_blended_scores():
    """Leave-one-out: target a's scores and weight are the same whatever a's row of the oracle holds (the row it is
    scored against)."""
    rng = np.random.default_rng(0)
    errors, similarity = _matrix(rng, 5.0, 3.0)
    scores, weights = with_prior(similarity, errors)
    shuffled = {**errors, "a": {s: float(v) for s, v in zip(errors["a"], rng.permutation(list(errors["a"].values())))}}
    again, weights_again = with_prior(similarity, shuffled)
    assert again["a"] == pytest.approx(scores["a"]) and weights_again["a"] == weights["a"]
    assert prior_scores(shuffled)["a"] == pytest.approx(prior_scores(errors)["a"])
    assert again["b"] != pytest.approx(scores["b"])  # the other targets' fits read a's row: it is not ignored


@pytest.mark.parametrize("quality_sd, expect_weight", [(6.0, "some"), (0.0, "little")])
def test_the_weight_follows_the_matrix(quality_sd, expect_weight):
    """Where sources differ in quality for every target, the fitted weight is well above 0 and the blend ranks the
    whole list better than the similarity alone; where they do not, the record is noise and gets little weight."""
    spearman_gain, weights = [], []
    for seed in range(4):
        errors, similarity = _matrix(np.random.default_rng(seed), quality_sd, 4.0)
        blended, w = with_prior(similarity, errors)
        alone = evaluate_ranking(similarity, errors)["summary"]["spearman"]
        spearman_gain.append(evaluate_ranking(blended, errors)["summary"]["spearman"] - alone)
        weights += w.values()
    if expect_weight == "some":
        assert np.median(weights) >= 0.3 and min(spearman_gain) > 0.1
    else:
        assert np.median(weights) <= 0.2


def test_rank_eval_adds_the_record_and_the_blends_and_rescoring_replaces_them(tmp_path):
    rng = np.random.default_rng(1)
    errors, similarity = _matrix(rng, 5.0, 3.0)
    oracle = {"metric": "cer", "errors": errors, "tied": {}, "noise": {}, "unlearned": []}
    first = _finish(oracle, tmp_path / "e1", {"in_set": {}, "loo": {"sim": similarity}, "baselines": {}},
                    {"targets": LANGS, "sources": LANGS, "notes": []}, 3, 200)
    assert list(first["evaluations"]) == ["loo", "loo+prior", "baselines"]  # the blend beside what it starts from
    assert set(first["evaluations"]["baselines"]) == {"transfer_prior"}
    assert set(first["prior_weights"]["sim"]) == set(LANGS)
    md = (tmp_path / "e1" / "ranking_eval.md").read_text()
    assert "| loo+prior | sim | 8 |" in md and "| baselines | transfer_prior | 8 |" in md
    assert "`loo+prior`: the weight" in md
    # re-scored from the saved file: the same numbers, each derived row once (recomputed, not read back)
    again = run_rank_eval(oracle, tmp_path / "e2", None, n_perm=200, saved=tmp_path / "e1")
    assert list(again["evaluations"]) == ["loo", "loo+prior", "baselines"]
    for setting in ("loo+prior", "baselines"):
        for name, ev in first["evaluations"][setting].items():
            assert again["evaluations"][setting][name]["summary"]["spearman"] == pytest.approx(
                ev["summary"]["spearman"], abs=1e-4)
    assert json.loads((tmp_path / "e2" / "ranking_eval.json").read_text())["prior_weights"] == first["prior_weights"]
