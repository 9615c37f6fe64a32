"""The ranking evaluation's oracle (xlingual/rank_eval.py): a matrix folder's measured cells with their noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import fake_matrix, write_tiny_corpus
from xlingual.rank_eval import _floor_words, _oracle_summary, csv_oracle, matrix_oracle, run_rank_eval

THREE = ["sources=[bn,tr,th]", "targets=[bn,tr,th]", "size_pairs=[]", "variant_pairs=[]", "layer_sweep=[]",
         "variants={}"]
# test CER (%) of target t adapted from source s, and the from-scratch baselines of t
CER = {("bn", "tr"): 30.0, ("bn", "th"): 31.0, ("tr", "bn"): 20.0, ("tr", "th"): 45.0, ("th", "bn"): 50.0,
       ("th", "tr"): 51.0}
SCRATCH = {"bn": 60.0, "tr": 55.0, "th": 70.0}


def cer_of(cell: dict):
    return _with(CER, cell)  # the same-language cells: 25


def test_oracle_values_ties_and_unlearned_cells(tmp_path):
    unlearned = "adapt/th-all_to_tr-10.8s/main/seed0"  # th -> tr
    fake_matrix(tmp_path, THREE, cer_of, learned=lambda c: c["name"] != unlearned)
    o = matrix_oracle(tmp_path, "cer", n_boot=1000)
    assert o["metric"] == "cer" and o["errors"]["bn"] == {"tr": 30.0, "th": 31.0}  # the target's own cell: out
    assert o["errors"]["tr"] == {"bn": 20.0} and o["unlearned"] == [("tr", "th")]  # not a measurement
    assert sorted(o["tied"]["bn"]) == ["th", "tr"]  # 30 vs 31 on 60 utterances: within noise, a tie
    assert sorted(o["tied"]["th"]) == ["bn", "tr"]  # 50 vs 51: a tie
    assert "tr" not in o["tied"]  # one candidate left: nothing to compare
    assert o["seed_sd"] == {"bn": 0.0, "tr": 0.0, "th": 0.0}  # one seed: no training-noise floor


def test_a_best_beyond_noise_is_called(tmp_path):
    far = {**CER, ("bn", "th"): 55.0}  # bn: tr 30 vs th 55
    fake_matrix(tmp_path, THREE, lambda c: _with(far, c))
    o = matrix_oracle(tmp_path, "cer", n_boot=1000)
    assert o["tied"]["bn"] == ["tr"] and o["noise"]["bn"]["best"] == "tr"
    lo, hi = o["noise"]["bn"]["intervals"]["th"]
    assert 15 < lo < 25 < hi < 35  # th minus tr: about 25 points, with its 95% interval


def test_baseline_seeds_give_the_training_noise_floor(tmp_path):
    """With the from-scratch baselines at 3 seeds, a difference below 2 x sqrt(2) x their sd is a tie even when
    the test utterances alone would separate it."""
    far = {**CER, ("bn", "th"): 40.0}  # bn: tr 30 vs th 40: beyond the bootstrap, within a seed sd of 4 x 2.8
    fake_matrix(tmp_path, [*THREE, "baseline_seeds=[1, 2]", "spread_budgets=[small]"],
                lambda c: _with(far, c, seed_step=4.0))
    o = matrix_oracle(tmp_path, "cer", n_boot=1000)
    assert o["seed_sd"]["bn"] == pytest.approx(4.0)  # 60, 64, 68
    assert o["noise"]["bn"]["seed_floor"] == pytest.approx(2 * 2 ** 0.5 * 4.0)
    assert o["noise"]["bn"]["intervals"]["th"][0] > 0 and sorted(o["tied"]["bn"]) == ["th", "tr"]
    # without the seed floor the bootstrap alone decides: tr is bn's best beyond noise; the spread is still reported
    o = matrix_oracle(tmp_path, "cer", n_boot=1000, seed_floor="none")
    assert o["tied"]["bn"] == ["tr"] and o["seed_sd"]["bn"] == pytest.approx(4.0) and o["floor_sd"]["bn"] == 0.0
    with pytest.raises(ValueError, match="seed_floor"):
        matrix_oracle(tmp_path, "cer", seed_floor="seeds")


def test_adaptation_seeds_give_the_adapt_noise_floor(tmp_path):
    """--seed-floor adapt: the seed spread of adaptation cells themselves, from a noise matrix of some pairs at other
    seeds (pooled with the main matrix's seed-0 runs of those pairs), decides the ties; the baselines' spread is
    still reported. Without any cell at 2 seeds it is an error, not a silent zero."""
    far = {**CER, ("bn", "th"): 40.0}  # bn: tr 30 vs th 40: beyond the bootstrap
    fake_matrix(tmp_path / "m", THREE, lambda c: _with(far, c))
    with pytest.raises(ValueError, match="2 or more seeds"):
        matrix_oracle(tmp_path / "m", "cer", n_boot=200, seed_floor="adapt")

    def seeded(step):  # the pairs of source tr, at seeds 1 and 2: +step, +2 x step
        return lambda c: None if _with(far, c) is None else _with(far, c) + step * c["seed"]

    noisy = ["sources=[tr]", "targets=[bn,tr,th]", "seeds=[1, 2]", "size_pairs=[]", "variant_pairs=[]",
             "layer_sweep=[]", "variants={}"]
    fake_matrix(tmp_path / "n_small", noisy, seeded(0.5))
    o = matrix_oracle(tmp_path / "m", "cer", n_boot=1000, seed_floor="adapt", noise_matrix=tmp_path / "n_small")
    assert o["adapt_noise"]["cells"] == 2 and o["adapt_noise"]["runs"] == 6  # bn<-tr, th<-tr at seeds 0, 1, 2
    assert o["adapt_noise"]["sd"] == pytest.approx(0.5) and o["floor_sd"]["bn"] == pytest.approx(0.5)
    assert o["tied"]["bn"] == ["tr"]  # 10 points >> 2 x sqrt(2) x 0.5
    fake_matrix(tmp_path / "n_large", noisy, seeded(4.0))  # sd 4: 10 points are within 2 x sqrt(2) x 4
    o = matrix_oracle(tmp_path / "m", "cer", n_boot=1000, seed_floor="adapt", noise_matrix=tmp_path / "n_large")
    assert o["adapt_noise"]["sd"] == pytest.approx(4.0) and sorted(o["tied"]["bn"]) == ["th", "tr"]
    assert o["seed_sd"]["bn"] == 0.0  # the baselines' spread, reported: one seed here


def test_cells_at_several_seeds_are_means_with_a_smaller_floor(tmp_path):
    """Every cell at 3 seeds (sources retrained): a cell is the mean of its seeds, and the training-noise floor of
    a difference of two such means is 2 sd sqrt(1/3 + 1/3), not the single runs' 2 sqrt(2) sd: bn's 7-point gap
    (tr 33 vs th 40 on average, sd 3 per cell) is then beyond noise, where one seed per cell (floor 8.5) ties."""
    far = {**CER, ("bn", "th"): 37.0}
    fake_matrix(tmp_path / "m", [*THREE, "seeds=[0, 1, 2]"], lambda c: _with(far, c) + 3.0 * c["seed"], n_utts=400)
    o = matrix_oracle(tmp_path / "m", "cer", n_boot=1000, seed_floor="adapt")  # its own cells give the sd
    assert o["adapt_noise"]["sd"] == pytest.approx(3.0) and o["seeds_per_cell"] == [3, 3]
    assert o["errors"]["bn"] == pytest.approx({"tr": 33.0, "th": 40.0})
    noise = o["noise"]["bn"]
    assert noise["n_runs"] == {"th": 3, "tr": 3}
    assert noise["floors"]["th"] == pytest.approx(2 * 3.0 * (2 / 3) ** 0.5)  # 4.9 < 7 < 8.5 = 2 sqrt(2) 3
    assert 4.9 < noise["errors"]["th"] - noise["errors"]["tr"] < 8.4  # the per-utterance rates: the same gap
    assert o["tied"]["bn"] == ["tr"]
    words = _floor_words(_oracle_summary(o))
    assert "a cell is the mean of 3 seeds" in words and "sd 3.00 pooled over" in words


def _with(table: dict, cell: dict, seed_step: float = 0.0):
    for r in cell["roles"]:
        if r["table"] == "matrix":
            return table.get((r["target"], r["source"]), 25.0)
        if r["table"] in ("baseline", "source"):
            return SCRATCH[r.get("target") or r["source"]] + seed_step * cell["seed"]
    return None


def test_csv_oracle_has_no_noise(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("adapt to \\ pretrain on,bn,tr\nbn,40*,50\ntr,45,30*\n")
    o = csv_oracle(path)
    assert o["errors"] == {"bn": {"bn": 40.0, "tr": 50.0}, "tr": {"bn": 45.0, "tr": 30.0}} and o["tied"] == {}
    assert json.dumps(o)  # plain data


@pytest.mark.parametrize("metric, other", [("cer", "WER"), ("wer", "CER")])
def test_tables_name_the_metric_of_the_oracle(tmp_path, metric, other):
    """The ranking tables say which error rate their numbers are: a CER oracle's tables said WER (issue 14)."""
    fake_matrix(tmp_path / "m", THREE, cer_of)
    write_tiny_corpus(tmp_path / "data", ("bn", "tr", "th"))
    out = tmp_path / "eval"
    run_rank_eval(matrix_oracle(tmp_path / "m", metric, n_boot=200), out, tmp_path / "data", baselines=("char",),
                  n_perm=100)
    md = (out / "ranking_eval.md").read_text()
    m = metric.upper()
    assert f"## Source ranking against the {m} matrix" in md and f"Oracle: test {m} (%)" in md
    assert f"| chosen ({m}) | best ({m}) |" in md and f"Regret in {m} points" in md
    assert other not in md
    header = (out / "ranking_baselines_char_jaccard.csv").read_text().splitlines()[0].split(",")
    assert f"chosen_{metric}" in header and f"best_{metric}" in header
    assert not any(other.lower() in c for c in header)


@pytest.mark.parametrize("pool_cer, verdict", [(10.0, "better"), (20.5, "tie"), (45.0, "worse")])
def test_pools_are_compared_with_each_targets_best_single_source(tmp_path, pool_cer, verdict):
    """A pooled source is not a ranking candidate: the oracle compares it with each target's best single source
    (tr: bn 20.0) under the same noise rule, and ranking_eval.md tables the verdicts."""
    sets = [*THREE, "pools={all: [bn, tr, th]}", "pool_budgets=[equal]"]

    def cer(c):
        for r in c["roles"]:
            if r.get("source") == "all":  # the pool's own pre-training, and its adaptations
                return pool_cer if r["table"] == "matrix" and r["target"] == "tr" else 60.0
        return cer_of(c)

    fake_matrix(tmp_path / "m", sets, cer)
    o = matrix_oracle(tmp_path / "m", "cer", n_boot=1000, seed_floor="none")
    assert "all" not in o["errors"]["bn"] and "all" not in o["tied"]["bn"]  # not a candidate
    tr = o["pools"]["tr"]["all"]
    assert tr["best_single"] == "bn" and tr["verdict"] == verdict
    assert tr["difference"] == pytest.approx(tr["error"] - tr["best_single_error"])
    lo, hi = tr["interval"]
    assert lo <= tr["difference"] <= hi and (lo > 0 or hi < 0) == (verdict != "tie")
    assert o["pools"]["bn"]["all"]["verdict"] == "worse"  # 60 vs 30
    write_tiny_corpus(tmp_path / "data", ("bn", "tr", "th"))
    run_rank_eval(o, tmp_path / "eval", tmp_path / "data", baselines=("char",), n_perm=100)
    md = (tmp_path / "eval" / "ranking_eval.md").read_text()
    assert "### Pooled sources vs the best single source" in md and f"| tr | {tr['error']:.1f} | bn (" in md


def test_saved_scores_are_rescored_against_a_new_matrix(tmp_path):
    """--scores-from: an earlier evaluation's predictor scores, re-scored against a matrix with other values or
    another noise rule, with no model, corpus or baseline run again (a fresh machine has only results/)."""
    from xlingual.cli import main

    fake_matrix(tmp_path / "m1", THREE, cer_of)
    write_tiny_corpus(tmp_path / "data", ("bn", "tr", "th"))
    first = run_rank_eval(matrix_oracle(tmp_path / "m1", "cer", n_boot=200, seed_floor="none"), tmp_path / "e1",
                          tmp_path / "data", baselines=("ipa",), n_perm=200)  # IPA: distinct scores here
    # the same oracle: the same evaluation, from the saved scores alone (no data folder)
    again = run_rank_eval(matrix_oracle(tmp_path / "m1", "cer", n_boot=200, seed_floor="none"), tmp_path / "e2",
                          None, n_perm=200, saved=tmp_path / "e1")
    for name, ev in first["evaluations"]["baselines"].items():
        assert again["evaluations"]["baselines"][name]["summary"]["mean_regret"] == pytest.approx(
            ev["summary"]["mean_regret"], abs=1e-4)
        assert [r["chosen"] for r in again["evaluations"]["baselines"][name]["targets"]] == \
            [r["chosen"] for r in ev["targets"]]
    assert all(isinstance(r["chosen"], str) for ev in first["evaluations"]["baselines"].values()
               for r in ev["targets"])  # one choice per target: a wrong reading of the scores changes it
    assert "reused from" in again["notes"][0] and again["scores_from"].endswith("ranking_eval.json")
    # a matrix whose best sources are the other way round: the same choices now have regret
    flipped = {("bn", "tr"): 55.0, ("bn", "th"): 20.0, ("tr", "bn"): 45.0, ("tr", "th"): 20.0,
               ("th", "bn"): 70.0, ("th", "tr"): 30.0}
    fake_matrix(tmp_path / "m2", THREE, lambda c: _with(flipped, c))
    out = tmp_path / "e3"
    assert main(["rank-eval", "--matrix", str(tmp_path / "m2"), "--seed-floor", "none", "--n-perm", "200",
                 "--scores-from", str(tmp_path / "e1"), "--out", str(out)]) in (0, None)
    res = json.loads((out / "ranking_eval.json").read_text())
    for name, ev in first["evaluations"]["baselines"].items():
        new = {r["target"]: r for r in res["evaluations"]["baselines"][name]["targets"]}
        for r in ev["targets"]:  # same choice, scored on the new matrix
            assert new[r["target"]]["chosen"] == r["chosen"]
            assert new[r["target"]]["chosen_wer"] == pytest.approx(flipped[(r["target"], r["chosen"])], abs=1e-3)
    with pytest.raises(ValueError, match="re-scored as they are"):  # saved scores are not mixed with new ones
        run_rank_eval(matrix_oracle(tmp_path / "m2", "cer", n_boot=200), tmp_path / "e4", tmp_path / "data",
                      baselines=("char",), saved=tmp_path / "e1")
    with pytest.raises(FileNotFoundError, match="no ranking_eval.json"):
        run_rank_eval(matrix_oracle(tmp_path / "m2", "cer", n_boot=200), tmp_path / "e5", None, baselines=(),
                      saved=tmp_path / "nowhere")


def test_the_probe_adds_its_setting_to_fresh_and_saved_scores(tmp_path, monkeypatch):
    """--probe MATRIX: the linear CTC probe's scores (probe.py; stubbed here, tested in test_probe.py) are evaluated
    as the setting "probe", beside fresh baselines or saved scores, and kept for a later re-scoring."""
    from xlingual import rank_eval
    from xlingual.cli import main

    seen = []

    def fake_probe(matrix_dir, targets, sources, cfg):
        seen.append((str(matrix_dir), sorted(targets), cfg.steps))
        return {t: {s: -CER[(t, s)] for s in sources if s != t} for t in targets}  # the oracle's own order

    monkeypatch.setattr(rank_eval, "probe_matrix", fake_probe)
    fake_matrix(tmp_path / "m", THREE, cer_of)
    write_tiny_corpus(tmp_path / "data", ("bn", "tr", "th"))
    first = run_rank_eval(matrix_oracle(tmp_path / "m", "cer", n_boot=200, seed_floor="none"), tmp_path / "e1",
                          tmp_path / "data", baselines=("ipa",), n_perm=200, probe=tmp_path / "m")
    probe = first["evaluations"]["probe"]["linear_ctc"]
    assert probe["summary"]["top1_hits"] == probe["summary"]["n_targets"] == 3 and probe["summary"]["mean_regret"] == 0
    assert any(n.startswith("probe:") for n in first["notes"]) and "probe_s" in first["timings"]
    # saved scores + the probe, from the CLI: both settings evaluated; re-scoring that output keeps the probe
    assert main(["rank-eval", "--matrix", str(tmp_path / "m"), "--seed-floor", "none", "--n-perm", "200",
                 "--scores-from", str(tmp_path / "e1"), "--probe", str(tmp_path / "m"), "--probe-steps", "7",
                 "--out", str(tmp_path / "e2")]) in (0, None)
    assert seen[-1] == (str(tmp_path / "m"), ["bn", "th", "tr"], 7)
    again = run_rank_eval(matrix_oracle(tmp_path / "m", "cer", n_boot=200, seed_floor="none"), tmp_path / "e3",
                          None, n_perm=200, saved=tmp_path / "e2")
    assert set(again["evaluations"]) == {"baselines", "probe"} and len(seen) == 2  # not computed again
    assert "`probe` (a linear CTC layer" in (tmp_path / "e3" / "ranking_eval.md").read_text()


def test_the_models_corpus_is_prepared_before_its_speech_is_read(tmp_path, monkeypatch):
    """On a fresh machine with a restored matrix the corpus is not there yet: rank-eval runs the data step of its
    leave-one-out models first (it said 'manifest not found' before) and then reads the speech it generated."""
    import xlingual.rank_eval as rank_eval
    from xlingual.config import PhonotacticConfig, load_config

    fake_matrix(tmp_path / "m", THREE, cer_of)
    data = tmp_path / "data"
    phones = load_config(PhonotacticConfig, None, [f"corpus.dir={data}"])
    prepared = []

    def prepare(corpus, languages, progress=True):
        prepared.append(list(languages))
        write_tiny_corpus(Path(corpus.dir), tuple(languages))

    monkeypatch.setattr(rank_eval, "prepare_corpus", prepare)
    monkeypatch.setattr(rank_eval, "train_loo_phone_recognizers", lambda *a, **k: {})  # none learned: no scores
    assert not data.exists()
    res = run_rank_eval(matrix_oracle(tmp_path / "m", "cer", n_boot=200), tmp_path / "eval", data,
                        phone_cfg=phones, baselines=("char",), n_perm=100)
    assert [sorted(p) for p in prepared] == [["bn", "th", "tr"]]
    assert res["evaluations"]["baselines"]  # the speech and transcripts were read from the prepared corpus
    assert any("did not learn" in n for n in res["notes"])
