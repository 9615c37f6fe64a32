"""One run: a spec -> train -> evaluate -> results.json. The recipe, `xlingual adapt`, every matrix cell, the
data-selection experiment and language ID all go through `execute`.

A run is described by a `RunSpec` (what is trained, on which data, with which configs). Its identity, the *run
key*, is one rule for every kind of run: a hash of the spec without the settings that only say how it executes
(threads, progress bar, device, checkpoint interval), of the data it trains and selects on (utterance ids, texts,
durations), of the source checkpoint's content (adaptation), and of the code version (the source of the modules
that compute a result, comments and docstrings aside). A run whose results.json carries its key is finished and
reused; a killed run resumes from last.pt under the same key; anything else starts afresh.

Output folder of a run:
    run.json              the spec, its keys and the code version (written first)
    tokenizer.json        the unit set (ASR; fixed at the first start, reloaded on resume)
    best.pt, last.pt, train_log.jsonl, done.json      the training loop's files (train.fit)
    decode_<split>/       hyp.txt, ref.txt, errors.jsonl, summary.json (ASR); report.json, confusion.csv (LID)
    results.json          one shape for every run (see `execute`), written last
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .config import (AdaptConfig, CorpusConfig, DecodeConfig, FeatureConfig, LIDConfig, ModelConfig, TrainConfig,
                     UnitConfig, from_dict, to_dict)
from .corpus import ManifestError, Utterance, read_manifest, subset_hours
from .fileio import exclusive_lock, read_json, write_json

KINDS = ("scratch", "adapt", "lid")
RUNTIME_KEYS = ("threads", "progress", "device", "checkpoint_every_steps")  # how a run executes, not what it computes
SPEC_FILE, RESULTS_FILE, TOKENIZER_FILE = "run.json", "results.json", "tokenizer.json"
# The modules whose code decides what a run of each kind computes; their source (without comments and docstrings)
# is the code version in its run key. Reports, ranking, the CLI, progress display and planning are left out: they
# do not change a run; and an LID change does not invalidate ASR runs, nor an ASR-only change LID runs.
_COMMON = ("adapters", "asr", "audio", "checkpoint", "corpus", "distributed", "espeak", "features", "model", "runs",
           "schedules", "text", "tokenizer", "train")
COMPUTE_MODULES = {"scratch": _COMMON + ("decode", "score"), "adapt": _COMMON + ("decode", "score", "transfer"),
                   "lid": _COMMON + ("lid",)}


@dataclass
class RunSpec:
    """What one run trains and on which data; `execute(spec, out_dir)` runs it."""

    kind: str  # "scratch" (random init), "adapt" (from `source`) or "lid" (a language-ID classifier)
    languages: list[str]  # trained on: one language, or several pooled (a multilingual source; LID classes)
    hours: float | None = None  # training budget per language (nested subset of its train split); None = all
    dev_hours: float | None = None  # dev budget per language (model selection); None = all
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # where <language>/{train,dev,test}.jsonl live
    features: FeatureConfig | None = None  # None = the defaults (scratch, lid) or the source's (adapt)
    units: UnitConfig = field(default_factory=UnitConfig)  # output units (ASR)
    model: ModelConfig = field(default_factory=ModelConfig)  # the architecture (scratch, lid; adapt: the source's)
    train: TrainConfig = field(default_factory=TrainConfig)  # the training run (adapt: its fine-tuning run)
    adapt: AdaptConfig | None = None  # adapt: the method (its `train` is replaced by `train` above)
    source: str | None = None  # adapt: the source checkpoint (best.pt)
    lid: LIDConfig | None = None  # lid: dev budget, balancing, selection, utterance head (its sections other
    #   than those are replaced by the spec's corpus/features/model/train)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # decoding of the evaluated splits (ASR)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"run kind must be one of {KINDS}, not {self.kind!r}")
        if not self.languages:
            raise ValueError("a run needs at least one language")
        if self.hours is not None and not self.hours > 0:
            raise ValueError(f"hours (the training budget) must be > 0 or null (all data), got {self.hours}")
        if self.kind == "adapt" and (self.adapt is None or not self.source):
            raise ValueError("an adapt run needs `adapt` (the method) and `source` (the checkpoint)")
        if self.kind == "lid" and self.lid is None:
            self.lid = LIDConfig(languages=list(self.languages))

    @property
    def language(self) -> str:
        """The language as one name: 'bn', or 'as+bn+hi' for a pool."""
        return "+".join(self.languages)

    @property
    def seed(self) -> int:
        return self.train.seed


@dataclass
class Setup:
    """What a run kind hands to the one training loop (runs.train -> train.fit)."""

    model: object  # the AcousticModel to train
    examples: list  # the training examples (train.Example)
    store: object  # their features (features.FeatureStore)
    evaluate: Callable  # model -> dev metrics, after every epoch
    select: tuple[str, str]  # (dev metric, "min" | "max") choosing best.pt
    meta: dict  # stored in every checkpoint (checkpoint.model_meta)
    features: FeatureConfig  # the run's features (SpecAugment settings for training)
    param_groups: list[dict] | None = None  # AdamW groups (discriminative LRs); None = one group
    on_epoch_start: Callable[[int], None] | None = None  # freezing plans
    loss: Callable | None = None  # None = train.compute_loss (CTC)
    skipped: int = 0  # training utterances left out (too short for their transcript)


# ----------------------------------------------------------------------------------------------------------------
# Identity


def digest(*parts) -> str:
    """A short stable hash of plain data."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """Content hash of a file (a source checkpoint): a retrained source never resumes an old adaptation."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_version(kind: str = "scratch") -> str:
    """xlingual's version + a hash of the code of the modules a run of `kind` depends on (ASTs without
    docstrings: comments and docs do not change a result, so editing them does not invalidate finished runs)."""
    here = Path(__file__).parent
    h = hashlib.sha1(__version__.encode())
    for name in COMPUTE_MODULES[kind]:
        tree = ast.parse((here / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(name.encode() + ast.dump(tree).encode())
    return f"{__version__}+{h.hexdigest()[:12]}"


def without_runtime(train: dict) -> dict:
    """A TrainConfig dict without the settings that do not change what the run computes."""
    return {k: v for k, v in train.items() if k not in RUNTIME_KEYS}


def config_dict(spec: RunSpec, source_id: str | None = None) -> dict:
    """What a run's result depends on in its configuration (decoding aside), as plain data.

    source_id: what stands for the source checkpoint (default: its content hash; a matrix plans with the source
    run's key before the checkpoint exists).
    """
    d = to_dict(spec)
    d.pop("decode")
    d["train"] = without_runtime(d["train"])
    if d["adapt"] is not None:
        d["adapt"].pop("train")  # the spec's `train` is the fine-tuning run
    if d["lid"] is not None:
        for k in ("out_dir", "corpus", "features", "model", "train", "languages", "train_hours", "dev_hours"):
            d["lid"].pop(k)  # the spec's own fields
        if spec.lid.init_from:  # the starting weights are what count, not where they lie
            d["lid"]["init_from"] = file_digest(spec.lid.init_from) if Path(spec.lid.init_from).is_file() else \
                spec.lid.init_from
    if source_id is not None:
        d["source"] = source_id
    elif spec.source:
        d["source"] = file_digest(spec.source) if Path(spec.source).is_file() else spec.source
    return d


def data_fingerprint(utts: list[Utterance]) -> str:
    """Hash of what a run sees of its data: ids, languages, texts, audio spans."""
    h = hashlib.sha1()
    for u in utts:
        h.update(f"{u.id}\t{u.language}\t{u.text}\t{u.offset}\t{u.duration}\n".encode())
    return h.hexdigest()[:16]


def train_key(spec: RunSpec, data: dict[str, dict[str, list[Utterance]]]) -> str:
    """The key of the trained model: config, training and dev data, code version (decoding not included)."""
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    return digest(config_dict(spec), data_fingerprint(train), data_fingerprint(dev), code_version(spec.kind))


# ----------------------------------------------------------------------------------------------------------------
# Data


SPLITS = ("train", "dev", "test")


def prepare_corpus(corpus: CorpusConfig, languages: list[str] | tuple[str, ...], progress: bool = True) -> None:
    """The explicit data step before any run: generate the embedded synthetic corpus (corpus.kind "synthetic";
    finished languages are kept), or check that prepared manifests exist (kind "manifests")."""
    root = Path(corpus.dir)
    if corpus.kind == "synthetic":
        from data_prep.synthetic import prepare_synthetic

        prepare_synthetic(root, languages=tuple(languages), seed=corpus.seed, noise_snr=corpus.noise_snr,
                          telephone=corpus.telephone, progress=progress, overwrite=False,
                          hours={"train": corpus.train_hours, "dev": corpus.dev_hours, "test": corpus.test_hours},
                          exclude_shared=tuple(corpus.exclude_shared))
    elif corpus.kind == "manifests":
        missing = [str(root / lang / f"{s}.jsonl") for lang in languages for s in SPLITS
                   if not (root / lang / f"{s}.jsonl").is_file()]
        if missing:
            raise ManifestError(f"manifest(s) not found: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                                f"; prepare the corpus first (`xlingual prepare ...`, README 'Real corpora')")
    else:
        raise ValueError(f"corpus.kind must be 'synthetic' or 'manifests', not {corpus.kind!r}")


def load_language(corpus: CorpusConfig, language: str) -> dict[str, list[Utterance]]:
    """The train/dev/test manifests of one language (read only: `prepare_corpus` makes them)."""
    root = Path(corpus.dir)
    return {s: read_manifest(root / language / f"{s}.jsonl", allow_empty=False) for s in SPLITS}


def run_data(spec: RunSpec) -> dict[str, dict[str, list[Utterance]]]:
    """language -> split -> utterances: the train split within the hours budget (a nested subset, the same for
    every run with the same corpus seed); dev within the dev budget; test whole.

    Raises:
        ManifestError: a manifest is missing or bad (prepare the corpus first), or a split is empty.
    """
    out = {}
    for lang in spec.languages:
        splits = load_language(spec.corpus, lang)
        splits["train"] = budget(splits["train"], spec.hours, spec.corpus.seed)
        splits["dev"] = budget(splits["dev"], spec.dev_hours, spec.corpus.seed)
        for s in ("train", "dev"):  # an empty dev split would score a perfect 0% and select epoch 1
            if not splits[s]:
                raise ManifestError(f"{Path(spec.corpus.dir) / lang / f'{s}.jsonl'}: no {s} utterances"
                                    + (f" within the budget of {spec.hours} h" if s == "train" and spec.hours else "")
                                    + f"; a run needs {s} data (re-prepare the corpus, or check the split)")
        out[lang] = splits
    return out


def budget(utts: list[Utterance], hours: float | None, seed: int = 0) -> list[Utterance]:
    return list(utts) if hours is None else subset_hours(utts, hours, seed)


# ----------------------------------------------------------------------------------------------------------------
# Running


def train(spec: RunSpec, out_dir: str | Path, data: dict | None = None, resume: bool = True) -> Path:
    """Train (or resume, or find finished) the run's model in out_dir; returns the path of best.pt."""
    from .train import fit

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
        from .lid import setup_lid

        return setup_lid(spec, data, out_dir)
    if spec.kind == "adapt":
        from .transfer import setup_adapt

        return setup_adapt(spec, data, out_dir, key)
    from .asr import setup_scratch

    return setup_scratch(spec, data, out_dir, key)


def evaluate(spec: RunSpec, checkpoint: str | Path, data: dict, out_dir: str | Path,
             splits: tuple[str, ...] = ("dev", "test")) -> dict:
    """{split: metrics} of the checkpoint on each split of the run's languages, files in out_dir/decode_<split>/.

    ASR: WER, CER (%), n_utts and len_ratio (hypothesis units / reference units; near 0 = (nearly) all blank);
    LID: accuracy, per-language accuracy and the confusion matrix.
    """
    if spec.kind == "lid":
        from .lid import evaluate_lid

        return {s: evaluate_lid(checkpoint, {lang: data[lang][s] for lang in spec.languages},
                                Path(out_dir) / f"decode_{s}", spec.corpus) for s in splits}
    from .asr import evaluate_asr

    return {s: evaluate_asr(checkpoint, [u for lang in spec.languages for u in data[lang][s]],
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
    if spec.kind != "adapt":
        return {}
    from .checkpoint import load_checkpoint

    a = spec.adapt
    return {"adapt": {"mode": a.mode, "transfer_layers": a.transfer_layers, "adaptation": list(a.adaptation),
                      "kept_head": load_checkpoint(best)["meta"].get("kept_head")}}


def _source_info(spec: RunSpec) -> dict | None:
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


def load_spec(path: str | Path) -> RunSpec:
    """The RunSpec of a run.json or cell.json ({"spec": ...})."""
    d = read_json(path)
    return from_dict(RunSpec, d["spec"], f"{path}: spec")
