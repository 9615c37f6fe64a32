"""The per-language recipe: prepare -> train from scratch -> decode and score, in resumable stages."""

from __future__ import annotations

import time
from pathlib import Path

from .asr import decode_and_score, feature_cache, load_language, load_model, train_from_scratch
from .config import RecipeConfig, to_dict
from .features import compute_features
from .fileio import locked, write_json, write_text

STAGES = ("prepare", "train", "score")


@locked("cfg.out_dir")  # two runs in one folder would interleave their checkpoints and results
def run_recipe(cfg: RecipeConfig, stage: int = 0, stop_stage: int = len(STAGES) - 1,
               resume: bool = True) -> dict | None:
    """Run stages stage..stop_stage (0 prepare, 1 train, 2 score); returns the results of stage 2 when it ran.

    resume: continue an interrupted training run found in cfg.out_dir (False: refuse, with a clear message).

    Outputs in cfg.out_dir: config.yaml, best.pt/last.pt/train_log.jsonl, decode_<split>/ files, results.json.
    Raises:
        fileio.LockError: another run is writing cfg.out_dir.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    progress = cfg.train.progress
    t0 = time.time()
    data = load_language(cfg.corpus, cfg.language, progress) if stage <= 2 else None
    if stage <= 1 <= stop_stage:
        train_from_scratch(cfg.language, data, out, cfg.corpus, cfg.features, cfg.units, cfg.model, cfg.train,
                           cfg.train_hours, resume=resume)
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


def results_table(paths: list[str | Path]) -> str:
    """Markdown table of recipe results.json files: language, budget, dev/test WER and CER."""
    import json

    rows = []
    for p in paths:
        r = json.loads(Path(p).read_text(encoding="utf-8"))
        hours = "all" if r["train_hours"] is None else f"{r['train_hours']:g} h"
        rows.append((r["language"], -(r["train_hours"] or 1e9), hours, r))
    lines = ["| language | train budget | dev WER | dev CER | test WER | test CER | wall s |",
             "|---|---|---|---|---|---|---|"]
    for lang, _, hours, r in sorted(rows, key=lambda x: (x[0], x[1])):
        lines.append(f"| {lang} | {hours} | {r['dev']['wer']:.1f} | {r['dev']['cer']:.1f} | {r['test']['wer']:.1f} "
                     f"| {r['test']['cer']:.1f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "collect":
        sys.exit("usage: python -m xlingual.recipe collect <results.json>...")
    print(results_table(sys.argv[2:]), end="")
