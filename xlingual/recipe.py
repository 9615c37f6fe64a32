"""The entry points that make one run each: the per-language recipe (prepare -> train from scratch -> decode and
score, in resumable stages), `xlingual adapt`, LID training, and a multilingual phone recognizer.

Each builds a runspec.RunSpec from a user-facing config and runs it through runs.execute.
"""

from __future__ import annotations

from pathlib import Path

from .config import (AdaptConfig, AdaptRecipeConfig, DecodeConfig, FeatureConfig, LIDConfig, PhonotacticConfig,
                     RecipeConfig, UnitConfig, to_dict)
from .fileio import exclusive_lock, locked, read_json, write_text
from .lid import SELECT, check_languages
from .runs import execute, train
from .runspec import RunSpec, prepare_corpus, run_data
from .transfer import load_source

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


def adapt_spec(source_ckpt: str | Path, language: str, cfg: AdaptConfig, corpus, units: UnitConfig,
               features: FeatureConfig | None = None, hours: float | None = None, decode=None) -> RunSpec:
    """The RunSpec of adapting `source_ckpt` to `language` with method `cfg` (its `train` is the run)."""
    return RunSpec(kind="adapt", languages=[language], hours=hours, corpus=corpus, features=features, units=units,
                   train=cfg.train, adapt=cfg, source=str(source_ckpt), decode=decode or DecodeConfig())


def run_adapt(cfg: AdaptRecipeConfig, source_ckpt: str | Path, resume: bool = True) -> dict:
    """`xlingual adapt`: adapt, then decode and score dev and test; returns results.json's content.

    The source is a conformer checkpoint (a run of kind "adapt") or a self-supervised encoder file (kind "ssl",
    ssl.py: a CTC head on the encoder, cfg.ssl says how the encoder is used; ssl_encoder.py: the file).
    Raises:
        fileio.LockError: another run is writing cfg.out_dir.
    """
    import yaml

    from . import ssl
    from .ssl_encoder import is_encoder_file

    encoder = is_encoder_file(source_ckpt)
    if encoder:  # fail on a wrong checkpoint or setting before writing anything
        if cfg.features is not None:
            raise ValueError(f"{source_ckpt} is a self-supervised encoder, which reads the waveform: remove the "
                             f"features section (it sets filterbanks)")
        ssl.check_source(source_ckpt, cfg.adapt, cfg.ssl)
    else:
        load_source(source_ckpt, cfg.adapt, cfg.features)
    out = Path(cfg.out_dir)
    with exclusive_lock(out):  # held (re-entrant) through execute, so nothing is written while another run holds it
        write_text(out / "config.yaml", yaml.safe_dump({"source_checkpoint": str(source_ckpt), **to_dict(cfg)},
                                                       sort_keys=False, allow_unicode=True))
        prepare_corpus(cfg.corpus, [cfg.language], cfg.adapt.train.progress)
        if encoder:
            spec = ssl.ssl_spec(source_ckpt, cfg.language, cfg.adapt, cfg.corpus, cfg.units, cfg.ssl, cfg.train_hours,
                                cfg.decode)
        else:
            spec = adapt_spec(source_ckpt, cfg.language, cfg.adapt, cfg.corpus, cfg.units, cfg.features,
                              cfg.train_hours, cfg.decode)
        return execute(spec, out, resume=resume)


def lid_spec(cfg: LIDConfig) -> RunSpec:
    return RunSpec(kind="lid", languages=list(cfg.languages), hours=cfg.train_hours, dev_hours=cfg.dev_hours,
                   corpus=cfg.corpus, features=cfg.features, model=cfg.model, train=cfg.train, lid=cfg)


def train_lid(cfg: LIDConfig, phone_cfg=None) -> Path:
    """Train an LID classifier over cfg.languages (a run of kind "lid"); returns the path of best.pt.

    phone_cfg (config.PhonotacticConfig): first train a multilingual phone recognizer on cfg.languages (cached in
    phone_cfg.out_dir/all); the LID starts from its encoder and gets a PRLM back-end from its transcriptions.
    Each language contributes its train split within cfg.train_hours (the same nested subset ASR budgets use);
    with cfg.oversample, smaller languages are repeated so that each weighs about equally. Selection by
    cfg.select on the dev splits. Resumable; a finished run with the same key is reused.
    Outputs in cfg.out_dir: the run's files (runs.execute) and decode_{dev,test}/: report.json (accuracy of the
    utterance decision and of the mean frame posterior, per-language accuracy, confusion matrix),
    confusion.csv (rows: true, columns: predicted).
    """
    check_languages(list(cfg.languages))
    if cfg.select not in SELECT:
        raise ValueError(f"LIDConfig.select must be one of {sorted(SELECT)}, not {cfg.select!r}")
    prepare_corpus(cfg.corpus, list(cfg.languages), cfg.train.progress)
    if phone_cfg is not None:  # a phone recognizer on the same languages starts the LID and its PRLM back-end
        from dataclasses import replace

        folder = Path(phone_cfg.out_dir) / "all"
        execute(phone_recognizer_spec(phone_cfg, list(cfg.languages)), folder, splits=())
        cfg = replace(cfg, init_from=str(folder / "best.pt"), prlm=True)
    execute(lid_spec(cfg), cfg.out_dir, splits=("dev", "test"))  # test: held-out voices never used to select
    return Path(cfg.out_dir) / "best.pt"


def phone_recognizer_spec(cfg: PhonotacticConfig, languages: list[str]):
    """The RunSpec of a multilingual IPA recognizer on `languages` (pooled, cfg.hours of each)."""
    return RunSpec(kind="scratch", languages=list(languages), hours=cfg.hours, dev_hours=cfg.dev_hours,
                   corpus=cfg.corpus,
                   features=cfg.features, units=UnitConfig(kind="ipa"), model=cfg.model, train=cfg.train,
                   decode=cfg.decode)


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
