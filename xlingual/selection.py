"""LID for data selection (the reference's closing idea), measured end to end.

From a pool of several source languages, pick pre-training utterances by the target's LID posterior, pre-train on
them, adapt to the target, and compare with the best single source and with the whole pool sampled at random, all
at the same amount of pre-training audio. Every run is the same code as a matrix run (asr, transfer, score).
"""

from __future__ import annotations

from pathlib import Path

from .asr import budget, decode_and_score, feature_cache, load_language, load_model, train_from_scratch
from .config import MatrixConfig
from .corpus import Utterance, read_manifest, subset_hours, total_hours
from .features import compute_features
from .fileio import exclusive_lock, write_json, write_text
from .ranking import rank_query, select_by_lid
from .transfer import adapt


def _hours_by_language(utts: list[Utterance]) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in utts:
        out[u.language] = out.get(u.language, 0.0) + u.duration / 3600.0
    return {k: round(v, 3) for k, v in sorted(out.items())}


def run_selection_experiment(lid_ckpt: str | Path, target: str, pool_languages: list[str], hours: float,
                             cfg: MatrixConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Pre-train on `hours` of (a) LID-selected pool speech, (b) a random sample of the pool, (c) the single pool
    language the LID ranks first; adapt each to `target` at cfg.target_hours with cfg.adapt; score the target test.

    Returns and writes out_dir/selection.json and selection.md (one row per condition).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out):
        pool_langs = [lang for lang in pool_languages if lang != target]
        data = {lang: load_language(cfg.corpus, lang, progress) for lang in pool_langs + [target]}
        pool = [u for lang in pool_langs for u in data[lang]["train"]]
        pool_dev = [u for lang in pool_langs for u in data[lang]["dev"]]
        seed = cfg.corpus.seed

        ranking = rank_query(lid_ckpt, data[target]["dev"], language=target).ranking
        best_single = next(lang for lang, _ in ranking if lang in pool_langs)
        select_by_lid(lid_ckpt, pool, hours, out / "lid_selected.jsonl", target_language=target,
                      cache_dir=feature_cache(cfg.corpus))
        conditions = {
            "lid_selected": read_manifest(out / "lid_selected.jsonl"),
            "pool_random": subset_hours(pool, hours, seed),
            f"best_single_{best_single}": budget(data[best_single]["train"], hours, seed),
        }
        rows = []
        for name, train in conditions.items():
            run = out / name
            langs = {u.language for u in train}
            dev = [u for u in pool_dev if u.language in langs]
            src = train_from_scratch(name, {"train": train, "dev": dev}, run / "pretrain", cfg.corpus, cfg.features,
                                     cfg.units, cfg.model, cfg.train, None)
            best = adapt(src, target, data[target], run / "adapt", cfg.adapt, cfg.corpus, cfg.units,
                         train_hours=cfg.target_hours)
            model, tok, _ = load_model(best)
            store = compute_features(data[target]["test"], feature_cache(cfg.corpus), cfg.features, progress=False)
            summary = decode_and_score(model, tok, store, data[target]["test"], run / "decode_test", cfg.decode)
            rows.append({"condition": name, "pretrain_hours": round(total_hours(train), 3),
                         "hours_by_language": _hours_by_language(train), "test_wer": round(summary["wer"], 2),
                         "test_cer": round(summary["cer"], 2)})
        result = {"target": target, "pool": pool_langs, "hours": hours, "target_hours": cfg.target_hours,
                  "lid_checkpoint": str(lid_ckpt), "lid_ranking": [[lang, round(s, 4)] for lang, s in ranking],
                  "rows": rows}
        write_json(out / "selection.json", result)
        lines = [f"Pre-training on {hours:g} h from the pool {', '.join(pool_langs)}, then adapting to {target} "
                 f"({cfg.target_hours:g} h); test WER/CER (%) of {target}.\n",
                 "| pre-training data | hours by language | test WER | test CER |", "|---|---|---|---|"]
        for r in rows:
            mix = ", ".join(f"{k} {v:g}" for k, v in r["hours_by_language"].items())
            lines.append(f"| {r['condition']} | {mix} | {r['test_wer']:.1f} | {r['test_cer']:.1f} |")
        write_text(out / "selection.md", "\n".join(lines) + "\n")
        return result
