"""Speech recognition pieces of a run: units, training examples, the dev evaluator, a new model, and scoring.

runs.py orchestrates (data -> setup -> train.fit -> evaluate -> results.json); this module says what is ASR-specific:
the unit set fixed at a run's first start, CTC examples (utterances too short for their transcript are left out and
named), dev loss / WER / CER / output length during training, and decoding + scoring of a split afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from .config import DecodeConfig, FeatureConfig, ModelConfig, UnitConfig
from .corpus import Utterance, ctc_feasible
from .decode import greedy_ids, transcribe
from .features import FeatureStore, cache_dir, cmvn_stats, compute_features
from .fileio import read_json, write_json
from .train import Setup
from .model import AcousticModel, dims_from_config, subsampled_lengths
from .score import error_rates, write_scores
from .tokenizer import Tokenizer
from .train import FRAMES_PER_SECOND, Example, bucket_batches, collate, loss_from_logits

log = logging.getLogger(__name__)


def make_examples(utts: list[Utterance], store: FeatureStore, tokenizer: Tokenizer, strict: bool = True,
                  output_lengths: Callable[[torch.Tensor], torch.Tensor] = subsampled_lengths,
                  budget: Callable[[int], int] | None = None) -> tuple[list[Example], list[str]]:
    """(examples, ids left out): each transcript encoded; utterances too short for their transcript (an infinite
    CTC loss that would skip their whole batch every epoch) are left out and returned by id.

    strict=False (dev sets) drops units the model cannot emit, rather than failing on a rare character.
    output_lengths: the model's input frames -> its output frames, on which CTC feasibility is judged (default the
    conformer's subsampling; an SSL model's encoder frames). budget: input frames -> an example's batching length in
    the training loop's 10 ms frames (default: the input frames themselves).
    Raises:
        UnitError naming the utterance when a unit is missing from the unit set (strict).
    """
    examples, infeasible = [], []
    for u in utts:
        ids = tokenizer.encode(tokenizer.to_units(u.text, u.language), where=f"utterance {u.id!r}", strict=strict)
        n = store.num_frames(u.id)
        if ctc_feasible(int(output_lengths(torch.tensor(n))), ids):
            examples.append(Example(u.id, n if budget is None else budget(n), ids))
        else:
            infeasible.append(u.id)
    if infeasible:
        log.warning("%d utterance(s) are too short for their transcripts (CTC needs at least one output frame per "
                    "unit) and are left out: %s%s", len(infeasible), ", ".join(infeasible[:5]),
                    " ..." if len(infeasible) > 5 else "")
    return examples, infeasible


def references(utts: list[Utterance], tokenizer: Tokenizer) -> dict[str, str]:
    """What hypotheses are scored against: the normalized text, or its IPA for phone units."""
    return {u.id: tokenizer.to_units(u.text, u.language) for u in utts}


def make_evaluator(store: FeatureStore, dev: list[Utterance], tokenizer: Tokenizer):
    """model -> {"dev_loss", "dev_wer", "dev_cer", "dev_len_ratio"} on `dev` (greedy decoding).

    dev_len_ratio = hypothesis units / reference units: near 0 for a model that emits (nearly) only blanks.
    dev_loss is over the utterances CTC can align (the others' loss is infinite).
    """
    examples = [Example(u.id, store.num_frames(u.id),
                        tokenizer.encode(tokenizer.to_units(u.text, u.language), strict=False)) for u in dev]
    refs = references(dev, tokenizer)
    frames = [e.frames for e in examples]
    max_frames = max([int(DecodeConfig().max_batch_seconds * FRAMES_PER_SECOND)] + frames)

    def evaluate(model: torch.nn.Module) -> dict:
        # one forward per length-bucketed batch serves both the dev loss and greedy decoding (1.3x faster than
        # two passes, results/bench/optimizations.md)
        device = next(model.parameters()).device
        total, n_loss, hyps = 0.0, 0, {}
        for idx in bucket_batches(frames, max_frames, seed=0, epoch=0):
            batch = collate(store, [examples[i] for i in idx])
            logits, lens = model(batch["feats"].to(device), batch["feat_lens"].to(device))
            ok = [j for j, i in enumerate(idx) if ctc_feasible(int(lens[j]), examples[i].target)]
            if ok:
                targets = [examples[idx[j]].target for j in ok]
                sub = {"ids": ok, "targets": torch.tensor([t for x in targets for t in x], dtype=torch.long),
                       "target_lens": torch.tensor([len(x) for x in targets])}
                total += float(loss_from_logits(logits[ok], lens[ok], sub)) * len(ok)
                n_loss += len(ok)
            for uid, seq in zip(batch["ids"], greedy_ids(logits, lens)):
                hyps[uid] = tokenizer.decode(seq)
        rates = error_rates([refs[k] for k in refs], [hyps[k] for k in refs])
        return {"dev_loss": total / max(n_loss, 1), "dev_wer": rates["wer"], "dev_cer": rates["cer"],
                "dev_len_ratio": len_ratio(refs, hyps)}

    return evaluate


def len_ratio(refs: dict[str, str], hyps: dict[str, str]) -> float:
    """Characters emitted / characters in the references (spaces excluded)."""
    ref = sum(len(r.replace(" ", "")) for r in refs.values())
    return sum(len(hyps.get(k, "").replace(" ", "")) for k in refs) / max(ref, 1)


def build_tokenizer(utts: list[Utterance], units: UnitConfig) -> Tokenizer:
    return Tokenizer.build(units.kind, [(u.text, u.language) for u in utts], units.spm_vocab)


def fixed_tokenizer(out_dir: Path, key: str, build: Callable[[], tuple[Tokenizer, dict]]) -> tuple[Tokenizer, dict]:
    """The run's unit set: built at its first start and saved to tokenizer.json (with extra facts, e.g. whether
    an adapted model kept its head), reloaded when the run resumes under the same key."""
    path = out_dir / "tokenizer.json"
    if path.is_file():
        saved = read_json(path)
        if saved.get("run_key") == key:
            return Tokenizer.from_dict(saved["tokenizer"]), saved.get("extra", {})
    tok, extra = build()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"run_key": key, "tokenizer": tok.to_dict(), "extra": extra})
    return tok, extra


def new_model(model_cfg: ModelConfig, features: FeatureConfig, vocab_size: int, store: FeatureStore,
              ids: list[str], seed: int, embed_dim: int = 0) -> AcousticModel:
    """A freshly initialized model (seeded) with CMVN statistics from the training features of `ids`."""
    torch.manual_seed(seed)
    model = AcousticModel(dims_from_config(model_cfg, features.n_mels, vocab_size, embed_dim))
    model.set_cmvn(*cmvn_stats(store, ids))
    return model


def stores(spec, train: list[Utterance], dev: list[Utterance], features: FeatureConfig):
    """Cached features of a run's training and dev utterances."""
    cache, progress = cache_dir(spec.corpus), spec.train.progress
    return (compute_features(train, cache, features, progress=progress, desc=f"{spec.language} train feats"),
            compute_features(dev, cache, features, progress=progress, desc=f"{spec.language} dev feats"))


def setup_scratch(spec, data: dict, out_dir: Path, key: str) -> Setup:
    """A model from random initialization on the spec's language(s), pooled when there are several."""
    from .checkpoint import model_meta

    features = spec.features or FeatureConfig()
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    store, dev_store = stores(spec, train, dev, features)
    tokenizer, _ = fixed_tokenizer(out_dir, key, lambda: (build_tokenizer(train, spec.units), {}))
    model = new_model(spec.model, features, tokenizer.vocab_size, store, [u.id for u in train], spec.train.seed)
    examples, skipped = make_examples(train, store, tokenizer)
    meta = model_meta(model, "asr", features, tokenizer, language=spec.language, languages=list(spec.languages),
                      train_hours=spec.hours)
    return Setup(model, examples, store, make_evaluator(dev_store, dev, tokenizer), ("dev_cer", "min"), meta,
                 features, skipped=len(skipped))


def evaluate_asr(checkpoint: str | Path, utts: list[Utterance], out_dir: str | Path, corpus,
                 decode: DecodeConfig, progress: bool = False) -> dict:
    """Decode and score `utts` with the checkpoint: {wer, cer, n_utts, len_ratio}; files in out_dir.
    progress: show feature extraction and decoding (a large test set otherwise decodes silently for minutes)."""
    from .checkpoint import load_model
    from .config import from_dict

    model, tok, meta = load_model(checkpoint, task="asr")
    features = from_dict(FeatureConfig, meta["features"], f"{checkpoint}: features")
    store = compute_features(utts, cache_dir(corpus), features, progress=progress)
    summary = decode_and_score(model, tok, store, utts, out_dir, decode, progress=progress)
    return {k: summary[k] for k in ("wer", "cer", "n_utts", "len_ratio")}


def decode_and_score(model: AcousticModel, tokenizer: Tokenizer, store: FeatureStore, utts: list[Utterance],
                     out_dir: str | Path, decode: DecodeConfig, progress: bool = False, **extra) -> dict:
    """Decode `utts`, write hyp/ref/errors/summary files into out_dir, return the summary (WER/CER in %)."""
    hyps = transcribe(model, store, [u.id for u in utts], tokenizer, decode, progress=progress)
    refs = references(utts, tokenizer)
    return write_scores(out_dir, refs, hyps, decode=decode.method, len_ratio=len_ratio(refs, hyps), **extra)
