"""`xlingual lid train|score|select`, `xlingual rank`, `xlingual rank-eval`: the language-ID and source-ranking
verbs of the CLI (xlingual/cli.py), thin parsing over lid, ranking and rank_eval."""

from __future__ import annotations

import json
import sys


def _lid_train(args) -> None:
    from .config import LIDConfig, load_config
    from .fileio import read_json
    from .recipe import train_lid

    from .config import PhonotacticConfig

    phones = load_config(PhonotacticConfig, args.phones, args.phone_set) if args.phones else None
    best = train_lid(load_config(LIDConfig, args.config, args.set), phones)
    res = read_json(best.parent / "results.json")
    test = res["test"]
    print(json.dumps({"checkpoint": str(best), "learned": res["learned"], "dev_accuracy": res["dev"]["accuracy"],
                      "test_accuracy (held-out voices)": test["accuracy"],
                      "test_posterior_accuracy": test["posterior_accuracy"],
                      "test_acoustic_accuracy": test.get("acoustic_accuracy"),
                      "test_phonotactic_accuracy": test.get("phonotactic_accuracy"),
                      "test_per_language_accuracy": test["per_language_accuracy"],
                      "test confusion (rows: true, columns: predicted)": test["confusion"]}, indent=2))


def _manifests_by_language(paths: list[str], require_text: bool = False) -> dict:
    from .corpus import read_manifest

    groups: dict = {}
    for path in paths:
        for u in read_manifest(path, require_text=require_text):
            groups.setdefault(u.language, []).append(u)
    return groups


def _lid_score(args) -> None:
    from .lid_scores import matrix_markdown, score_matrix, write_score_matrix

    scores = score_matrix(args.lid, _manifests_by_language(args.manifests), args.cache_dir, args.device,
                          progress=True)
    paths = write_score_matrix(scores, args.out)
    print(matrix_markdown(scores, args.level), end="")
    print(f"written: {', '.join(str(p) for p in paths.values())}", file=sys.stderr)


def _lid_select(args) -> None:
    from .ranking import load_target
    from .selection import select_by_lid

    import tempfile

    pool = [u for utts in _manifests_by_language(args.pool, require_text=True).values() for u in utts]
    with tempfile.TemporaryDirectory(prefix="xlingual-select-") as tmp:  # an audio-folder target's manifest
        target = load_target(args.target, args.language, tmp)[0] if args.target else None
        summary = select_by_lid(args.lid, pool, args.hours, args.out, target=target,
                                target_language=args.language, criterion=args.criterion, level=args.level,
                                cache_dir=args.cache_dir, device=args.device)
    print(json.dumps(summary, indent=2, ensure_ascii=False))


def _rank(args) -> None:
    from .ranking import rank_query

    res = rank_query(args.lid, args.target, exclude_self=not args.keep_self, language=args.language,
                     level=args.level, max_hours=args.max_hours, cache_dir=args.cache_dir, device=args.device,
                     oracle=args.oracle, progress=True)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, ensure_ascii=False))
        return
    what = {"frame": "average LID posterior over its frames", "utterance": "mean of its utterances' average LID "
            "posteriors", "pooled": "mean utterance-level LID posterior"}[res.level]
    print(f"sources for {res.target} (language {res.language or 'unknown'}; {res.n_utterances} utterances, "
          f"{res.hours * 60:.1f} min; {res.seconds:.1f} s)")
    print(f"score: the {what}; higher = predicted better pre-training source")
    if res.record:
        print(f"record: how the source served the other targets of {args.oracle} (mean normalized rank, 1 = their "
              "best source); it orders sources well, but does not pick the best among relatives")
    for i, (lang, score) in enumerate(res.ranking, 1):
        rec = res.record.get(lang) if res.record else None
        print(f"{i:3d}. {lang:<8s} {score:.4f}" + (f"   record {rec:.2f}" if rec is not None else ""))
    if res.excluded:
        print(f"(excluded: {', '.join(res.excluded)}, the target's own language; the scores no longer sum to 1)")
    if len(res.ranking) >= 2:
        lo, hi = res.margin_interval
        print(f"margin {res.ranking[0][0]} - {res.ranking[1][0]}: {res.margin:.4f} (95% over resampled utterances "
              f"{lo:.4f} .. {hi:.4f}); the first source stays first in {100 * res.stability:.0f}% of resamples"
              + ("" if lo > 0 else ": within noise, a tie"))
    if res.measured:
        m = res.measured
        right = res.ranking and res.ranking[0][0] in m["tied"]
        print(f"measured ({m['metric'].upper()} matrix, {m['source']}): best source {m['best']}"
              + (f" (within noise: {', '.join(m['tied'])})" if len(m["tied"]) > 1 else "")
              + f"; this query's first choice is {'right' if right else 'not the measured best'}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _rank_eval(args) -> None:
    from pathlib import Path

    from .config import LIDConfig, PhonotacticConfig, load_config
    from .lid import load_lid
    from .probe import ProbeConfig
    from .rank_eval import csv_oracle, matrix_oracle, run_rank_eval

    if bool(args.matrix) == bool(args.wer_matrix):
        raise ValueError("give the measured matrix as --matrix <matrix folder> (with its noise) or --wer-matrix "
                         "<CSV> (values only), one of them")
    oracle = (matrix_oracle(args.matrix, args.metric, n_boot=args.n_boot, seed_floor=args.seed_floor,
                            noise_matrix=args.noise_matrix) if args.matrix else csv_oracle(args.wer_matrix))
    if args.scores_from:  # re-score saved predictions: no model, data or baseline is needed
        data_dir = args.data
    elif not (args.data or args.lid):
        raise ValueError("--data <corpus folder> is needed when no --lid gives the corpus it was trained on")
    else:
        data_dir = args.data or load_lid(args.lid)[1]["config"]["corpus"]["dir"]
    loo = load_config(LIDConfig, args.loo_config, args.set) if args.loo_config else None
    phones = load_config(PhonotacticConfig, args.phone_config, args.phone_set) if args.phone_config else None
    kinds = args.baselines if args.baselines is not None else ("" if args.scores_from else "char,ipa,typology")
    baselines = tuple(b for b in kinds.split(",") if b and b != "none")
    run_rank_eval(oracle, args.out, data_dir, split=args.split, lid_ckpt=args.lid, loo_cfg=loo, phone_cfg=phones,
                  baselines=baselines, k=args.k, n_perm=args.n_perm, level=args.level, max_hours=args.max_hours,
                  cache_dir=args.cache_dir, device=args.device, jobs=args.jobs, lid_from_phones=args.lid_from_phones,
                  keep_unlearned=args.keep_unlearned, saved=args.scores_from, probe=args.probe,
                  probe_cfg=ProbeConfig(steps=args.probe_steps) if args.probe_steps else ProbeConfig())
    print((Path(args.out) / "ranking_eval.md").read_text(encoding="utf-8"), end="")


def add_lid_parsers(sub) -> None:
    """`xlingual lid train|score|select`, `xlingual rank`, `xlingual rank-eval`."""
    def common(q, level: bool = True) -> None:
        q.add_argument("--device", default="cpu", help="cpu, cuda or auto (inference)")
        q.add_argument("--cache-dir", default=None, help="feature cache folder (default: a temporary one)")
        if level:
            q.add_argument("--level", choices=["frame", "utterance", "pooled"], default="frame",
                           help="average over all frames (the reference), over per-utterance means, or the "
                           "utterance head's posteriors")

    lid = sub.add_parser("lid", help="language ID over source languages: train, score matrix, data selection")
    lsub = lid.add_subparsers(dest="lid_verb", required=True, metavar="<lid verb>")
    t = lsub.add_parser("train", help="train an LID model (dev accuracy + confusion matrix in its out_dir)")
    t.add_argument("config", nargs="?", help="YAML delta over xlingual.config.LIDConfig")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    t.add_argument("--phones", help="PhonotacticConfig YAML: first a multilingual phone recognizer on the LID's "
                   "languages; the LID starts from its encoder and adds a phonotactic (PRLM) back-end")
    t.add_argument("--phone-set", action="append", default=[], metavar="KEY=VALUE", help="override for --phones")
    t.set_defaults(func=_lid_train)
    s = lsub.add_parser("score", help="LID score matrix (rows: input language, columns: LID output language)")
    s.add_argument("lid", help="LID checkpoint (best.pt)")
    s.add_argument("manifests", nargs="+", help="manifests; rows are their utterances' languages")
    s.add_argument("--out", required=True, help="folder for lid_scores.{json,md,png} and *_frame/utterance.csv")
    common(s)
    sel = lsub.add_parser("select", help="select pool utterances by the target's LID posterior, up to --hours")
    sel.add_argument("lid", help="LID checkpoint (best.pt)")
    sel.add_argument("--pool", nargs="+", required=True, help="source-language manifests to select from")
    sel.add_argument("--hours", type=float, required=True, help="hours of audio to select")
    sel.add_argument("--out", required=True, help="output manifest (.jsonl); a .selection.json summary beside it")
    sel.add_argument("--target", help="target manifest or audio folder (needed for --criterion profile)")
    sel.add_argument("--language", help="the target's language code")
    sel.add_argument("--criterion", choices=["auto", "target", "profile"], default="auto")
    common(sel)
    sel.set_defaults(func=_lid_select)
    s.set_defaults(func=_lid_score)

    r = sub.add_parser("rank", help="rank pre-training sources for a new language by LID (seconds, no ASR)")
    r.add_argument("--lid", required=True, help="LID checkpoint (best.pt)")
    r.add_argument("--target", required=True, help="target manifest (.jsonl, text optional) or audio folder")
    r.add_argument("--language", help="the target's language code (default: the manifest's)")
    r.add_argument("--keep-self", action="store_true", help="keep the target's own language in the ranking")
    r.add_argument("--max-hours", type=float, default=None, help="score at most this much target audio")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--oracle", help="an oracle.json of `xlingual rank-eval`: where it measured the target's "
                   "language, its answer is shown beside the prediction")
    common(r)
    r.set_defaults(func=_rank)

    e = sub.add_parser("rank-eval", help="evaluate source predictors (LID, embeddings, phonotactics, baselines) "
                       "against a measured matrix, with noise, p-values and random expectations")
    e.add_argument("--matrix", help="a matrix folder (xlingual matrix): its error rates, and per-utterance errors "
                   "for the noise (which sources tie with each target's best)")
    e.add_argument("--wer-matrix", help="or a CSV: rows 'adapt to' target, columns 'pretrain on' source (no noise)")
    e.add_argument("--metric", choices=["cer", "wer"], default="cer", help="the oracle with --matrix (default CER: "
                   "at small budgets WER saturates)")
    e.add_argument("--out", required=True, help="folder for ranking_eval.{json,md}, per-predictor CSVs, scores")
    e.add_argument("--lid", help="an LID checkpoint trained on the sources (the in-set setting)")
    e.add_argument("--data", help="corpus folder with <lang>/<split>.jsonl (default: the --lid's training corpus)")
    e.add_argument("--split", default="test", help="target speech split scored by the predictors")
    e.add_argument("--loo-config", help="LIDConfig YAML: train leave-one-out LIDs (cached) -> LID posterior, pooled "
                   "posterior and embedding predictors")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for --loo-config")
    e.add_argument("--phone-config", help="PhonotacticConfig YAML: leave-one-out phone recognizers (cached) -> the "
                   "phonotactic predictor")
    e.add_argument("--phone-set", action="append", default=[], metavar="KEY=VALUE", help="override for "
                   "--phone-config")
    e.add_argument("--lid-from-phones", action="store_true", help="start each leave-one-out LID from the encoder "
                   "of that target's phone recognizer (needs --phone-config)")
    e.add_argument("--keep-unlearned", action="store_true", help="also score with LIDs that did not learn (dev "
                   "accuracy not clearly above chance); their rows are then no evidence, and the notes say so: "
                   "for checking a pipeline on tiny data")
    e.add_argument("--jobs", type=int, default=1, help="leave-one-out models trained at once (a process each; set "
                   "their train.threads so that jobs x threads fits the cores)")
    e.add_argument("--baselines", default=None, help="comma list of char, ipa, typology; or none (default: all "
                   "three, none with --scores-from)")
    e.add_argument("--scores-from", default=None, metavar="RANKING_EVAL", help="re-score the predictor scores of an "
                   "earlier evaluation (its --out folder or ranking_eval.json) against --matrix, e.g. after more "
                   "runs or with another --seed-floor, without its models or data (no --lid, --loo-config, "
                   "--phone-config or --baselines then)")
    e.add_argument("--probe", default=None, metavar="MATRIX_DIR", help="also rank by a linear CTC probe (probe.py): "
                   "each source's encoder, from that matrix folder's source checkpoints, on the target's adaptation "
                   "data there (transcribed; a model per source needed). Works with --scores-from too")
    e.add_argument("--probe-steps", type=int, default=None,
                   help="the probe's Adam steps (default: probe.ProbeConfig's, 150)")
    e.add_argument("--k", type=int, default=3, help="NDCG cut-off")
    e.add_argument("--n-perm", type=int, default=10000, help="random rankings for the permutation p-values")
    e.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the noise of the oracle")
    e.add_argument("--seed-floor", choices=("baseline", "adapt", "none"), default="baseline", help="ties with "
                   "--matrix: within the test utterances' bootstrap or a training-noise floor, the seed spread of "
                   "the from-scratch baselines (baseline, default) or of adaptation runs (adapt: needs "
                   "--noise-matrix or a matrix with several seeds); none: the bootstrap alone")
    e.add_argument("--noise-matrix", default=None, help="a matrix folder of some of --matrix's pairs at other seeds "
                   "(sources retrained too): their spread is the adapt seed floor")
    e.add_argument("--max-hours", type=float, default=None, help="target audio scored per language")
    common(e)
    e.set_defaults(func=_rank_eval)
