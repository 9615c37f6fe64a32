"""What a run is: its spec, its identity (the run key) and its data, below everything that trains or evaluates.

A run is described by a `RunSpec` (what is trained, on which data, with which configs). Its identity, the *run
key*, is one rule for every kind of run: a hash of the spec without the settings that only say how it executes
(threads, progress bar, device, checkpoint interval), of the data it trains and selects on (utterance ids, texts,
durations), of the source checkpoint's content (adaptation), and of the code version (the source of the modules
that compute a result, comments and docstrings aside). runs.py trains and evaluates a spec; the kind modules (asr,
transfer, lid) and the matrix read specs and data through this module only, so no module imports one above it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .config import (AdaptConfig, CorpusConfig, DecodeConfig, FeatureConfig, LIDConfig, ModelConfig, SSLConfig,
                     TrainConfig, UnitConfig, from_dict, to_dict)
from .corpus import ManifestError, Utterance, read_manifest, subset_hours
from .fileio import read_json

KINDS = ("scratch", "adapt", "lid", "ssl")
RUNTIME_KEYS = ("threads", "progress", "device", "checkpoint_every_steps")  # how a run executes, not what it computes
SPEC_FILE, RESULTS_FILE, TOKENIZER_FILE = "run.json", "results.json", "tokenizer.json"
# The modules whose code decides what a run of each kind computes; their source (without comments and docstrings)
# is the code version in its run key. Reports, ranking, the CLI, progress display and planning are left out: they
# do not change a run; and an LID change does not invalidate ASR runs, nor an ASR-only change LID runs.
_COMMON = ("adapters", "asr", "audio", "checkpoint", "corpus", "distributed", "dropout", "espeak", "features", "model",
           "runs", "runspec", "schedules", "text", "tokenizer", "train")
COMPUTE_MODULES = {"scratch": _COMMON + ("decode", "score"), "adapt": _COMMON + ("decode", "score", "transfer"),
                   "lid": _COMMON + ("lid", "prlm", "transfer"),  # lid starts from an ASR encoder (transfer checks)
                   "ssl": _COMMON + ("decode", "score", "transfer", "ssl", "ssl_cache", "ssl_encoder", "ssl_model")}


@dataclass
class RunSpec:
    """What one run trains and on which data; `execute(spec, out_dir)` runs it."""

    kind: str  # "scratch" (random init), "adapt" (from `source`), "lid" (a language-ID classifier) or "ssl" (from
    #   the self-supervised encoder file `source`, ssl.py)
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
    ssl: SSLConfig | None = None  # ssl: how the encoder is used (layers, masking, feature cache)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"run kind must be one of {KINDS}, not {self.kind!r}")
        if not self.languages:
            raise ValueError("a run needs at least one language")
        if self.hours is not None and not self.hours > 0:
            raise ValueError(f"hours (the training budget) must be > 0 or null (all data), got {self.hours}")
        if self.kind in ("adapt", "ssl") and (self.adapt is None or not self.source):
            raise ValueError(f"an {self.kind} run needs `adapt` (the method) and `source` (the checkpoint)")
        if self.kind == "ssl" and self.ssl is None:
            self.ssl = SSLConfig()
        if self.kind == "lid" and self.lid is None:
            self.lid = LIDConfig(languages=list(self.languages))

    @property
    def language(self) -> str:
        """The language as one name: 'bn', or 'as+bn+hi' for a pool."""
        return "+".join(self.languages)

    @property
    def seed(self) -> int:
        return self.train.seed


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
    if d["ssl"] is None:
        d.pop("ssl")  # the configuration of the other kinds, and so their keys, as before SSL sources existed
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


def load_spec(path: str | Path) -> RunSpec:
    """The RunSpec of a run.json or cell.json ({"spec": ...})."""
    d = read_json(path)
    return from_dict(RunSpec, d["spec"], f"{path}: spec")
