"""The per-language recipe: prepare -> train from scratch -> decode and score, in resumable stages."""

from __future__ import annotations

from pathlib import Path

from .config import RecipeConfig, to_dict
from .fileio import locked, read_json, write_text
from .runs import RunSpec, execute, prepare_corpus, run_data, train

STAGES = ("prepare", "train", "score")


def recipe_spec(cfg: RecipeConfig) -> RunSpec:
    return RunSpec(kind="scratch", languages=[cfg.language], hours=cfg.train_hours, corpus=cfg.corpus,
                   features=cfg.features, units=cfg.units, model=cfg.model, train=cfg.train, decode=cfg.decode)


@locked("cfg.out_dir")  # two runs in one folder would interleave their checkpoints and results
def run_recipe(cfg: RecipeConfig, stage: int = 0, stop_stage: int = len(STAGES) - 1,
               resume: bool = True) -> dict | None:
    """Run stages stage..stop_stage (0 prepare, 1 train, 2 score); returns results.json's content when stage 2 ran.

    resume: continue an interrupted training run found in cfg.out_dir (False: refuse, with a clear message).

    Outputs in cfg.out_dir: config.yaml, run.json, tokenizer.json, best.pt/last.pt/train_log.jsonl/done.json,
    decode_{dev,test}/ files, results.json (runs.execute: WER/CER of dev and test at the best checkpoint, whether the
    run learned, training time); with cfg.decode_last, decode_last_{dev,test}/ (last.pt decoded), returned under
    "last" (not written into results.json, which stays the best checkpoint's).
    Raises:
        fileio.LockError: another run is writing cfg.out_dir.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    spec = recipe_spec(cfg)
    if stage <= 0 <= stop_stage:
        prepare_corpus(cfg.corpus, [cfg.language], cfg.train.progress)
    if stop_stage < 1 or stage > 2:
        return None
    data = run_data(spec)
    if stop_stage < 2:
        train(spec, out, data, resume=resume)
        return None
    if stage == 2 and not (out / "done.json").is_file():
        raise FileNotFoundError(f"{out}: no finished training run to score (run stage 1 first: --stage 1)")
    results = execute(spec, out, resume=resume, data=data, rescore=stage == 2)  # stage 2 asked for: score again
    if cfg.decode_last:
        results = {**results, "last": decode_last(spec, out, data)}
    return results


def decode_last(spec: RunSpec, out: Path, data: dict, splits: tuple[str, ...] = ("dev", "test")) -> dict:
    """{"checkpoint": last.pt, split: {wer, cer, n_utts, len_ratio}}: the final weights decoded and scored as
    best.pt is, into out/decode_last_<split>/. last.pt holds {"model", "meta", ...} like best.pt, so the same loader
    reads it; a run stopped early (patience) has its last epoch there, not the selected one."""
    from .asr import evaluate_asr

    last = out / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"{last} not found: decode_last needs the run's last checkpoint (train it first: "
                                f"--stage 1), or set decode_last=false")
    return {"checkpoint": str(last),
            **{s: evaluate_asr(last, [u for lang in spec.languages for u in data[lang][s]], out / f"decode_last_{s}",
                               spec.corpus, spec.decode) for s in splits}}


def results_table(paths: list[str | Path]) -> str:
    """Markdown table of recipe results.json files: language, budget, dev/test WER and CER."""
    from .report import hours_label

    rows = []
    for p in paths:
        r = read_json(p)
        rows.append((r["language"], -(r["hours"] or 1e9), hours_label(r["hours"]), r))
    lines = ["| language | train budget | dev WER | dev CER | test WER | test CER | learned | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for lang, _, hours, r in sorted(rows, key=lambda x: (x[0], x[1])):
        lines.append(f"| {lang} | {hours} | {r['dev']['wer']:.1f} | {r['dev']['cer']:.1f} | {r['test']['wer']:.1f} "
                     f"| {r['test']['cer']:.1f} | {'yes' if r['learned'] else 'NO'} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "collect":
        sys.exit("usage: python -m xlingual.recipe collect <results.json>...")
    print(results_table(sys.argv[2:]), end="")
