"""One run: a spec -> train -> evaluate -> results.json. The recipe, `xlingual adapt`, every matrix cell, the
data-selection experiment and language ID all go through `execute`. What a run is (spec, key, data): runspec.py.

A run whose results.json carries its key is finished and reused; a killed run resumes from last.pt under the same
key; anything else starts afresh.

Output folder of a run:
    run.json              the spec, its keys and the code version (written first)
    tokenizer.json        the unit set (ASR; fixed at the first start, reloaded on resume)
    best.pt, last.pt, train_log.jsonl, done.json      the training loop's files (train.fit)
    decode_<split>/       hyp.txt, ref.txt, errors.jsonl, summary.json (ASR); report.json, confusion.csv (LID)
    results.json          one shape for every run (see `execute`), written last
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from . import asr, lid, ssl, transfer
from .config import to_dict
from .fileio import exclusive_lock, read_json, write_json
from .runspec import (RESULTS_FILE, SPEC_FILE, RunSpec, code_version, digest, file_digest, run_data, train_key)
from .train import fit

# ----------------------------------------------------------------------------------------------------------------
# Running


def train(spec: RunSpec, out_dir: str | Path, data: dict | None = None, resume: bool = True) -> Path:
    """Train (or resume, or find finished) the run's model in out_dir; returns the path of best.pt."""
    out_dir = Path(out_dir)
    data = data if data is not None else run_data(spec)
    key = train_key(spec, data)
    setup = _setup(spec, data, out_dir, key)
    fit(setup.model, setup.examples, setup.store, spec.train, out_dir, evaluate=setup.evaluate,
        select=setup.select, param_groups=setup.param_groups, on_epoch_start=setup.on_epoch_start,
        specaug=setup.features, meta=setup.meta, run_key=key, resume=resume, loss=setup.loss)
    return out_dir / "best.pt"


def _setup(spec: RunSpec, data: dict, out_dir: Path, key: str):
    if spec.kind == "lid":
        return lid.setup_lid(spec, data, out_dir)
    if spec.kind == "adapt":
        return transfer.setup_adapt(spec, data, out_dir, key)
    if spec.kind == "ssl":
        return ssl.setup_ssl(spec, data, out_dir, key)
    return asr.setup_scratch(spec, data, out_dir, key)


def evaluate(spec: RunSpec, checkpoint: str | Path, data: dict, out_dir: str | Path,
             splits: tuple[str, ...] = ("dev", "test")) -> dict:
    """{split: metrics} of the checkpoint on each split of the run's languages, files in out_dir/decode_<split>/.

    ASR: WER, CER (%), n_utts and len_ratio (hypothesis units / reference units; near 0 = (nearly) all blank);
    LID: accuracy, per-language accuracy and the confusion matrix.
    """
    if spec.kind == "lid":
        return {s: lid.evaluate_lid(checkpoint, {lang: data[lang][s] for lang in spec.languages},
                                Path(out_dir) / f"decode_{s}", spec.corpus) for s in splits}
    if spec.kind == "ssl":
        score = ssl.evaluate_ssl
    else:  # scoring a test set takes minutes at real sizes: show it where the run shows its training
        score = functools.partial(asr.evaluate_asr, progress=spec.train.progress)
    return {s: score(checkpoint, [u for lang in spec.languages for u in data[lang][s]],
                     Path(out_dir) / f"decode_{s}", spec.corpus, spec.decode) for s in splits}


def execute(spec: RunSpec, out_dir: str | Path, splits: tuple[str, ...] = ("dev", "test"), resume: bool = True,
            data: dict | None = None, rescore: bool = False, extra: dict | None = None) -> dict:
    """Train, evaluate `splits` and write results.json (returned); a finished run with the same key is reused
    (rescore: evaluate it again all the same; a finished training is always reused).

    extra: fields a caller adds to results.json (a matrix's run name and plan hashes), written in the same write,
    so that a kill never leaves a results.json without them.

    results.json (one shape for every run):
        key, train_key, code_version       identity (key = train_key + decoding + splits)
        kind, language, languages, hours, seed, source ({checkpoint, digest, language, hours} or null)
        <split>: metrics                   per evaluated split (see `evaluate`)
        learned, learning                  did the run learn (see learning_verdict), and the evidence
        training                           epochs, best_epoch, steps, nonfinite_steps, train_seconds (summed
                                           over every process that trained it, resumes included)
        eval_seconds, wall_seconds         wall_seconds = train_seconds + eval_seconds
    Raises:
        fileio.LockError: another process is running in out_dir.
    """
    out = Path(out_dir)
    with exclusive_lock(out):
        data = data if data is not None else run_data(spec)
        tkey = train_key(spec, data)
        key = digest(tkey, to_dict(spec.decode) if spec.kind != "lid" else None, list(splits))
        res_path = out / RESULTS_FILE
        if res_path.is_file() and read_json(res_path).get("key") == key and not rescore:
            done = read_json(res_path)
            if extra and any(done.get(k) != v for k, v in extra.items()):
                done.update(extra)
                write_json(res_path, done)
            return done
        write_json(out / SPEC_FILE, {"spec": to_dict(spec), "train_key": tkey, "key": key,
                                     "code_version": code_version(spec.kind)})
        best = train(spec, out, data, resume)
        t0 = time.time()
        metrics = evaluate(spec, best, data, out, splits)
        eval_seconds = time.time() - t0
        done = read_json(out / "done.json")
        history = done["history"]
        best_epoch = done.get("best_epoch") or (len(history) if history else 0)
        training = {"epochs": len(history), "best_epoch": best_epoch, "steps": history[-1]["step"] if history else 0,
                    "nonfinite_steps": sum(h.get("nonfinite_steps", 0) for h in history),
                    "train_seconds": round(done.get("seconds", 0.0), 1)}
        learned, learning = learning_verdict(spec, metrics, history[best_epoch - 1] if history else {})
        results = {"key": key, "train_key": tkey, "code_version": code_version(spec.kind), "kind": spec.kind,
                   "language": spec.language, "languages": list(spec.languages), "hours": spec.hours,
                   "seed": spec.seed, "source": _source_info(spec), **_adapt_info(spec, best), **metrics,
                   "learned": learned,
                   "learning": learning, "training": training, "eval_seconds": round(eval_seconds, 1),
                   "wall_seconds": round(training["train_seconds"] + eval_seconds, 1), **(extra or {})}
        write_json(res_path, results)
        return results


def _adapt_info(spec: RunSpec, best: Path) -> dict:
    """{"adapt": method and whether the source's output layer was kept} for an adapt run, else {}."""
    if spec.kind not in ("adapt", "ssl"):
        return {}
    from .checkpoint import load_checkpoint

    a = spec.adapt
    return {"adapt": {"mode": a.mode, "transfer_layers": a.transfer_layers, "adaptation": list(a.adaptation),
                      "kept_head": load_checkpoint(best)["meta"].get("kept_head")}}


def _source_info(spec: RunSpec) -> dict | None:
    if spec.kind == "ssl":
        return ssl.source_info(spec)
    if spec.kind != "adapt":
        return None
    from .checkpoint import load_checkpoint

    meta = load_checkpoint(spec.source).get("meta", {})
    return {"checkpoint": str(spec.source), "digest": file_digest(spec.source), "language": meta.get("language"),
            "hours": meta.get("train_hours")}


# ----------------------------------------------------------------------------------------------------------------
# Did it learn?

MIN_LEN_RATIO = 0.5  # ASR: a model that emits fewer than half the reference's units on dev is (nearly) all blank
MAX_LEARNED_CER = 90.0  # ASR: and its dev CER must be below this (100 = nothing right; all blank gives 100)
LID_MIN_MARGIN = 0.1  # LID: dev accuracy must beat chance (1 / languages) by this much


def learning_verdict(spec: RunSpec, metrics: dict, best_epoch: dict) -> tuple[bool, dict]:
    """(learned, evidence) from the dev split (decoded at the best checkpoint) or, without it, the training log's
    best epoch. A run that did not learn is not a measurement: reports flag it, rankings leave it out."""
    if spec.kind == "lid":
        acc = metrics["dev"]["accuracy"] if "dev" in metrics else best_epoch.get("dev_acc", 0.0)
        chance = 1.0 / len(spec.languages)
        ok = acc >= chance + LID_MIN_MARGIN
        return ok, {"dev_accuracy": acc, "chance": chance,
                    "criterion": f"dev accuracy >= chance + {LID_MIN_MARGIN}"}
    dev = metrics.get("dev") or {"cer": best_epoch.get("dev_cer", 100.0), "len_ratio": best_epoch.get("dev_len_ratio")}
    ratio = dev.get("len_ratio")
    ok = dev["cer"] < MAX_LEARNED_CER and (ratio is None or ratio >= MIN_LEN_RATIO)
    return ok, {"dev_cer": dev["cer"], "dev_len_ratio": ratio,
                "criterion": f"dev CER < {MAX_LEARNED_CER:g}% and hypothesis/reference length >= {MIN_LEN_RATIO:g}"}
