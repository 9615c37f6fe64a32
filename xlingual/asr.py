"""ASR training and evaluation on manifests: the API behind the recipe, the matrix and `xlingual adapt`.

A stage reads what the previous one wrote: manifests -> cached features -> units -> checkpoint -> decodes ->
scores. Each function is safe to call again: finished work is found on disk and reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import __version__
from .config import CorpusConfig, DecodeConfig, FeatureConfig, ModelConfig, TrainConfig, UnitConfig, to_dict
from .corpus import Utterance, read_manifest, subset_hours
from .decode import greedy_ids, transcribe
from .features import FeatureStore, cmvn_stats, compute_features
from .fileio import read_json, write_json
from .model import AcousticModel, dims_from_config, dims_from_dict, dims_to_dict
from .score import error_rates, write_scores
from .tokenizer import Tokenizer
from .train import FRAMES_PER_SECOND, Example, bucket_batches, collate, fit, load_checkpoint, loss_from_logits

SPLITS = ("train", "dev", "test")


def load_language(corpus: CorpusConfig, language: str, progress: bool = True) -> dict[str, list[Utterance]]:
    """The train/dev/test manifests of one language; the synthetic corpus is generated on first use."""
    root = Path(corpus.dir)
    if corpus.kind == "synthetic":
        from data_prep.synthetic import prepare_synthetic

        prepare_synthetic(root, languages=(language,), seed=corpus.seed, noise_snr=corpus.noise_snr,
                          telephone=corpus.telephone, progress=progress, overwrite=False,
                          hours={"train": corpus.train_hours, "dev": corpus.dev_hours, "test": corpus.test_hours})
    elif corpus.kind != "manifests":
        raise ValueError(f"corpus.kind must be 'synthetic' or 'manifests', not {corpus.kind!r}")
    return {s: read_manifest(root / language / f"{s}.jsonl") for s in SPLITS}


def feature_cache(corpus: CorpusConfig) -> Path:
    """Features are cached beside the corpus, keyed by content, so every experiment on it shares them."""
    return Path(corpus.dir) / ".features"


def budget(utts: list[Utterance], hours: float | None, seed: int = 0) -> list[Utterance]:
    return list(utts) if hours is None else subset_hours(utts, hours, seed)


def make_examples(utts: list[Utterance], store: FeatureStore, tokenizer: Tokenizer,
                  strict: bool = True) -> list[Example]:
    """Encode each transcript; UnitError names the utterance when a unit is missing from the unit set.

    strict=False (dev sets) drops units the model cannot emit, rather than failing on a rare character.
    """
    return [Example(u.id, store.num_frames(u.id),
                    tokenizer.encode(tokenizer.to_units(u.text, u.language), where=f"utterance {u.id!r}",
                                     strict=strict))
            for u in utts]


def references(utts: list[Utterance], tokenizer: Tokenizer) -> dict[str, str]:
    """What hypotheses are scored against: the normalized text, or its IPA for phone units."""
    return {u.id: tokenizer.to_units(u.text, u.language) for u in utts}


def make_evaluator(store: FeatureStore, dev: list[Utterance], tokenizer: Tokenizer, device_of=None):
    """model -> {"dev_loss", "dev_wer", "dev_cer"}: CTC loss and greedy-decoding error rates on `dev`."""
    examples = make_examples(dev, store, tokenizer, strict=False)
    refs = references(dev, tokenizer)

    frames = [e.frames for e in examples]
    max_frames = max([int(DecodeConfig().max_batch_seconds * FRAMES_PER_SECOND)] + frames)

    def evaluate(model: torch.nn.Module) -> dict:
        # one forward per length-bucketed batch serves both the dev loss and greedy decoding (1.3x faster than
        # two passes, results/bench/optimizations.md)
        device = next(model.parameters()).device
        total, hyps = 0.0, {}
        for idx in bucket_batches(frames, max_frames, seed=0, epoch=0):
            batch = collate(store, [examples[i] for i in idx])
            logits, lens = model(batch["feats"].to(device), batch["feat_lens"].to(device))
            total += float(loss_from_logits(logits, lens, batch)) * len(idx)
            for uid, seq in zip(batch["ids"], greedy_ids(logits, lens)):
                hyps[uid] = tokenizer.decode(seq)
        n = len(examples)
        rates = error_rates([refs[k] for k in refs], [hyps[k] for k in refs])
        return {"dev_loss": total / max(n, 1), "dev_wer": rates["wer"], "dev_cer": rates["cer"]}

    return evaluate


def build_tokenizer(utts: list[Utterance], units: UnitConfig) -> Tokenizer:
    return Tokenizer.build(units.kind, [(u.text, u.language) for u in utts], units.spm_vocab)


def new_model(model_cfg: ModelConfig, features: FeatureConfig, tokenizer: Tokenizer, store: FeatureStore,
              train: list[Utterance], seed: int) -> AcousticModel:
    """A freshly initialized model (seeded) with CMVN statistics from the training features."""
    torch.manual_seed(seed)
    model = AcousticModel(dims_from_config(model_cfg, features.n_mels, tokenizer.vocab_size))
    model.set_cmvn(*cmvn_stats(store, [u.id for u in train]))
    return model


def checkpoint_meta(model: AcousticModel, tokenizer: Tokenizer, features: FeatureConfig, **extra) -> dict:
    """Everything needed to rebuild and use a model, as plain data (loadable with weights_only=True)."""
    from .adapters import adaptation_spec

    return {"toolkit": "xlingual", "version": __version__, "task": "asr", "dims": dims_to_dict(model.dims),
            "tokenizer": tokenizer.to_dict(), "features": to_dict(features), "adaptation": adaptation_spec(model),
            **extra}


def load_model(path: str | Path) -> tuple[AcousticModel, Tokenizer, dict]:
    """Rebuild a model (with its adaptation layers) and tokenizer from a checkpoint; refuses foreign files."""
    from .adapters import add_adaptation

    ck = load_checkpoint(path)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if not isinstance(meta, dict) or meta.get("toolkit") != "xlingual" or "dims" not in meta \
            or not isinstance(ck.get("model"), dict):
        raise ValueError(f"{path} is not an xlingual checkpoint (no model dimensions recorded)")
    major = str(meta.get("version", "0")).split(".")[0]
    if major != __version__.split(".")[0]:
        raise ValueError(f"{path} was written by xlingual {meta.get('version')}, incompatible with {__version__}")
    try:  # crafted or damaged dimensions fail here, not deep inside torch
        model = AcousticModel(dims_from_dict(meta["dims"]))
        spec = meta.get("adaptation") or {}
        if spec.get("kinds"):
            add_adaptation(model, spec["kinds"], spec.get("bottleneck", 32))
    except Exception as e:
        raise ValueError(f"{path}: its recorded model ({meta['dims']}, adaptation {meta.get('adaptation')}) "
                         f"cannot be built: {e}") from None
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the recorded model shape: {str(e)[:300]}") from None
    tok = None
    if "tokenizer" in meta:
        try:
            tok = Tokenizer.from_dict(meta["tokenizer"])
        except Exception as e:
            raise ValueError(f"{path}: its unit set (tokenizer) cannot be read: {e}") from None
        if tok.vocab_size != model.dims.vocab_size:  # units and output layer from different runs
            raise ValueError(f"{path}: its unit set has {tok.vocab_size} units but its output layer "
                             f"{model.dims.vocab_size}; the checkpoint is inconsistent (pieced together from "
                             f"different runs?): use the best.pt its training run wrote")
    return model, tok, meta


def run_key(*parts) -> str:
    """A short hash of the configuration of a training run (a changed config never resumes an old run)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def decode_and_score(model: AcousticModel, tokenizer: Tokenizer, store: FeatureStore, utts: list[Utterance],
                     out_dir: str | Path, decode: DecodeConfig, **extra) -> dict:
    """Decode `utts`, write hyp/ref/errors/summary files into out_dir, return the summary (WER/CER in %)."""
    hyps = transcribe(model, store, [u.id for u in utts], tokenizer, decode)
    return write_scores(out_dir, references(utts, tokenizer), hyps, decode=decode.method, **extra)


def train_from_scratch(language: str, data: dict[str, list[Utterance]], out_dir: str | Path, corpus: CorpusConfig,
                       features: FeatureConfig, units: UnitConfig, model_cfg: ModelConfig, train: TrainConfig,
                       train_hours: float | None = None, resume: bool = True) -> Path:
    """Train a model for one language on a budget of its training data; returns the path of best.pt."""
    out_dir = Path(out_dir)
    train_utts = budget(data["train"], train_hours, corpus.seed)
    cache = feature_cache(corpus)
    store = compute_features(train_utts, cache, features, progress=train.progress, desc=f"{language} train feats")
    dev_store = compute_features(data["dev"], cache, features, progress=train.progress, desc=f"{language} dev feats")
    tok_path = out_dir / "tokenizer.json"
    if tok_path.is_file():
        tokenizer = Tokenizer.from_dict(_tok_from_json(read_json(tok_path)))
    else:
        tokenizer = build_tokenizer(train_utts, units)
        write_json(tok_path, _tok_to_json(tokenizer))
    model = new_model(model_cfg, features, tokenizer, store, train_utts, train.seed)
    # how a run is executed (threads, progress bar, device) does not change what it computes: not in the key
    how = {"threads", "progress", "device"}
    key = run_key("scratch", language, [u.id for u in train_utts], to_dict(features), to_dict(units),
                  to_dict(model_cfg), {k: v for k, v in to_dict(train).items() if k not in how})
    fit(model, make_examples(train_utts, store, tokenizer), store, train, out_dir,
        evaluate=make_evaluator(dev_store, data["dev"], tokenizer), select=("dev_wer", "min"),
        specaug=features, meta=checkpoint_meta(model, tokenizer, features, language=language,
                                               train_hours=train_hours), run_key=key, resume=resume)
    return out_dir / "best.pt"


def _tok_to_json(tok: Tokenizer) -> dict:
    d = tok.to_dict()
    d["spm_model"] = d["spm_model"].hex() if d["spm_model"] else None
    return d


def _tok_from_json(d: dict) -> dict:
    return {**d, "spm_model": bytes.fromhex(d["spm_model"]) if d.get("spm_model") else None}
