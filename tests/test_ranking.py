import json
import math
from collections import Counter

import numpy as np
import pytest
import yaml
from scipy.stats import kendalltau, spearmanr

from helpers import build_corpus, split_utts, tiny_lid_config
from xlingual.cli import main
from xlingual.config import to_dict
from xlingual.corpus import Utterance, read_manifest, write_manifest
from xlingual.lid import average_scores, load_lid, posteriors_for
from xlingual.recipe import train_lid
from xlingual.predictors import (inventory_overlap, inventory_scores, typology_available, typology_scores,
                                 unit_inventory)
from xlingual.rank_metrics import (evaluate_ranking, noise_ties, paired_comparison, permutation_test,
                                   read_wer_matrix)
from xlingual.ranking import rank_query, rank_sources
from xlingual.selection import select_by_lid, select_utterances

# --------------------------------------------------------------------------------------------------------------
# A reference example from the IARPA Babel experiment (Bengali, Assamese, Lao, Turkish); rows are targets, columns
# sources: the LID's average posteriors, and the WER (%) of each target adapted on 10 h after pre-training on 60 h
# of each source. The LID picks the best source for 3 of 4 targets; for Lao it picks Assamese (60.1, best
# Bengali 59.8: regret 0.3).


REF_LANGS = ["Bengali", "Assamese", "Lao", "Turkish"]
REF_LID = [[0.57, 0.21, 0.09, 0.13], [0.21, 0.57, 0.11, 0.11], [0.08, 0.11, 0.71, 0.10], [0.13, 0.12, 0.10, 0.65]]
REF_WER = [[66.0, 63.8, 65.1, 64.2], [61.2, 65.2, 62.9, 62.1], [59.8, 60.1, 62.3, 60.0], [61.8, 63.1, 63.3, 63.9]]


def _nested(rows):
    return {t: dict(zip(REF_LANGS, r)) for t, r in zip(REF_LANGS, rows)}


def test_reference_example_top1_3_of_4_lao_regret_03():
    ev = evaluate_ranking(_nested(REF_LID), _nested(REF_WER))
    rows = {r["target"]: r for r in ev["targets"]}
    assert {t: r["chosen"] for t, r in rows.items()} == {"Bengali": "Assamese", "Assamese": "Bengali",
                                                         "Lao": "Assamese", "Turkish": "Bengali"}
    assert rows["Lao"]["best"] == ["Bengali"] and rows["Lao"]["regret"] == pytest.approx(0.3)
    assert all(rows[t]["regret"] == 0 and rows[t]["top1"] == 1 for t in ("Bengali", "Assamese", "Turkish"))
    s = ev["summary"]
    assert s["n_targets"] == 4 and s["top1_hits"] == 3 and s["top1_rate"] == 0.75
    assert s["mean_regret"] == pytest.approx(0.075) and s["max_regret"] == pytest.approx(0.3)
    # by hand: within-target ranks (score vs -WER); Assamese's Lao/Turkish scores tie (0.11) -> midrank 1.5
    #   sum of rank-deviation products 2 + 1.5 - 2 + 2 = 3.5, sums of squares 7.5 and 8
    assert s["spearman"] == pytest.approx(3.5 / math.sqrt(7.5 * 8))
    #   within-target pairs: 8 concordant, 3 discordant, 12 pairs, 1 tied in score -> tau-b
    assert s["kendall"] == pytest.approx(5 / math.sqrt(11 * 12))
    # NDCG@3, gain (worst - WER) / (worst - best): Bengali, Turkish perfect; Lao reversed-ish; Assamese tie
    lao = (0.1 / 0.3 / math.log2(3) + 1 / 2) / (1 + 0.1 / 0.3 / math.log2(3))
    tie = (0.8 / 1.7) / 2
    assamese = (1 + tie / math.log2(3) + tie / 2) / (1 + 0.8 / 1.7 / math.log2(3))
    assert rows["Lao"]["ndcg@3"] == pytest.approx(lao) and rows["Assamese"]["ndcg@3"] == pytest.approx(assamese)
    assert s["ndcg@3"] == pytest.approx((2 + lao + assamese) / 4)
    # a uniformly random non-self choice: Bengali's candidates 63.8/65.1/64.2 -> expected regret 0.567, ...
    assert rows["Bengali"]["random_regret"] == pytest.approx((0 + 1.3 + 0.4) / 3, abs=1e-6)


# (predicted scores, WER matrix, expected top-1 hits, mean regret, pooled Spearman)
ORACLE_CASES = [
    pytest.param({"t": {"a": .5, "b": .3, "c": .2}}, {"t": {"t": 50, "a": 60, "b": 61, "c": 65}}, 1, 0.0, 1.0,
                 id="perfect"),
    pytest.param({"t": {"a": .2, "b": .3, "c": .5}}, {"t": {"t": 50, "a": 60, "b": 61, "c": 65}}, 0, 5.0, -1.0,
                 id="reversed"),
    # a tie at the top between the best and the worst source: the expectation over both choices
    pytest.param({"t": {"a": .4, "b": .2, "c": .4}}, {"t": {"a": 60, "b": 61, "c": 65}}, 0.5, 2.5, 0.0,
                 id="tie-at-top"),
    # the target's own (highest) score and its own WER are ignored
    pytest.param({"t": {"t": .9, "a": .06, "b": .04}}, {"t": {"t": 40, "a": 62, "b": 60}}, 0, 2.0, -1.0,
                 id="self-excluded"),
    # pooled over a perfect and a reversed target
    pytest.param({"x": {"a": 3, "b": 2, "c": 1}, "y": {"a": 1, "b": 2, "c": 3}},
                 {"x": {"a": 10, "b": 11, "c": 12}, "y": {"a": 20, "b": 21, "c": 24}}, 1, 2.0, 0.0, id="pooled"),
    # sources without a WER (or without a score) are not candidates
    pytest.param({"t": {"a": .1, "b": .5, "z": .9}}, {"t": {"a": 60, "b": 63, "q": 50}}, 0, 3.0, -1.0,
                 id="candidates-intersect"),
]


@pytest.mark.parametrize("scores, wer, top1, regret, spearman", ORACLE_CASES)
def test_ranking_metrics_against_oracle_tables(scores, wer, top1, regret, spearman):
    s = evaluate_ranking(scores, wer)["summary"]
    assert s["top1_hits"] == pytest.approx(top1)
    assert s["mean_regret"] == pytest.approx(regret)
    assert s["spearman"] == pytest.approx(spearman, abs=1e-9)


def test_targets_with_fewer_than_two_candidates_are_skipped():
    ev = evaluate_ranking({"t": {"a": .5, "t": .5}, "u": {"a": .2, "b": .1}},
                          {"t": {"t": 1, "a": 2}, "u": {"a": 3, "b": 4}, "v": {"a": 1, "b": 2}})
    assert [r["target"] for r in ev["targets"]] == ["u"] and ev["skipped"] == ["t", "v"]


@pytest.mark.parametrize("seed", range(6))
def test_pooled_correlations_equal_scipy_for_one_target(seed):
    rng = np.random.default_rng(seed)
    n = 6
    scores = np.round(rng.random(n), 1)  # rounding makes ties likely
    wers = np.round(50 + 10 * rng.random(n), 0)
    names = [f"s{i}" for i in range(n)]
    s = evaluate_ranking({"t": dict(zip(names, scores))}, {"t": dict(zip(names, wers))})["summary"]
    if len(set(scores)) > 1 and len(set(wers)) > 1:
        assert s["spearman"] == pytest.approx(spearmanr(scores, -wers).statistic)
        assert s["kendall"] == pytest.approx(kendalltau(scores, -wers).statistic)


# --------------------------------------------------------------------------------------------------------------
# Noise and significance


def _utts(rates: dict[str, float], n: int = 100, ref: int = 20, seed: int = 0) -> dict:
    """Per source, per utterance (errors, reference length): Poisson errors at the given CER (%)."""
    rng = np.random.default_rng(seed)
    return {s: {f"u{i}": (int(rng.poisson(cer / 100 * ref)), ref) for i in range(n)} for s, cer in rates.items()}


@pytest.mark.parametrize("rates, seed_sd, tied", [
    ({"a": 20.0, "b": 50.0, "c": 60.0}, 0.0, ["a"]),  # far apart: one best beyond noise
    ({"a": 20.0, "b": 20.5, "c": 60.0}, 0.0, ["a", "b"]),  # 0.5 points on 100 utterances: within noise
    ({"a": 20.0, "b": 26.0, "c": 60.0}, 3.0, ["a", "b"]),  # beyond the bootstrap, within 2 x 1.41 x seed sd
])
def test_noise_ties_call_a_best_only_beyond_noise(rates, seed_sd, tied):
    res = noise_ties(_utts(rates), seed_sd=seed_sd)
    assert res["best"] in tied and res["tied"] == tied and res["n_utts"] == 100  # within noise, b may come out best
    assert res["seed_floor"] == pytest.approx(2 * math.sqrt(2) * seed_sd)
    lo, hi = res["intervals"]["c"]
    assert 0 < lo < hi  # c is clearly worse than the best


@pytest.mark.parametrize("n_runs, tied", [(None, ["a", "b"]), ({"a": 1, "b": 1}, ["a", "b"]),
                                           ({"a": 3, "b": 3}, ["a"]), ({"a": 3}, ["a", "b"])])
def test_noise_ties_floor_shrinks_with_the_seeds_a_cell_averages(n_runs, tied):
    """A cell averaged over n seeds has 1/sqrt(n) of a run's training noise: the floor of a difference is
    2 sd sqrt(1/n_a + 1/n_b). Here sd puts the difference between the floors of 3 + 3 seeds and of 1 + 1 (or 3 + 1)."""
    per = _utts({"a": 20.0, "b": 25.0}, n=300)
    rates = {k: 100 * sum(e for e, _ in v.values()) / sum(n for _, n in v.values()) for k, v in per.items()}
    diff = rates["b"] - rates["a"]
    sd = 1.3 * diff / (2 * math.sqrt(2))  # floor: single runs 1.3 x diff (tied); 3 + 3: 0.75 x diff; 3 + 1: 1.06
    res = noise_ties(per, seed_sd=sd, n_runs=n_runs)
    assert res["best"] == "a" and res["intervals"]["b"][0] > 0  # the bootstrap alone separates them
    assert res["tied"] == tied
    want = {s: 2 * sd * math.sqrt(1 / (n_runs or {}).get(s, 1) + 1 / (n_runs or {}).get("a", 1)) for s in "ab"}
    assert res["floors"] == pytest.approx(want) and res["seed_floor"] == pytest.approx(max(want.values()))
    with pytest.raises(ValueError, match="n_runs"):
        noise_ties(per, seed_sd=sd, n_runs={"a": 0})


def test_noise_ties_pair_by_utterance():
    """The comparison is paired: two sources that differ by one error on every utterance are apart beyond noise,
    although each one's own error varies a lot from utterance to utterance."""
    rng = np.random.default_rng(1)
    base = {f"u{i}": (int(rng.integers(0, 15)), 20) for i in range(60)}
    per = {"a": base, "b": {k: (e + 1, n) for k, (e, n) in base.items()}}
    assert noise_ties(per)["tied"] == ["a"]
    with pytest.raises(ValueError, match="no test utterance is shared"):
        noise_ties({"a": {"u1": (1, 2)}, "b": {"u2": (1, 2)}})


def test_ties_count_as_equally_good_in_every_metric():
    scores = {"t": {"a": .1, "b": .9, "c": .5}}
    wer = {"t": {"a": 40.0, "b": 40.4, "c": 60.0}}
    strict = evaluate_ranking(scores, wer)["summary"]
    tied = evaluate_ranking(scores, wer, tied={"t": {"a", "b"}})
    s = tied["summary"]
    assert strict["top1_hits"] == 0 and strict["mean_regret"] == pytest.approx(0.4)
    assert s["top1_hits"] == 1 and s["mean_regret"] == 0 and s["n_unique_best"] == 0
    assert s["random_top1_hits"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["ndcg@3"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))  # order b, c, a; gains 1, 0, 1
    row = tied["targets"][0]
    assert row["oracle"] == [["a", 40.0], ["b", 40.4], ["c", 60.0]]  # the measured values are kept for reports


def test_permutation_p_values_match_exact_chance():
    """Three targets of three candidates, every one ranked perfectly: a random ranking gets all three right with
    probability (1/3)^3 and orders all three perfectly with (1/6)^3."""
    wer = {t: {"a": 10.0 + i, "b": 20.0, "c": 30.0 - i} for i, t in enumerate(("x", "y", "z"))}
    perfect = {t: {s: -v for s, v in row.items()} for t, row in wer.items()}
    p = permutation_test(perfect, wer, n=20000, seed=3)
    assert p["top1_hits"]["observed"] == 3 and p["top1_hits"]["p"] == pytest.approx(1 / 27, abs=0.006)
    assert p["spearman"]["p"] == pytest.approx(1 / 216, abs=0.002)
    assert p["top1_hits"]["random_mean"] == pytest.approx(1.0, abs=0.03)  # 3 targets x 1/3
    reversed_ = {t: {s: v for s, v in row.items()} for t, row in wer.items()}
    assert permutation_test(reversed_, wer, n=2000)["mean_regret"]["p"] == pytest.approx(1.0)


@pytest.mark.parametrize("a_regrets, b_regrets, p", [
    ([0, 0, 0, 0], [1, 2, 3, 4], 1 / 16),  # a better on all 4 targets: only the observed signs are as good
    ([1, 2, 3, 4], [1, 2, 3, 4], 1.0),  # no difference at all
    ([0, 5, 0, 0], [1, 0, 1, 1], 9 / 16),  # a better on 3 of 4, but worse by more on the fourth
])
def test_paired_comparison_is_an_exact_sign_flip_test(a_regrets, b_regrets, p):
    def ev(regrets):
        return {"targets": [{"target": f"t{i}", "regret": r, "top1": float(r == 0)} for i, r in enumerate(regrets)]}

    res = paired_comparison(ev(a_regrets), ev(b_regrets))
    assert res["n_targets"] == 4 and res["p"] == pytest.approx(p)
    assert res["mean_difference"] == pytest.approx(np.mean(a_regrets) - np.mean(b_regrets))


def test_ndcg_separates_a_reversed_ranking():
    # why gains are min-max scaled: with gain = best/WER, WERs this close give NDCG@3 >= 0.95 (0.98 here) even for
    # a reversed ranking; the gain (worst - WER) / (worst - best) does not hide it
    ev = evaluate_ranking({"t": {"a": 1, "b": 2, "c": 3}}, {"t": {"a": 60, "b": 61, "c": 65}})
    g = 0.8  # b's gain: (65 - 61) / (65 - 60)
    assert ev["summary"]["ndcg@3"] == pytest.approx((g / math.log2(3) + 1 / 2) / (1 + g / math.log2(3)))
    assert ev["summary"]["ndcg@3"] < 0.75


def test_read_wer_matrix_wide_and_long(tmp_path):
    wide = tmp_path / "wer_matrix.csv"
    wide.write_text("adapt to \\ pretrain on,bn,as,th\nbn,66.0*,63.8,65.1\nas,61.2,65.2*,\nth,59.8,60.1,62.3*\n")
    assert read_wer_matrix(wide) == {"bn": {"bn": 66.0, "as": 63.8, "th": 65.1}, "as": {"bn": 61.2, "as": 65.2},
                                     "th": {"bn": 59.8, "as": 60.1, "th": 62.3}}
    long = tmp_path / "long.csv"
    long.write_text("target,source,wer,cer\nbn,as,63.8,20\nbn,th,65.1,21\nas,bn,nan,3\n")
    assert read_wer_matrix(long) == {"bn": {"as": 63.8, "th": 65.1}}
    bad = tmp_path / "bad.csv"
    bad.write_text("x,bn,as\nbn,1,two\n")
    with pytest.raises(ValueError, match="not a WER matrix"):
        read_wer_matrix(bad)
    with pytest.raises(FileNotFoundError):
        read_wer_matrix(tmp_path / "none.csv")


@pytest.mark.parametrize("target, source, jaccard, coverage", [
    ("aab", "aaaaac", 1 / 3, 2 / 3),
    ("abc", "abc", 1.0, 1.0),
    ("ab", "cd", 0.0, 0.0),
    ("abbb", "b", 1 / 2, 3 / 4),
])
def test_inventory_overlap(target, source, jaccard, coverage):
    t, s = Counter(target), Counter(source)
    assert inventory_overlap(t, s, "jaccard") == pytest.approx(jaccard)
    assert inventory_overlap(t, s, "coverage") == pytest.approx(coverage)


def test_unit_inventories_chars_and_ipa_phones():
    assert unit_inventory(["ab ba", "c"], "tr", "char") == Counter({"a": 2, "b": 2, "c": 1})
    ipa = unit_inventory(["merhaba dünya"], "tr", "ipa")
    assert {"m", "h", "b"} <= set(ipa) and "ˈ" not in ipa and "|" not in ipa
    scores = inventory_scores({"bn": ["আমি ভাত"], "as": ["আমি ভাত"], "tr": ["merhaba"]}, "char", "jaccard")
    assert scores["bn"] == {"as": 1.0, "tr": 0.0} and set(scores) == {"bn", "as", "tr"}


@pytest.mark.skipif(not typology_available(), reason="lang2vec (URIEL data) is not installed")
def test_typology_similarity_from_uriel():
    gen = typology_scores(["bn", "as", "tr", "th"], "genetic")
    assert gen["bn"]["as"] > gen["bn"]["tr"] and gen["bn"]["as"] == pytest.approx(gen["as"]["bn"])
    syn = typology_scores(["bn", "as", "tr", "th"], "syntax", targets=["th"])
    assert set(syn) == {"th"} and set(syn["th"]) == {"bn", "as", "tr"}


@pytest.mark.skipif(not typology_available(), reason="lang2vec (URIEL data) is not installed")
def test_uriel_data_found_when_a_lang2vec_script_shadows_the_package(tmp_path, monkeypatch):
    """The lang2vec wheel installs a console script bin/lang2vec.py; run as the `xlingual` console script, bin/ is
    sys.path[0] and `import lang2vec` finds that script. The URIEL data must still be found (the CLI's typology
    baseline was silently skipped that way)."""
    (tmp_path / "lang2vec.py").write_text("# a console script, not the package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert typology_available()
    assert typology_scores(["bn", "as", "tr"], "genetic")["bn"]["as"] > 0


def _utt(i: str, seconds: float, lang: str = "tr") -> Utterance:
    return Utterance(id=i, audio=f"/x/{i}.wav", text="a", language=lang, speaker="s", duration=seconds)


@pytest.mark.parametrize("scores, durations, hours, expected", [
    ({"a": .9, "b": .8, "c": .1}, {"a": 10, "b": 10, "c": 10}, 20 / 3600, ["a", "b"]),
    # b would overflow the budget: skipped, and the shorter c still fits
    ({"a": .9, "b": .8, "c": .1}, {"a": 10, "b": 30, "c": 5}, 16 / 3600, ["a", "c"]),
    ({"a": .1, "b": .2}, {"a": 10, "b": 10}, 1.0, ["b", "a"]),
    ({"a": .5, "b": .5, "c": .9}, {"a": 10, "b": 10, "c": 10}, 20 / 3600, ["c", "a"]),  # ties by id
])
def test_select_utterances_highest_scores_within_budget(scores, durations, hours, expected):
    utts = [_utt(i, d) for i, d in durations.items()]
    chosen = select_utterances(utts, scores, hours)
    assert [u.id for u in chosen] == expected
    assert sum(u.duration for u in chosen) <= hours * 3600 + 1e-6


def test_select_utterances_needs_scores_and_budget():
    with pytest.raises(ValueError, match="no score"):
        select_utterances([_utt("a", 1)], {}, 1.0)
    with pytest.raises(ValueError, match="hours"):
        select_utterances([_utt("a", 1)], {"a": 1}, 0)


# --------------------------------------------------------------------------------------------------------------
# With a tiny trained LID (bn, tr, th; shared with test_lid.py through the session temp folder)


@pytest.fixture(scope="module")
def lid_run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "lid_shared"
    corpus = build_corpus(root / "corpus")
    cfg = tiny_lid_config(corpus, root / "lid")
    return cfg, train_lid(cfg), corpus


def test_rank_sources_orders_by_average_posterior_and_excludes_self(lid_run):
    _, best, corpus = lid_run
    target = corpus / "bn" / "test.jsonl"
    ranking = rank_sources(best, target)
    assert [s for s, _ in ranking] != [] and "bn" not in dict(ranking) and len(ranking) == 2
    assert [v for _, v in ranking] == sorted((v for _, v in ranking), reverse=True)
    model, meta = load_lid(best)
    avg = average_scores(posteriors_for(model, meta, read_manifest(target)))["frame"]
    expected = {lang: float(v) for lang, v in zip(meta["languages"], avg) if lang != "bn"}
    assert dict(ranking) == pytest.approx(expected, abs=1e-6)
    with_self = rank_query(best, target, exclude_self=False, level="utterance")
    assert {s for s, _ in with_self.ranking} == {"bn", "tr", "th"} and with_self.excluded == []
    assert sum(v for _, v in with_self.ranking) == pytest.approx(1.0, abs=1e-5)


def test_rank_query_shows_its_evidence(lid_run, tmp_path, capsys):
    """The margin between the first two sources with a 95% interval over resampled target utterances, how often
    the first stays first, a warning below a minute of speech, and the measured answer where an oracle has one."""
    _, best, corpus = lid_run
    target = corpus / "bn" / "test.jsonl"
    oracle = {"metric": "cer", "errors": {"bn": {"tr": 30.0, "th": 31.0}}, "tied": {"bn": ["th", "tr"]}}
    res = rank_query(best, target, oracle=oracle)
    (first, s1), (second, s2) = res.ranking
    assert res.margin == pytest.approx(s1 - s2) and res.margin >= 0
    lo, hi = res.margin_interval
    assert lo <= res.margin <= hi and 0.0 <= res.stability <= 1.0
    assert res.warnings and "only" in res.warnings[0] and "s of speech" in res.warnings[0]
    assert res.measured["best"] == "tr" and res.measured["tied"] == ["th", "tr"]
    assert res.record is None  # bn's own row is all this oracle has: no record of other targets
    assert rank_query(best, target).measured is None  # no oracle: nothing measured to show
    # the sources' transfer record on the oracle's other targets, bn left out as a target and as a source
    wide = {"metric": "cer", "tied": {},
            "errors": {"bn": {"tr": 99.0, "th": 1.0}, "tr": {"bn": 1.0, "th": 30.0, "ne": 20.0},
                       "th": {"bn": 1.0, "tr": 40.0, "ne": 45.0}, "ne": {"bn": 1.0, "tr": 20.0, "th": 30.0}}}
    # rows without bn: tr (ne > th), th (tr > ne), ne (tr > th): tr is best twice, th worst twice
    assert rank_query(best, target, oracle=wide).record == {"tr": 1.0, "th": 0.0}
    oracle_file = tmp_path / "oracle.json"
    oracle_file.write_text(json.dumps(wide))
    assert main(["rank", "--lid", str(best), "--target", str(target), "--oracle", str(oracle_file)]) == 0
    out = capsys.readouterr().out
    assert "record: how the source served the other targets of" in out and "record 1.00" in out
    assert main(["rank", "--lid", str(best), "--target", str(target)]) == 0
    out, err = capsys.readouterr()
    # what the score is, which way is better, and why the shown scores do not sum to 1 (issue 14)
    assert "score: the average LID posterior over its frames; higher = predicted better pre-training source" in out
    assert "(excluded: bn, the target's own language; the scores no longer sum to 1)" in out
    assert "95% over resampled utterances" in out and "warning: only" in err
    assert "LID feats: 3/3 utt (100%) done in" in err  # the feature extraction shows its progress (on stderr)


@pytest.mark.parametrize("learned", [True, False])
def test_an_lid_that_did_not_learn_is_no_evidence(lid_run, tmp_path, learned):
    """A query with an LID whose run did not learn warns; rank-eval gives no in-set scores from it (issue 11)."""
    import shutil

    from xlingual.rank_eval import csv_oracle, run_rank_eval

    _, best, corpus = lid_run
    ckpt = tmp_path / "lid" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(best, ckpt)
    record = json.loads((best.parent / "results.json").read_text())
    (ckpt.parent / "results.json").write_text(json.dumps({**record, "learned": learned}))
    res = rank_query(ckpt, corpus / "bn" / "test.jsonl")
    assert any("did not learn" in w and "no evidence" in w for w in res.warnings) == (not learned)
    wer = tmp_path / "wer.csv"
    wer.write_text("adapt to \\ pretrain on,bn,tr,th\nbn,60.0*,62.0,65.0\ntr,70.0,55.0*,71.0\nth,80.0,81.0,75.0*\n")
    ev = run_rank_eval(csv_oracle(wer), tmp_path / "eval", corpus, lid_ckpt=ckpt, baselines=(), n_perm=100)
    assert ("in_set" in ev["evaluations"]) == learned
    assert any("did not learn" in n for n in ev["notes"]) == (not learned)
    kept = run_rank_eval(csv_oracle(wer), tmp_path / "kept", corpus, lid_ckpt=ckpt, baselines=(), n_perm=100,
                         keep_unlearned=True)
    assert "in_set" in kept["evaluations"]


def test_rank_an_audio_folder(lid_run):
    _, best, corpus = lid_run
    res = rank_query(best, corpus / "th" / "wav" / "test", language="th")
    assert res.n_utterances == 3 and res.excluded == ["th"] and [s for s, _ in res.ranking] != []
    assert {s for s, _ in res.ranking} == {"bn", "tr"}
    assert rank_query(best, corpus / "th" / "wav" / "test").language is None  # unknown: nothing excluded


def test_cli_rank_json(lid_run, capsys):
    _, best, corpus = lid_run
    target = corpus / "tr" / "test.jsonl"
    assert main(["rank", "--lid", str(best), "--target", str(target), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["language"] == "tr" and out["excluded"] == ["tr"] and out["n_utterances"] == 3
    scores = [r["score"] for r in out["ranking"]]
    assert scores == sorted(scores, reverse=True) and {r["language"] for r in out["ranking"]} == {"bn", "th"}
    assert [(r["language"], r["score"]) for r in out["ranking"]] == \
        [(s, pytest.approx(v, abs=1e-6)) for s, v in rank_sources(best, target)]
    assert out["seconds"] < 60
    assert main(["rank", "--lid", str(best), "--target", str(target)]) == 0
    assert "1. " in capsys.readouterr().out
    assert main(["rank", "--lid", str(best), "--target", str(corpus / "nowhere.jsonl")]) == 2
    assert "target not found" in capsys.readouterr().err


def test_rank_names_a_clip_too_short_for_the_features(lid_run, tmp_path, make_wav, capsys):
    """A 10 ms clip used to crash deep inside torch's STFT ("Padding size should be less than ...")."""
    _, best, _ = lid_run
    make_wav(tmp_path / "new" / "speech.wav", seconds=1.0)
    make_wav(tmp_path / "new" / "click.wav", seconds=0.01)
    utts = [Utterance("speech", str(tmp_path / "new" / "speech.wav"), "", "xx", "s", 1.0),
            Utterance("click", str(tmp_path / "new" / "click.wav"), "", "xx", "s", 0.01)]
    write_manifest(tmp_path / "target.jsonl", utts)
    assert main(["rank", "--lid", str(best), "--target", str(tmp_path / "target.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'target.jsonl'}:2" in err and "'click'" in err
    # an audio folder is prepared first: the click is skipped and counted, the rest is ranked
    assert main(["rank", "--lid", str(best), "--target", str(tmp_path / "new"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_utterances"] == 1


def test_select_by_lid_takes_the_most_target_like_pool_utterances(lid_run, tmp_path):
    _, best, corpus = lid_run
    pool = split_utts(corpus, "tr", "train") + split_utts(corpus, "th", "train")
    budget = sum(sorted(u.duration for u in pool)[:5]) / 3600  # room for about 5 utterances
    summary = select_by_lid(best, pool, budget, tmp_path / "sel.jsonl", target_language="bn")
    chosen = read_manifest(tmp_path / "sel.jsonl")
    assert summary["criterion"] == "target" and summary["selected_utterances"] == len(chosen) > 0
    assert sum(u.duration for u in chosen) <= budget * 3600 + 1e-6
    model, meta = load_lid(best)
    post = posteriors_for(model, meta, pool).pooled
    bn = meta["languages"].index("bn")
    chosen_ids = {u.id for u in chosen}
    worst_chosen = min(float(post[i][bn]) for i in chosen_ids)
    # every utterance left out that would still have fitted scores lower than the worst one taken
    room = budget * 3600 - sum(u.duration for u in chosen)
    assert all(float(post[u.id][bn]) <= worst_chosen + 1e-6 for u in pool
               if u.id not in chosen_ids and u.duration <= room)
    assert json.loads((tmp_path / "sel.selection.json").read_text())["hours_by_language"]
    prof = select_by_lid(best, pool, budget, tmp_path / "prof.jsonl", target=split_utts(corpus, "bn", "test"),
                         criterion="profile")
    assert prof["criterion"] == "profile" and set(prof["profile"]) == {"bn", "tr", "th"}


def test_cli_rank_eval_in_set_loo_and_baselines(lid_run, tmp_path, capsys):
    cfg, best, corpus = lid_run
    wer = tmp_path / "wer_matrix.csv"
    wer.write_text("adapt to \\ pretrain on,bn,tr,th\nbn,60.0*,62.0,65.0\ntr,70.0,55.0*,71.0\nth,80.0,81.0,75.0*\n")
    loo = tmp_path / "lid.yaml"
    loo.write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "eval"
    # first as a user would: the 2-epoch toy LIDs may not have learned, and those give no scores
    assert main(["rank-eval", "--lid", str(best), "--wer-matrix", str(wer), "--out", str(out),
                 "--loo-config", str(loo), "--set", f"out_dir={tmp_path / 'loo'}"]) == 0
    capsys.readouterr()
    res = json.loads((out / "ranking_eval.json").read_text())
    learned = {t: json.loads((tmp_path / "loo" / "loo" / f"without_{t}" / "results.json").read_text())["learned"]
               for t in ("bn", "tr", "th")}
    assert sorted(res["loo_lid_unlearned"]) == sorted(t for t, ok in learned.items() if not ok)
    loo_scores = out / "loo_scores.json"
    scored = set(json.loads(loo_scores.read_text())["checkpoints"]) if loo_scores.is_file() else set()
    assert scored == {t for t, ok in learned.items() if ok}
    in_set_learned = json.loads((best.parent / "results.json").read_text())["learned"]
    assert ("in_set" in res["evaluations"]) == in_set_learned
    # then with the toy LIDs kept (checking the pipeline): every row is there, and the notes say what is no evidence
    assert main(["rank-eval", "--lid", str(best), "--wer-matrix", str(wer), "--out", str(out),
                 "--loo-config", str(loo), "--set", f"out_dir={tmp_path / 'loo'}", "--keep-unlearned"]) == 0
    md = capsys.readouterr().out
    if not all(learned.values()):
        unlearned = ", ".join(sorted(t for t, ok in learned.items() if not ok))
        assert any(f"the LID without {unlearned} did not learn" in n and "no evidence" in n
                   for n in json.loads((out / "ranking_eval.json").read_text())["notes"])
    for row in ("| in_set | lid_frame | 3 |", "| loo | lid_frame | 3 |", "| loo | lid_pooled | 3 |",
                "| loo | embedding | 3 |", "| loo | combined | 3 |", "| baselines | char_jaccard | 3 |"):
        assert row in md, row
    res = json.loads((out / "ranking_eval.json").read_text())
    assert set(res["evaluations"]) == {"in_set", "loo", "baselines"}
    assert {"char_jaccard", "char_coverage", "ipa_jaccard", "ipa_coverage"} <= set(res["evaluations"]["baselines"])
    ev = res["evaluations"]["loo"]["lid_frame"]
    assert set(ev["permutation"]) == {"top1_hits", "mean_regret", "spearman", "ndcg@3"}
    assert 0 < ev["permutation"]["top1_hits"]["p"] <= 1 and ev["vs_best_baseline"]["baseline"] in \
        res["evaluations"]["baselines"]
    # expected random top-1 is a count over the targets (1 best of 2 candidates each: 3 x 1/2)
    assert ev["summary"]["random_top1_hits"] == 1.5
    if not typology_available():
        assert any("lang2vec" in n for n in res["notes"])
    loo_scores = json.loads((out / "loo_scores.json").read_text())
    for t, row in loo_scores["scores"]["lid_frame"].items():  # an LID trained without t never scores t
        assert t not in row and len(row) == 2
        assert load_lid(loo_scores["checkpoints"][t])[1]["languages"] == [x for x in ["bn", "tr", "th"] if x != t]
    for name in ("lid_scores.png", "lid_scores_frame.csv", "ranking_in_set_lid_frame.csv",
                 "ranking_loo_lid_frame.csv", "ranking_eval.md", "loo_scores.png", "oracle.json"):
        assert (out / name).is_file()
    row = res["evaluations"]["in_set"]["lid_frame"]["targets"][0]
    assert row["target"] == "bn" and row["n_candidates"] == 2 and row["best"] == ["tr"]
