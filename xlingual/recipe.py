"""The per-language recipe: prepare -> train from scratch -> decode and score, in resumable stages."""

from __future__ import annotations

import time
from pathlib import Path

from .asr import decode_and_score, feature_cache, load_language, load_model, train_from_scratch
from .config import RecipeConfig, to_dict
from .features import compute_features
from .fileio import write_json

STAGES = ("prepare", "train", "score")


def run_recipe(cfg: RecipeConfig, stage: int = 0, stop_stage: int = len(STAGES) - 1) -> dict | None:
    """Run stages stage..stop_stage (0 prepare, 1 train, 2 score); returns the results of stage 2 when it ran.

    Outputs in cfg.out_dir: config.yaml, best.pt/last.pt/train_log.jsonl, decode_<split>/ files, results.json.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    progress = cfg.train.progress
    t0 = time.time()
    data = load_language(cfg.corpus, cfg.language, progress) if stage <= 2 else None
    if stage <= 1 <= stop_stage:
        train_from_scratch(cfg.language, data, out, cfg.corpus, cfg.features, cfg.units, cfg.model, cfg.train,
                           cfg.train_hours)
    if stage <= 2 <= stop_stage:
        model, tok, meta = load_model(out / "best.pt")
        results = {"language": cfg.language, "train_hours": cfg.train_hours, "units": cfg.units.kind,
                   "preset": cfg.model.preset}
        for split in ("dev", "test"):
            store = compute_features(data[split], feature_cache(cfg.corpus), cfg.features, progress=progress)
            summary = decode_and_score(model, tok, store, data[split], out / f"decode_{split}", cfg.decode)
            results[split] = {"wer": round(summary["wer"], 2), "cer": round(summary["cer"], 2),
                              "n_utts": summary["n_utts"]}
        results["wall_seconds"] = round(time.time() - t0, 1)
        write_json(out / "results.json", results)
        return results
    return None
