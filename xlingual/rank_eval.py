"""The ranking evaluation (`xlingual rank-eval`): every predictor against a measured matrix, with its noise.

The oracle is a matrix of error rates (target -> source -> WER or CER %), read from a matrix folder (runs that did not
learn are left out, and per-utterance errors give each target's sources within noise of its best: rank_metrics.
noise_ties) or from a CSV (no noise information: only equal values tie).

Settings: "in_set" (an LID trained on the target too; its own column excluded: the reference's setting),
"loo" (every predictor built without the target: the real use, a new language), "loo+prior" (each loo predictor
blended with the sources' transfer record on the matrix's other targets: transfer_prior.py), "baselines" (predictors
that never train on speech, the transfer record alone among them), "probe" (a linear CTC layer on each source's
frozen encoder, fitted to the target's transcribed adaptation data: probe.py). Each predictor gets top-1, regret, pooled
Spearman, NDCG@k, permutation p-values against random ranking, the random expectations, and a paired comparison
with the best baseline. Outputs in out_dir: ranking_eval.{json,md}, ranking_<setting>_<predictor>.csv,
oracle.json, lid_scores.* (in-set), loo_scores.json.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from pathlib import Path

from .config import LIDConfig, PhonotacticConfig, matrix_sources
from .corpus import read_manifest, subset_hours
from .fileio import read_json, write_json, write_text
from .lid_scores import plot_heatmap, write_score_matrix
from .lid import lid_learned
from .predictors import (INVENTORY_METRICS, TYPOLOGY_SETS, combine, inventory_scores, lid_scores,
                         loo_lid_predictors, phonotactic_scores, train_loo_lids,
                         train_loo_phone_recognizers, typology_available, typology_scores)
from .probe import ProbeConfig, probe_matrix
from .rank_metrics import evaluate_ranking, noise_ties, paired_comparison, permutation_test, read_wer_matrix
from .runspec import prepare_corpus
from .transfer_prior import prior_scores, with_prior

COMBINED = ("lid_frame", "embedding", "phonotactic")  # the parts of the combined predictor (loo)


# --------------------------------------------------------------------------------------------------------------
# The oracle


SEED_FLOORS = ("baseline", "adapt", "none")  # where a cell's training noise comes from (matrix_oracle)


def matrix_oracle(matrix_dir: str | Path, metric: str = "cer", n_boot: int = 2000, alpha: float = 0.05,
                  seed_floor: str = "baseline", noise_matrix: str | Path | None = None) -> dict:
    """The measured matrix of a matrix folder with its noise: {"metric", "errors": t -> s -> %, "tied": t -> [s],
    "noise": t -> noise_ties details, "unlearned": [(target, source)], "seed_sd": t -> sd, "seed_floor",
    "adapt_noise"}.

    A cell is the mean over the seeds that learned; its per-utterance errors (decode_test/errors.jsonl) are
    averaged over those seeds for the paired bootstrap. A source is tied with the target's best when that bootstrap
    does not separate them or their difference is within training noise, the seed sd given by `seed_floor`:
      "baseline"  the sd over seeds of the target's from-scratch baseline at the target budget (baseline_seeds);
                  0 without several seeds. A from-scratch run also varies its initialization, so this may
                  overstate the noise of a run adapted from a pre-trained source.
      "adapt"     the sd over seeds of adaptation cells themselves, pooled over every cell measured at several
                  seeds: the cells of `noise_matrix` (a matrix folder of some of the same pairs at other seeds,
                  sources retrained at those seeds too) together with this matrix's runs of the same pairs, and any
                  cell of this matrix that has several seeds.
      "none"      the test utterances' bootstrap alone (a cell's own training noise is not counted).
    seed_sd: the baselines' spread per target (reported whatever the floor); floor_sd: the sd the ties used;
    adapt_noise: the pooled adaptation spread, when measured. pools: target -> pool -> pool_vs_best (the matrix's
    pooled sources against the target's best single source, same noise rule); pools are not ranking candidates.
    """
    if seed_floor not in SEED_FLOORS:
        raise ValueError(f"seed_floor must be one of {', '.join(SEED_FLOORS)}, not {seed_floor!r}")
    from .report import Results

    if metric not in ("cer", "wer"):
        raise ValueError(f"metric must be 'cer' or 'wer', not {metric!r}")
    res = Results(matrix_dir)
    adapt_noise = adaptation_spread(res, Results(noise_matrix) if noise_matrix else None, metric)
    if seed_floor == "adapt" and adapt_noise is None:
        raise ValueError("seed_floor 'adapt' needs adaptation cells measured at 2 or more seeds: give a noise "
                         "matrix (the same pairs at other seeds) or a matrix with several seeds")
    key = ("char_errors", "ref_chars") if metric == "cer" else ("errors", "ref_words")
    errors, tied, noise, unlearned, seed_sd, floor_sd, pools = {}, {}, {}, [], {}, {}, {}
    # pooled multilingual sources (matrix `pools`): not ranking candidates, compared with each target's best single
    pool_names = [c for c in matrix_sources(res.config) if c not in res.config["sources"]]
    for t in res.config["targets"]:
        base = res.values(metric, table="baseline", target=t, budget="small")
        seed_sd[t] = statistics.stdev(base) if len(base) >= 2 else 0.0
        floor_sd[t] = {"baseline": seed_sd[t], "none": 0.0, "adapt": (adapt_noise or {}).get("sd")}[seed_floor]
        per_utt, n_runs = {}, {}  # a cell's errors averaged over its learned seeds, and how many
        for s in res.config["sources"]:
            if s == t:
                continue
            role = {"table": "matrix", "source": s, "target": t}
            if res.unlearned(**role) and res.value(metric, **role) is None:
                unlearned.append((t, s))
            runs = _learned_runs(res, role)
            utt = _learned_utterance_errors(res, runs, key)
            if utt is not None:
                errors.setdefault(t, {})[s] = res.value(metric, **role)
                per_utt[s] = utt
                n_runs[s] = len(runs)
        if len(per_utt) >= 2:
            noise[t] = noise_ties(per_utt, floor_sd[t], n_boot, alpha, n_runs=n_runs)
            tied[t] = noise[t]["tied"]
            for p in pool_names:
                pool_runs = _learned_runs(res, {"table": "matrix", "source": p, "target": t})
                pool_utt = _learned_utterance_errors(res, pool_runs, key)
                if pool_utt is not None:
                    best = noise[t]["best"]
                    pools.setdefault(t, {})[p] = pool_vs_best(pool_utt, per_utt[best], best, floor_sd[t], n_boot,
                                                              alpha, n_runs=(len(pool_runs), n_runs[best]))
    return {"metric": metric, "matrix_dir": str(matrix_dir), "errors": errors, "tied": tied, "noise": noise,
            "unlearned": unlearned, "seed_sd": seed_sd, "seed_floor": seed_floor, "floor_sd": floor_sd,
            "adapt_noise": adapt_noise, "alpha": alpha, "n_boot": n_boot, "pools": pools,
            "seeds_per_cell": _seed_range(noise)}


def _seed_range(noise: dict) -> list[int] | None:
    """[fewest, most] learned seeds a ranked cell is the mean of (None: no cell compared)."""
    counts = [n for v in noise.values() for n in v["n_runs"].values()]
    return [min(counts), max(counts)] if counts else None


def pool_vs_best(pool_utt: dict, best_utt: dict, best: str, seed_sd: float, n_boot: int = 2000,
                 alpha: float = 0.05, n_runs: tuple[int, int] = (1, 1)) -> dict:
    """A pooled source against a target's best single source, with the oracle's own noise rule (noise_ties on the
    two): {"error", "best_single", "best_single_error", "difference" (pool - best single, points), "interval"
    (its paired-bootstrap interval), "verdict": "better" | "tie" | "worse"}. The best single source is picked
    after the fact among many (its error is optimistically low): a pool that ties it is no worse than the choice
    an oracle would make. n_runs: the seeds each of the two is averaged over (pool, best single)."""
    cmp = noise_ties({"pool": pool_utt, "single": best_utt}, seed_sd, n_boot, alpha,
                     n_runs={"pool": n_runs[0], "single": n_runs[1]})
    lo, hi = cmp["intervals"]["pool"] if cmp["best"] == "single" else [-x for x in cmp["intervals"]["single"][::-1]]
    verdict = "tie" if len(cmp["tied"]) == 2 else ("better" if cmp["best"] == "pool" else "worse")
    return {"error": cmp["errors"]["pool"], "best_single": best, "best_single_error": cmp["errors"]["single"],
            "difference": cmp["errors"]["pool"] - cmp["errors"]["single"], "interval": [lo, hi], "verdict": verdict}


def adaptation_spread(res, extra=None, metric: str = "cer") -> dict | None:
    """The seed spread of adaptation cells: {"sd", "cells", "runs", "per_cell": "t<-s" -> [values]} or None.

    res, extra: report.Results of a matrix and (optionally) of a second one with some of the same (source, target)
    pairs at other seeds. A cell's values are its learned runs' test `metric` in both; the sd is pooled over the
    cells with 2 or more (the root of the mean of their sample variances, weighted by degrees of freedom).
    """
    per_cell = {}
    for r in (res, extra):
        if r is None:
            continue
        for t in r.config["targets"]:
            for s in r.config["sources"]:
                if s != t:
                    per_cell.setdefault(f"{t}<-{s}", []).extend(r.values(metric, table="matrix", source=s, target=t))
    multi = {k: v for k, v in per_cell.items() if len(v) >= 2}
    if not multi:
        return None
    dof = sum(len(v) - 1 for v in multi.values())
    var = sum(statistics.variance(v) * (len(v) - 1) for v in multi.values()) / dof
    return {"sd": var ** 0.5, "cells": len(multi), "runs": sum(map(len, multi.values())), "per_cell": multi}


def _learned_runs(res, role: dict) -> list[str]:
    """The names of a cell's runs (seeds) that finished and learned: the only ones that are a measurement."""
    return [c["name"] for c in res.runs(**role) if c["name"] in res.results and res.learned(c["name"])]


def _learned_utterance_errors(res, runs: list[str], key: tuple[str, str]) -> dict[str, tuple[float, int]] | None:
    """The per-utterance errors of `runs` (a cell's learned runs, _learned_runs) averaged over them (None: none)."""
    if not runs:
        return None
    return _mean_errors([res.dir / name / "decode_test" / "errors.jsonl" for name in runs], key)


def _mean_errors(paths: list[Path], key: tuple[str, str]) -> dict[str, tuple[float, int]]:
    """utterance id -> (errors averaged over the runs, reference length) from decode errors.jsonl files."""
    import json

    acc: dict[str, list] = {}
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            acc.setdefault(r["id"], [[], r[key[1]]])[0].append(r[key[0]])
    return {i: (sum(e) / len(e), n) for i, (e, n) in acc.items()}


def csv_oracle(path: str | Path) -> dict:
    """An oracle from a matrix CSV (rank_metrics.read_wer_matrix): no noise information, so only equal values tie."""
    return {"metric": "wer", "source_csv": str(path), "errors": read_wer_matrix(path), "tied": {}, "noise": {},
            "unlearned": []}


# --------------------------------------------------------------------------------------------------------------
# Evaluating the predictors


def run_rank_eval(oracle: dict, out_dir: str | Path, data_dir: str | Path, split: str = "test",
                  lid_ckpt: str | Path | None = None, loo_cfg: LIDConfig | None = None,
                  phone_cfg: PhonotacticConfig | None = None,
                  baselines: tuple[str, ...] | None = None, k: int = 3, n_perm: int = 10000,
                  level: str = "frame", max_hours: float | None = None, source_split: str = "dev",
                  cache_dir: str | Path | None = None, device: str | None = None, jobs: int = 1,
                  lid_from_phones: bool = False, keep_unlearned: bool = False,
                  saved: str | Path | None = None, probe: str | Path | None = None,
                  probe_cfg: ProbeConfig | None = None) -> dict:
    """Evaluate every predictor that the arguments allow against `oracle` (matrix_oracle or csv_oracle).

    Target speech: data_dir/<target>/<split>.jsonl (text optional); the sources' own speech (embeddings,
    phonotactics): data_dir/<source>/<source_split>.jsonl; transcripts for the inventory baselines:
    data_dir/<lang>/train.jsonl. lid_ckpt: an LID over the sources (in-set setting); loo_cfg: train (cached) one
    LID per target without it; phone_cfg: train (cached) one phone recognizer per target without it.
    baselines: the text baselines to compute (default char, ipa and typology; none with `saved`).
    jobs: leave-one-out models trained at once (a process each). lid_from_phones: each target's LID starts from
    the encoder of that target's phone recognizer (which never heard it either). An LID that did not learn (its
    results.json says so) gives no scores, unless keep_unlearned (checking a pipeline on tiny data: the notes then
    say that those rows are no evidence).
    saved: an earlier evaluation's ranking_eval.json whose predictor scores are re-scored against `oracle` (a matrix
    with more runs, another noise rule) instead of running any model or baseline again: no data is read then, and
    the LID, recognizer and baseline arguments must be left out.
    probe: a matrix folder whose single-source cells still have their sources' checkpoints: the linear CTC probe
    (probe.py) scores each source on the target's adaptation data there (setting "probe"; with `saved` too, added
    to the saved scores).
    """
    if saved is not None:
        if lid_ckpt is not None or loo_cfg is not None or phone_cfg is not None or baselines:
            raise ValueError("saved scores are re-scored as they are: leave out the LID, leave-one-out, phone and "
                             "baseline options (they would compute the scores again)")
        return _rescore(oracle, out_dir, saved, k, n_perm, probe, probe_cfg)
    baselines = ("char", "ipa", "typology") if baselines is None else baselines
    data_dir, out = Path(data_dir), Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else data_dir / ".features"
    targets, sources = _candidates(oracle)
    # the data step of the models below comes first (a no-op when up to date): on a fresh machine with a restored
    # matrix, their corpus, often data_dir itself, has not been generated yet
    for cfg in (loo_cfg, phone_cfg):
        if cfg is not None and targets:
            prepare_corpus(cfg.corpus, list(dict.fromkeys(targets + sources)), cfg.train.progress)
    speech = {t: _speech(data_dir / t / f"{split}.jsonl", max_hours) for t in targets}
    source_speech = {s: _speech(data_dir / s / f"{source_split}.jsonl", max_hours) for s in sources
                     if (data_dir / s / f"{source_split}.jsonl").is_file()}
    timings, notes, results_extra = {}, [], {}
    scores: dict[str, dict[str, dict]] = {"in_set": {}, "loo": {}, "baselines": {}}
    lid_languages = None
    if not targets:
        notes.append("no target has a measured (learned) cell: nothing to evaluate")
        lid_ckpt = loo_cfg = phone_cfg = None
        baselines = ()

    if lid_ckpt is not None and lid_learned(lid_ckpt) is False:  # its scores would be no evidence
        notes.append(f"the in-set LID {lid_ckpt} did not learn (its results.json: learned false): "
                     + ("its rows are kept (keep_unlearned) and are no evidence" if keep_unlearned
                        else "no in-set scores"))
        lid_ckpt = None if not keep_unlearned else lid_ckpt
    if lid_ckpt is not None:
        t0 = time.perf_counter()
        table, matrix = lid_scores(lid_ckpt, speech, level, cache, device)
        lid_languages = matrix.columns
        write_score_matrix(matrix, out, "lid_scores")
        in_set = [t for t in targets if t in lid_languages]
        scores["in_set"]["lid_frame"] = {t: {s: v for s, v in table[t].items() if s != t} for t in in_set}
        timings["lid_in_set_s"] = round(time.perf_counter() - t0, 2)
        if not in_set:
            notes.append(f"no target is among the LID languages {lid_languages}: the in-set setting is empty")
    recognizers = {}
    if phone_cfg is not None:
        t0 = time.perf_counter()
        recognizers = train_loo_phone_recognizers(phone_cfg, sources, targets, jobs)
        missing = sorted(set(targets) - set(recognizers))
        if missing:
            notes.append(f"phonotactic: the recognizer without {', '.join(missing)} did not learn; no scores there"
                         + (" (nor from a leave-one-out LID started from it)" if lid_from_phones else ""))
        timings["phone_training_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        scores["loo"]["phonotactic"] = phonotactic_scores(recognizers, speech, source_speech, phone_cfg.order,
                                                          cache)
        timings["phonotactic_scoring_s"] = round(time.perf_counter() - t0, 2)
    if loo_cfg is not None:
        t0 = time.perf_counter()
        if lid_from_phones and not recognizers:
            raise ValueError("lid_from_phones needs the phone recognizers (a phone config)")
        folds = [t for t in targets if not lid_from_phones or t in recognizers]
        ckpts = train_loo_lids(loo_cfg, folds, init_from=recognizers if lid_from_phones else None, jobs=jobs)
        timings["loo_lid_training_s"] = round(time.perf_counter() - t0, 2)
        failed = [t for t, c in ckpts.items() if lid_learned(c) is False]
        if not keep_unlearned:
            ckpts = {t: c for t, c in ckpts.items() if t not in failed}
        if failed:
            notes.append(f"leave-one-out LID: the LID without {', '.join(failed)} did not learn (dev accuracy not "
                         "clearly above chance); " + ("its rows are kept (keep_unlearned) and are no evidence"
                                                      if keep_unlearned else "no LID scores for that target"))
        results_extra["loo_lid_unlearned"] = failed
        if ckpts:
            t0 = time.perf_counter()
            scores["loo"].update(loo_lid_predictors(ckpts, speech, source_speech, cache, device))
            timings["loo_lid_scoring_s"] = round(time.perf_counter() - t0, 2)
            write_json(out / "loo_scores.json", {"checkpoints": {t: str(p) for t, p in ckpts.items()},
                                                 "scores": scores["loo"]})
            plot_ranking_scores(scores["loo"]["lid_frame"], out / "loo_scores.png",
                                "Leave-one-out LID average posteriors (frame mean)")
        results_extra["loo_lid_test_accuracy"] = _loo_accuracy(ckpts)
    parts = [scores["loo"][p] for p in COMBINED if scores["loo"].get(p)]
    if len(parts) >= 2:
        scores["loo"]["combined"] = combine(parts)
    scores["baselines"] = _baselines(baselines, data_dir, targets, sources, timings, notes)
    if probe is not None and targets:
        scores["probe"] = _probe(probe, probe_cfg, targets, sources, timings, notes)

    info = {"targets": targets, "sources": sources, "split": split, "data_dir": str(data_dir),
            "lid_checkpoint": str(lid_ckpt), "lid_languages": lid_languages, "timings": timings, "notes": notes,
            **results_extra}
    return _finish(oracle, out, scores, info, k, n_perm)


def _finish(oracle: dict, out: Path, scores: dict, info: dict, k: int, n_perm: int) -> dict:
    """Evaluate the scores (setting -> predictor -> target -> source -> score) against the oracle; write the files."""
    errors, tied = oracle["errors"], {t: set(v) for t, v in oracle.get("tied", {}).items()}
    _add_transfer_prior(scores, errors, tied, k, info)
    evaluations = {setting: {name: _evaluate(sc, errors, tied, k, n_perm) for name, sc in preds.items() if sc}
                   for setting, preds in scores.items()}
    evaluations = {s: v for s, v in evaluations.items() if v}
    best_base = _best_baseline(evaluations.get("baselines", {}))
    for setting, preds in evaluations.items():
        if setting != "baselines" and best_base:
            for ev in preds.values():
                ev["vs_best_baseline"] = {"baseline": best_base,
                                          "regret": paired_comparison(ev, evaluations["baselines"][best_base]),
                                          "top1": paired_comparison(ev, evaluations["baselines"][best_base],
                                                                    "top1")}
    results = {"metric": oracle["metric"], "k": k, "n_permutations": n_perm, "oracle": _oracle_summary(oracle),
               "evaluations": evaluations, "best_baseline": best_base, **info}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "oracle.json", _jsonable(oracle))
    write_json(out / "ranking_eval.json", _jsonable(results))
    write_text(out / "ranking_eval.md", evaluation_markdown(results))
    for (setting, name), ev in _each(results):
        write_text(out / f"ranking_{setting}_{name}.csv", _rows_csv(ev, k, oracle["metric"]))
    return results


def _add_transfer_prior(scores: dict, errors: dict, tied: dict, k: int, info: dict) -> None:
    """The predictors that read the matrix's other targets (transfer_prior.py), both leave-one-out: the transfer
    record alone (baselines/transfer_prior) and every leave-one-out predictor blended with it ("loo+prior"; the
    weights fitted per target go to info["prior_weights"]). Recomputed whenever scores are evaluated (saved ones of
    these two kinds are replaced), since they depend on the oracle. With fewer than 3 measured targets there is
    nothing to fit on."""
    scores.pop("loo+prior", None)
    scores.get("baselines", {}).pop("transfer_prior", None)
    if len(errors) < 3:
        return
    alone = prior_scores(errors)
    if not alone:  # too few languages for a record without the target (e.g. 3: one source left per row)
        return
    scores.setdefault("baselines", {})["transfer_prior"] = alone
    blended, weights = {}, {}
    for name, sc in scores.get("loo", {}).items():
        fitted, w = with_prior(sc, errors, tied, k) if sc else ({}, {})
        if fitted:
            blended[name], weights[name] = fitted, w
    if blended:
        scores["loo+prior"] = blended
        info["prior_weights"] = weights
        order = ["in_set", "loo", "loo+prior", "baselines"]  # the blend's rows beside the ones it starts from
        ordered = sorted(scores.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        scores.clear()
        scores.update(ordered)


def _candidates(oracle: dict) -> tuple[list[str], list[str]]:
    """The oracle's targets and every language that is a target or a source in it."""
    targets = sorted(oracle["errors"])
    return targets, sorted({s for row in oracle["errors"].values() for s in row} | set(targets))


def _read_evaluation(path: str | Path) -> tuple[Path, dict]:
    """An earlier evaluation's ranking_eval.json (or the --out folder holding it): its path and contents."""
    path = Path(path)
    if path.is_dir():
        path = path / "ranking_eval.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ranking_eval.json of an earlier `xlingual rank-eval` there")
    data = read_json(path)
    if not isinstance(data.get("evaluations"), dict):
        raise ValueError(f"{path}: not a ranking_eval.json (no 'evaluations'); give the file an earlier "
                         "`xlingual rank-eval --out` folder holds")
    return path, data


def saved_scores(evaluation: dict) -> dict:
    """The predictor scores an earlier evaluation (its ranking_eval.json) recorded: setting -> predictor -> target
    -> source -> score (each target row's "predicted" list, rounded to 6 digits as written)."""
    return {setting: {name: {row["target"]: dict(row["predicted"]) for row in pred["targets"]}
                      for name, pred in preds.items()} for setting, preds in evaluation["evaluations"].items()}


def _rescore(oracle: dict, out_dir: str | Path, saved: str | Path, k: int, n_perm: int,
             probe: str | Path | None = None, probe_cfg: ProbeConfig | None = None) -> dict:
    """Re-score an earlier evaluation's predictor scores against `oracle` (run_rank_eval's `saved`), with the
    probe's scores added when `probe` names a matrix folder."""
    path, before = _read_evaluation(saved)
    scores = saved_scores(before)
    targets, sources = _candidates(oracle)
    timings, probe_notes = {}, []
    if probe is not None and targets:
        scores["probe"] = _probe(probe, probe_cfg, targets, sources, timings, probe_notes)
    missing = sorted(t for t in targets if not any(t in sc for preds in scores.values() for sc in preds.values()))
    notes = [f"predictor scores reused from {path} (no model or baseline was run again); its notes: "
             + ("; ".join(before.get("notes", [])) or "none")]
    if missing:
        notes.append(f"the saved scores have no row for {', '.join(missing)}: those targets count as skipped")
    keep = ("split", "data_dir", "lid_checkpoint", "lid_languages", "loo_lid_unlearned", "loo_lid_test_accuracy")
    info = {"targets": targets, "sources": sources, **{key: before[key] for key in keep if key in before},
            "timings": timings, "notes": notes + probe_notes, "scores_from": str(path)}
    return _finish(oracle, Path(out_dir), scores, info, k, n_perm)


def _probe(matrix_dir: str | Path, cfg: ProbeConfig | None, targets: list[str], sources: list[str], timings: dict,
           notes: list) -> dict:
    """{"linear_ctc": target -> source -> score} of the probe on `matrix_dir`'s cells (timed, noted)."""
    t0 = time.perf_counter()
    scores = probe_matrix(matrix_dir, targets, sources, cfg or ProbeConfig())
    timings["probe_s"] = round(time.perf_counter() - t0, 2)
    notes.append(f"probe: each source's encoder from {matrix_dir} (its checkpoints), a linear CTC layer trained on "
                 f"each target's adaptation data there, scored by its lowest dev loss (probe.py)")
    return {"linear_ctc": scores}


def _loo_accuracy(ckpts: dict[str, Path]) -> dict[str, float]:
    """Each leave-one-out LID's test accuracy on its own languages (held-out voices), from its results.json."""
    out = {}
    for t, ckpt in ckpts.items():
        res = Path(ckpt).parent / "results.json"
        if res.is_file() and "test" in read_json(res):
            out[t] = read_json(res)["test"]["accuracy"]
    return out


def _speech(path: Path, max_hours: float | None):
    utts = read_manifest(path, require_text=False)
    return subset_hours(utts, max_hours) if max_hours is not None else utts


def _evaluate(scores: dict, errors: dict, tied: dict, k: int, n_perm: int) -> dict:
    ev = evaluate_ranking(scores, errors, k, tied)
    ev["permutation"] = permutation_test(scores, errors, k, tied, n=n_perm)
    return ev


def _best_baseline(baselines: dict) -> str | None:
    """The baseline with the lowest mean regret (chosen after the fact: a conservative comparison)."""
    done = {n: ev for n, ev in baselines.items() if ev["summary"]["n_targets"]}
    return min(done, key=lambda n: (done[n]["summary"]["mean_regret"], n)) if done else None


def _baselines(kinds, data_dir: Path, targets: list[str], sources: list[str], timings: dict, notes: list) -> dict:
    langs = sorted(set(targets) | set(sources))
    base: dict[str, dict] = {}
    if "char" in kinds or "ipa" in kinds:
        texts = {lang: [u.text for u in read_manifest(data_dir / lang / "train.jsonl")] for lang in langs}
        for kind in ("char", "ipa"):
            if kind in kinds:
                t0 = time.perf_counter()
                try:
                    for metric in INVENTORY_METRICS:
                        base[f"{kind}_{metric}"] = inventory_scores(texts, kind, metric, targets)
                except (ValueError, RuntimeError) as e:  # e.g. a language eSpeak NG cannot phonemize
                    notes.append(f"{kind} inventory skipped: {e}")
                timings[f"{kind}_inventory_s"] = round(time.perf_counter() - t0, 2)
    if "typology" in kinds:
        if typology_available():
            for fs in TYPOLOGY_SETS:
                try:
                    base[f"uriel_{fs}"] = typology_scores(langs, fs, targets)
                except ValueError as e:
                    notes.append(f"typology {fs}: {e}")
        else:
            notes.append("typology skipped: the lang2vec package (URIEL data) is not installed")
    return base


def _oracle_summary(oracle: dict) -> dict:
    return {"metric": oracle["metric"], "tied": oracle.get("tied", {}),
            "unique_best": sorted(t for t, v in oracle.get("tied", {}).items() if len(v) == 1),
            "unlearned": oracle.get("unlearned", []), "seed_sd": oracle.get("seed_sd", {}),
            "seed_floor": oracle.get("seed_floor", "baseline"), "adapt_noise": _brief(oracle.get("adapt_noise")),
            "pools": oracle.get("pools", {}), "seeds_per_cell": oracle.get("seeds_per_cell")}


def _brief(adapt_noise: dict | None) -> dict | None:
    return None if not adapt_noise else {k: adapt_noise[k] for k in ("sd", "cells", "runs")}


# --------------------------------------------------------------------------------------------------------------
# Reports


def _floor_words(o: dict) -> str:
    floor, a, seeds = o.get("seed_floor", "baseline"), o.get("adapt_noise"), o.get("seeds_per_cell")
    if floor == "none":
        return "; no seed floor: a cell's own training noise is not counted"
    means = ""
    if seeds and seeds[1] > 1:  # cells averaged over seeds: the floor of a difference of two means is smaller
        means = (f"; a cell is the mean of its {seeds[0]}-{seeds[1]} learned seeds" if seeds[0] < seeds[1]
                 else f"; a cell is the mean of {seeds[0]} seeds") + ", the floor 2 sd sqrt(1/n_a + 1/n_b)"
    if floor == "adapt":
        return (f", and the seed spread of adaptation runs, sd {a['sd']:.2f} pooled over {a['cells']} cells at "
                f"2+ seeds ({a['runs']} runs){means}")
    return ", and the from-scratch baselines' seed spread" + means


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, list):
        return "/".join(map(str, v))
    return str(v)


def _p(ev: dict, name: str) -> str:
    p = ev.get("permutation", {}).get(name, {}).get("p")
    return "" if p is None else f"{p:.3g}"


def evaluation_markdown(results: dict) -> str:
    """Summary table (setting x predictor) with p-values and random expectations, then per-target tables."""
    m, k = results["metric"].upper(), results["k"]
    o = results["oracle"]
    n_unique = len(o["unique_best"])
    lines = [f"## Source ranking against the {m} matrix", "",
             f"Oracle: test {m} (%) of each target adapted from each source (the target itself excluded). A source "
             f"within noise of the target's best (paired bootstrap over its test utterances, 95%"
             + _floor_words(o)
             + f") counts as equally good in every metric. {n_unique} of {len(results['targets'])} "
             f"targets have one best source beyond noise ({', '.join(o['unique_best']) or 'none'})."
             + (f" Cells left out because their run did not learn: {len(o['unlearned'])}." if o["unlearned"] else ""),
             "",
             f"top-1: targets whose chosen source is (tied) best, of all targets and of those with a unique best; "
             f"random: its expected count. Regret in {m} points. p: share of {results['n_permutations']} random "
             f"rankings (scores shuffled within each target) at least as good. vs best baseline: mean regret "
             f"difference (negative = better) and its one-sided sign-flip p over the same targets. Settings: "
             f"`in_set` (LID trained on the target too, its own column excluded), `loo` (built without the target: "
             f"the real use), `loo+prior` (each `loo` predictor blended with the sources' transfer record on the "
             f"matrix's other targets, its weight fitted on those targets: transfer_prior.py), `baselines` (no "
             f"speech; `transfer_prior`: the transfer record alone), `probe` (a linear CTC layer on each source's "
             f"frozen encoder, trained on the target's transcribed adaptation data: probe.py).", "",
             f"| setting | predictor | targets | top-1 | top-1, unique best | random top-1 | p | mean regret | "
             f"random regret | p | Spearman | p | NDCG@{k} | p | vs best baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (setting, name), ev in _each(results):
        s = ev["summary"]
        vs = ev.get("vs_best_baseline")
        vs_txt = (f"{vs['regret']['mean_difference']:+.2f} (p {vs['regret']['p']:.3g}) vs {vs['baseline']}"
                  if vs else "")
        lines.append(f"| {setting} | {name} | {s['n_targets']} | {_fmt(s['top1_hits'], 1)} of {s['n_targets']} | "
                     f"{_fmt(s['top1_hits_unique_best'], 1)} of {s['n_unique_best']} | "
                     f"{_fmt(s['random_top1_hits'], 2)} | {_p(ev, 'top1_hits')} | {_fmt(s['mean_regret'], 2)} | "
                     f"{_fmt(s['random_regret'], 2)} | {_p(ev, 'mean_regret')} | {_fmt(s['spearman'])} | "
                     f"{_p(ev, 'spearman')} | {_fmt(s[f'ndcg@{k}'])} | {_p(ev, f'ndcg@{k}')} | {vs_txt} |")
    lines += _weight_lines(results.get("prior_weights"))
    lines += _pool_lines(o.get("pools", {}), m)
    for (setting, name), ev in _each(results):
        lines += ["", f"### {setting} / {name}", "",
                  f"| target | predicted order (score) | chosen ({m}) | best ({m}) | tied with best | regret |",
                  "|---|---|---|---|---|---|"]
        for r in ev["targets"]:
            order = ", ".join(f"{s} ({v:.3g})" for s, v in r["predicted"])
            ties = o["tied"].get(r["target"], [])
            lines.append(f"| {r['target']} | {order} | {_fmt(r['chosen'])} ({r['chosen_wer']:.1f}) | "
                         f"{_fmt(r['best'])} ({r['best_wer']:.1f}) | {'/'.join(ties) or '-'} | "
                         f"{r['regret']:.2f} |")
        if ev["skipped"]:
            lines.append(f"\nNot evaluated (no scores, or fewer than 2 candidate sources): {', '.join(ev['skipped'])}")
    if results["notes"]:
        lines += ["", "Notes: " + "; ".join(results["notes"])]
    return "\n".join(lines) + "\n"


def _weight_lines(weights: dict | None) -> list[str]:
    """The transfer prior's weights fitted for each held-out target (markdown), if any predictor was blended."""
    if not weights:
        return []
    parts = [f"{name} {min(w.values()):.1f}-{max(w.values()):.1f} (median {statistics.median(w.values()):.2f})"
             for name, w in weights.items() if w]
    return ["", "`loo+prior`: the weight of the transfer record (0 = the similarity alone, 1 = the record alone), "
            "fitted on the other targets for each held-out one: " + "; ".join(parts) + "."]


def _pool_lines(pools: dict, m: str) -> list[str]:
    """The pooled sources against each target's best single source (markdown), if the matrix has pools."""
    if not pools:
        return []
    names = sorted({p for row in pools.values() for p in row})
    lines = ["", "### Pooled sources vs the best single source", ""]
    for p in names:
        rows = {t: row[p] for t, row in sorted(pools.items()) if p in row}
        count = {v: sum(r["verdict"] == v for r in rows.values()) for v in ("better", "tie", "worse")}
        lines += [f"`{p}` (the target's own language left out) against each target's best single source, same "
                  f"noise rule: better beyond noise for {count['better']}, tied for {count['tie']}, worse for "
                  f"{count['worse']} of {len(rows)} targets. The best single source is picked after the fact, which "
                  f"favours it.", "",
                  f"| target | {p} ({m}) | best single ({m}) | pool - best [95% bootstrap] | verdict |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t} | {r['error']:.1f} | {r['best_single']} ({r['best_single_error']:.1f}) | "
                  f"{r['difference']:+.1f} [{r['interval'][0]:+.1f}, {r['interval'][1]:+.1f}] | {r['verdict']} |"
                  for t, r in rows.items()]
        lines.append("")
    return lines


def _each(results: dict):
    for setting, preds in results["evaluations"].items():
        for name, ev in preds.items():
            yield (setting, name), ev


def _rows_csv(ev: dict, k: int, metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["target", "n_candidates", "chosen", "chosen_wer", "best", "best_wer", "top1", "regret", "spearman",
            "kendall", f"ndcg@{k}", "random_regret", "unique_best", "predicted", "oracle"]
    w.writerow([c.replace("wer", metric) for c in cols])
    for r in ev["targets"]:
        w.writerow([_fmt(r[c]) if c not in ("predicted", "oracle") else
                    " ".join(f"{s}:{v}" for s, v in r[c]) for c in cols])
    return buf.getvalue()


def _jsonable(obj):
    """NaN -> None (strict JSON); sets -> sorted lists."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in (sorted(obj) if isinstance(obj, set) else obj)]
    return obj


def plot_ranking_scores(scores: dict[str, dict[str, float]], path: str | Path, title: str) -> None:
    """Heatmap of a predictor's target x source scores (e.g. the LOO LID scores), rows and columns in one order
    so that the (empty) own-language cells lie on the diagonal."""
    langs = sorted(set(scores) | {s for r in scores.values() for s in r})
    plot_heatmap([[scores.get(r, {}).get(c, float("nan")) for c in langs] for r in langs if r in scores],
                 [r for r in langs if r in scores], langs, path, title, "source", "target")


def read_oracle(path: str | Path) -> dict:
    return read_json(path)
