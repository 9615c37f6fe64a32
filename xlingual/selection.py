"""LID for data selection (the reference's closing idea), measured end to end.

From a pool of several source languages, pick pre-training utterances by the target's LID posterior, pre-train on
them, adapt to the target, and compare with the best single source and with the whole pool sampled at random, all
at the same amount of pre-training audio. Every run is the same code as a matrix run (asr, transfer, score).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .config import CorpusConfig, MatrixConfig
from .corpus import Utterance, read_manifest, subset_hours, total_hours, write_manifest
from .fileio import exclusive_lock, write_json, write_text
from .lid import average_scores, load_lid, posteriors_for
from .ranking import majority_language, rank_query
from .runs import execute
from .runspec import RunSpec, budget, load_language, prepare_corpus


def _hours_by_language(utts: list[Utterance]) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in utts:
        out[u.language] = out.get(u.language, 0.0) + u.duration / 3600.0
    return {k: round(v, 3) for k, v in sorted(out.items())}


def run_selection_experiment(lid_ckpt: str | Path, target: str, pool_languages: list[str], hours: float,
                             cfg: MatrixConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Pre-train on `hours` of (a) LID-selected pool speech, (b) a random sample of the pool, (c) the single pool
    language the LID ranks first; adapt each to `target` at cfg.target_hours with cfg.adapt; score the target test.

    Each pre-training set is written as the train manifest of a corpus folder of its own (out_dir/corpus/<name>/,
    with the pool's dev speech as dev), so that every run is an ordinary run of the run layer.
    Returns and writes out_dir/selection.json and selection.md (one row per condition).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out):
        pool_langs = [lang for lang in pool_languages if lang != target]
        prepare_corpus(cfg.corpus, pool_langs + [target], progress)
        data = {lang: load_language(cfg.corpus, lang) for lang in pool_langs + [target]}
        pool = [u for lang in pool_langs for u in data[lang]["train"]]
        pool_dev = [u for lang in pool_langs for u in data[lang]["dev"]]
        seed = cfg.corpus.seed

        ranking = rank_query(lid_ckpt, data[target]["dev"], language=target).ranking
        best_single = next(lang for lang, _ in ranking if lang in pool_langs)
        select_by_lid(lid_ckpt, pool, hours, out / "lid_selected.jsonl", target_language=target,
                      cache_dir=Path(cfg.corpus.dir) / ".features")
        conditions = {
            "lid_selected": read_manifest(out / "lid_selected.jsonl"),
            "pool_random": subset_hours(pool, hours, seed),
            f"best_single_{best_single}": budget(data[best_single]["train"], hours, seed),
        }
        corpus = CorpusConfig(kind="manifests", dir=str(out / "corpus"))
        rows = []
        for name, train in conditions.items():
            langs = {u.language for u in train}
            for split, utts in (("train", train), ("dev", [u for u in pool_dev if u.language in langs]),
                                ("test", data[target]["test"])):
                write_manifest(out / "corpus" / name / f"{split}.jsonl", utts)
            source = RunSpec(kind="scratch", languages=[name], corpus=corpus, features=cfg.features,
                             units=cfg.units, model=cfg.model, train=cfg.train, decode=cfg.decode)
            execute(source, out / name / "pretrain", splits=())
            adapted = RunSpec(kind="adapt", languages=[target], hours=cfg.target_hours, corpus=cfg.corpus,
                              features=cfg.features, units=cfg.units, train=cfg.adapt.train, adapt=cfg.adapt,
                              source=str(out / name / "pretrain" / "best.pt"), decode=cfg.decode)
            res = execute(adapted, out / name / "adapt", splits=("test",))
            rows.append({"condition": name, "pretrain_hours": round(total_hours(train), 3),
                         "hours_by_language": _hours_by_language(train), "test_wer": round(res["test"]["wer"], 2),
                         "test_cer": round(res["test"]["cer"], 2), "learned": res["learned"]})
        result = {"target": target, "pool": pool_langs, "hours": hours, "target_hours": cfg.target_hours,
                  "lid_checkpoint": str(lid_ckpt), "lid_ranking": [[lang, round(s, 4)] for lang, s in ranking],
                  "rows": rows}
        write_json(out / "selection.json", result)
        lines = [f"Pre-training on {hours:g} h from the pool {', '.join(pool_langs)}, then adapting to {target} "
                 f"({cfg.target_hours:g} h); test WER/CER (%) of {target}.\n",
                 "| pre-training data | hours by language | test WER | test CER | learned |", "|---|---|---|---|---|"]
        for r in rows:
            mix = ", ".join(f"{k} {v:g}" for k, v in r["hours_by_language"].items())
            lines.append(f"| {r['condition']} | {mix} | {r['test_wer']:.1f} | {r['test_cer']:.1f} | "
                         f"{'yes' if r['learned'] else 'NO'} |")
        write_text(out / "selection.md", "\n".join(lines) + "\n")
        return result


# --------------------------------------------------------------------------------------------------------------
# Data selection by LID posterior (the reference's "LID for data selection")


def select_utterances(utts: list[Utterance], scores: dict[str, float], hours: float) -> list[Utterance]:
    """The highest-scoring utterances whose total duration stays within `hours`, best first.

    Greedy: utterances in descending score (ties by id); one that would overflow the budget is skipped and
    shorter, lower-scoring ones may still fill the rest.
    """
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    missing = [u.id for u in utts if u.id not in scores]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no score, e.g. {missing[0]!r}")
    budget, taken, chosen = hours * 3600.0, 0.0, []
    for u in sorted(utts, key=lambda u: (-scores[u.id], u.id)):
        if taken + u.duration <= budget + 1e-9:
            chosen.append(u)
            taken += u.duration
    return chosen


def select_by_lid(lid_ckpt: str | Path, pool: list[Utterance], hours: float, out_manifest: str | Path,
                  target: list[Utterance] | None = None, target_language: str | None = None,
                  criterion: str = "auto", level: str = "frame", cache_dir: str | Path | None = None,
                  device: str | None = None) -> dict:
    """Select `hours` of pool utterances (several source languages) for pre-training towards a target.

    criterion "target": score = the utterance's mean posterior of the target language (the target is one of the
    LID's languages); "profile": score = dot product of the utterance's mean posterior with the target speech's
    average posterior over the LID languages (a new target: pool speech that the LID hears the way it hears the
    target); "auto": "target" when the LID knows target_language, else "profile".
    Writes out_manifest and <out_manifest stem>.selection.json (hours per source language, criterion, profile).
    """
    model, meta = load_lid(lid_ckpt)
    langs = meta["languages"]
    lang = target_language or (majority_language(target) if target else None)
    if criterion == "auto":
        criterion = "target" if lang in langs else "profile"
    if criterion not in ("target", "profile"):
        raise ValueError(f"criterion must be 'auto', 'target' or 'profile', not {criterion!r}")
    post = posteriors_for(model, meta, pool, cache_dir, device).pooled
    profile = None
    if criterion == "target":
        if lang not in langs:
            raise ValueError(f"criterion 'target' needs a target language among the LID's {langs}, got {lang!r}")
        j = langs.index(lang)
        scores = {i: float(p[j]) for i, p in post.items()}
    else:
        if not target:
            raise ValueError("criterion 'profile' needs the target's utterances")
        profile = average_scores(posteriors_for(model, meta, target, cache_dir, device))[level]
        scores = {i: float(p @ profile) for i, p in post.items()}
    chosen = select_utterances(pool, scores, hours)
    out_manifest = Path(out_manifest)
    write_manifest(out_manifest, chosen)
    by_lang = Counter()
    for u in chosen:
        by_lang[u.language] += u.duration / 3600.0
    summary = {"criterion": criterion, "target_language": lang, "budget_hours": hours,
               "selected_hours": round(total_hours(chosen), 4), "selected_utterances": len(chosen),
               "pool_utterances": len(pool), "hours_by_language": {k: round(v, 4) for k, v in by_lang.items()},
               "profile": dict(zip(langs, (round(float(x), 6) for x in profile))) if profile is not None else None,
               "min_selected_score": min((scores[u.id] for u in chosen), default=None),
               "manifest": str(out_manifest)}
    write_json(out_manifest.with_name(out_manifest.stem + ".selection.json"), summary)
    return summary
