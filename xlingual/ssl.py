"""Self-supervised speech encoders (wav2vec 2.0, HuBERT, XLS-R, WavLM) as transfer sources, with a CTC head on top:
a run of kind "ssl", and the models it writes.

An SSL source is a local file: a torchaudio encoder's state dict and the builder call that rebuilds it
(ssl_encoder.py: `save_encoder`; `xlingual ssl-save` writes one from a torchaudio bundle such as WAV2VEC2_XLSR_300M, or
from a Hugging Face checkpoint through torchaudio's importer). A run of kind "ssl" (runspec.RunSpec) adapts it to a
target language with the machinery that adapts conformer sources (transfer.py), through the one training loop:

  - the model (ssl_model.py: `SSLModel`): waveform -> convolutional feature extractor, projection and convolutional
    position embedding (group "frontend") -> the bottom `ssl.layers` transformer layers ("layer0".."layer{k-1}"), each
    followed by an adaptation slot (adapters.py: residual adapters, LHUC) -> a new linear CTC head ("head") over the
    target's units. schedules.py's freezing plans (head, full, adaptation, chain-thaw, gradual unfreezing) and
    discriminative LRs act on those groups; the fine-tuning run's schedule (STLR by default) is the adaptation's, as
    for any source.
  - input: the waveform, cached per utterance as rows of WAVE_FRAME samples (10 ms; ssl_cache.py), so that the
    training loop's length-bucketed batches (budgeted in 10 ms frames), the dev evaluator and the decoders run
    unchanged.
  - a frozen encoder (mode "head" without adaptation layers, ssl.cache_features) runs once per utterance and its output
    is cached beside the corpus's filterbanks (ssl_cache.py), keyed by the encoder file's content and the layers kept;
    the run trains the head alone on those features. The cache is per utterance, so every later run adapting from the
    same encoder reuses whatever an earlier one computed: other methods and seeds, nested budgets, pools that contain
    a target already adapted to, and decoding.

This module holds the run (its spec, checks, setup for the training loop, results' source record) and what reads the
adapted model back (loading, the store it reads, decoding and scoring).

Real pretrained weights need a download (README, "Self-supervised encoders"); the tests use a tiny encoder of the same
architecture with random weights.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .adapters import adaptation_parameters, adaptation_spec, add_adaptation
from .asr import build_tokenizer, decode_and_score, fixed_tokenizer, make_evaluator, make_examples
from .checkpoint import CheckpointError, load_checkpoint
from .config import AdaptConfig, DecodeConfig, FeatureConfig, SSLConfig, UnitConfig, from_dict, to_dict
from .corpus import Utterance
from .features import FeatureStore
from .fileio import write_json
from .runspec import RunSpec, file_digest
from .schedules import (ADAPTATION, apply_trainable, named_groups, new_groups_after_reinit, param_groups, plan_for,
                        trainable_at)
from .ssl_cache import encoder_store, waveform_store
from .ssl_encoder import EncoderFile, read_encoder
from .ssl_model import SSLModel, model_from_file
from .tokenizer import Tokenizer
from .train import Setup, pick_device
from .transfer import check_adapt_config

log = logging.getLogger(__name__)


def ssl_spec(source: str | Path, language: str, cfg: AdaptConfig, corpus, units: UnitConfig,
             ssl: SSLConfig | None = None, hours: float | None = None, decode: DecodeConfig | None = None) -> RunSpec:
    """The RunSpec of adapting the SSL encoder file `source` to `language` with method `cfg` (its `train` is the
    run's)."""
    return RunSpec(kind="ssl", languages=[language], hours=hours, corpus=corpus, units=units, train=cfg.train,
                   adapt=cfg, source=str(source), ssl=ssl or SSLConfig(), decode=decode or DecodeConfig())


def uses_cache(cfg: AdaptConfig, ssl: SSLConfig) -> bool:
    """Whether the run trains a head on cached encoder outputs: nothing in the encoder trains or changes."""
    return ssl.cache_features and cfg.mode == "head" and not cfg.adaptation and cfg.transfer_layers is None


def check_source(source: str | Path, cfg: AdaptConfig, ssl: SSLConfig) -> EncoderFile:
    """The SSL source file, read and checked against the adaptation settings, before anything is written.

    Raises:
        FileNotFoundError, IsADirectoryError, CheckpointError: see read_encoder.
        ValueError: ssl.layers beyond the encoder's, a linear input network (it transforms filterbanks; an SSL
            encoder reads the waveform), or adaptation settings that cannot work with the layers kept.
    """
    enc = read_encoder(source)
    k = enc.n_layers if ssl.layers is None else ssl.layers
    if not 1 <= k <= enc.n_layers:
        raise ValueError(f"ssl.layers={ssl.layers}: {source} has {enc.n_layers} transformer layers, so it must be "
                         f"1..{enc.n_layers} (or null for all)")
    if "lin" in cfg.adaptation:
        raise ValueError("adapt.adaptation 'lin' (a linear input network) transforms filterbank features, and an SSL "
                         "encoder reads the waveform; use adapter and/or lhuc")
    check_adapt_config(cfg, k)
    return enc


def setup_ssl(spec: RunSpec, data: dict, out_dir: Path, key: str) -> Setup:
    """The SSL encoder at spec.source with a new CTC head for spec.languages, prepared for the training loop: its
    examples, dev evaluator, parameter groups and freezing plan (see the module docstring).

    Raises:
        see check_source; ValueError on a unit missing from the target's unit set.
    """
    cfg, scfg = spec.adapt, spec.ssl
    enc = check_source(spec.source, cfg, scfg)
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    tokenizer, _ = fixed_tokenizer(out_dir, key, lambda: (build_tokenizer(train, spec.units), {"kept_head": False}))
    k = enc.n_layers if scfg.layers is None else scfg.layers
    cached = uses_cache(cfg, scfg)
    enc_digest = file_digest(spec.source)
    progress = spec.train.progress
    threads = torch.get_num_threads()
    if spec.train.threads:  # extraction shares the machine as training will (parallel matrix-style runs)
        torch.set_num_threads(spec.train.threads)
    if cached:
        device = pick_device(spec.train.device)
        stores = [encoder_store(utts, spec.corpus, enc, enc_digest, k, enc.normalize_waveform, enc.d_model, device,
                                progress, f"{spec.language} {what} encoder outputs")
                  for utts, what in ((train, "train"), (dev, "dev"))]
    else:
        stores = [waveform_store(utts, spec.corpus, progress, f"{spec.language} {what} waveforms")
                  for utts, what in ((train, "train"), (dev, "dev"))]
    torch.set_num_threads(threads)
    # the head's initialization is part of the run's configuration; the same seed gives a cached and an uncached
    # run the same head (it is drawn after the encoder is built)
    model = model_from_file(enc, k, tokenizer.vocab_size, scfg, cached=cached, seed=spec.train.seed)
    store, dev_store = stores
    names = [n for n, _ in model.layer_groups()]
    new = [names[-1]]  # the head is always new: SSL encoders have no output layer for the target's units
    if cfg.transfer_layers is not None and cfg.transfer_layers < k:
        model.reinit_layers_from(cfg.transfer_layers, seed=spec.train.seed)
        new = new_groups_after_reinit(names, cfg.transfer_layers)
    if cfg.adaptation:
        add_adaptation(model, cfg.adaptation, cfg.bottleneck)
    plan = plan_for(cfg.mode, names, spec.train.epochs, cfg.stage_epochs, new)
    if cfg.lr_decay and cfg.lr_decay ** (len(names) - 1) > 1e3 and len(plan[-1][0]) > 1:
        # ULMFiT's 2.6 suits a few layer groups; over a 24-layer encoder it leaves the bottom ones untrained
        log.warning("adapt.lr_decay=%g over %d layer groups gives the frontend 1/%.3g of the head's learning rate; "
                    "for a deep encoder use a decay near 1 (e.g. adapt.lr_decay=1.1) or null", cfg.lr_decay,
                    len(names), cfg.lr_decay ** (len(names) - 1))
    extra = {ADAPTATION: adaptation_parameters(model)} if cfg.adaptation else None
    groups = param_groups(model, spec.train.lr, cfg.lr_decay, extra=extra)
    by_name = named_groups(model)
    frozen_extractor = model.extractor_parameters() if scfg.freeze_extractor else []

    def on_epoch_start(epoch: int) -> None:
        apply_trainable(model, by_name, trainable_at(plan, epoch))
        for p in frozen_extractor:  # in every stage of every plan: AdamW then never touches it
            p.requires_grad_(False)
            p.grad = None

    source = source_record(spec.source, enc, enc_digest)
    info = {"builder": enc.builder, "config": enc.config, "normalize_waveform": enc.normalize_waveform,
            "layers": k, "cached": cached, "frame_samples": model.frame_samples, "source": source,
            "settings": to_dict(scfg)}
    meta = {"toolkit": "xlingual", "version": __version__, "model": "ssl", "task": "asr", "ssl": info,
            "ssl_dims": asdict(model.dims), "tokenizer": tokenizer.to_dict(), "adaptation": adaptation_spec(model),
            "language": spec.language, "languages": list(spec.languages), "train_hours": spec.hours,
            "source": source, "adapt": to_dict(cfg), "kept_head": False}
    write_json(out_dir / "adapt.json", {"source": source, "language": spec.language, "train_hours": spec.hours,
                                        "kept_head": False, "new_groups": new, "cached": cached, "layers": k,
                                        "plan": [[sorted(g), n] for g, n in plan], "adapt": to_dict(cfg),
                                        "ssl": to_dict(scfg)})
    # CTC feasibility on the encoder's output frames; batching lengths in 10 ms frames
    examples, skipped = make_examples(train, store, tokenizer, output_lengths=model.output_lengths,
                                      budget=model.frames_10ms)
    return Setup(model, examples, store, make_evaluator(dev_store, dev, tokenizer), ("dev_cer", "min"), meta,
                 FeatureConfig(specaugment=False),  # SpecAugment masks filterbanks; the encoder masks time itself
                 param_groups=groups, on_epoch_start=on_epoch_start, skipped=len(skipped))


def source_record(path: str | Path, enc: EncoderFile, enc_digest: str | None = None) -> dict:
    """What results.json and the checkpoint say about an SSL source."""
    return {"checkpoint": str(path), "digest": enc_digest or file_digest(path), "name": enc.name,
            "builder": enc.builder, "layers": enc.n_layers, "language": None, "train_hours": None}


def source_info(spec: RunSpec) -> dict:
    """results.json's "source" of an ssl run (runs.execute)."""
    enc = read_encoder(spec.source)
    r = source_record(spec.source, enc)
    return {"checkpoint": r["checkpoint"], "digest": r["digest"], "language": None, "hours": None, "name": r["name"],
            "builder": r["builder"], "layers": r["layers"]}


# ----------------------------------------------------------------------------------------------------------------
# An adapted model: loading, decoding


def load_ssl_model(path: str | Path) -> tuple[SSLModel, Tokenizer, dict]:
    """(model, tokenizer, meta) of a best.pt/last.pt an ssl run wrote; the encoder is rebuilt from the builder
    config the checkpoint records (a cached run's checkpoint holds the head alone).

    Raises:
        CheckpointError: not an adapted SSL model, or weights that do not fit what it records.
    """
    ck = load_checkpoint(path)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if not isinstance(meta, dict) or meta.get("model") != "ssl" or "ssl" not in meta:
        raise CheckpointError(f"{path} is not an adapted SSL model (a best.pt of a run of kind 'ssl')")
    info = meta["ssl"]
    tok = Tokenizer.from_dict(meta["tokenizer"])
    enc = EncoderFile(Path(info["source"]["checkpoint"]), info["builder"], info["config"],
                      bool(info["normalize_waveform"]), info["source"].get("name", ""), {})
    try:
        cfg = from_dict(SSLConfig, info.get("settings", {}), f"{path}: ssl settings")
        model = model_from_file(enc, info["layers"], tok.vocab_size, cfg, load_weights=False, cached=info["cached"])
        spec = meta.get("adaptation") or {}
        if spec.get("kinds"):
            add_adaptation(model, spec["kinds"], spec.get("bottleneck", 32))
        model.load_state_dict(ck["model"])
    except Exception as e:
        raise CheckpointError(f"{path}: its weights do not fit the SSL model it records: {str(e)[:300]}") from None
    return model, tok, meta


def model_store(model: SSLModel, meta: dict, utts: list[Utterance], corpus, device: torch.device | None = None,
                progress: bool = False) -> FeatureStore:
    """The store an adapted model reads: waveform rows, or (cached) its encoder's outputs, computed from the source
    file it records only for utterances not cached yet.

    Raises:
        CheckpointError: a cached model whose encoder outputs are missing and whose source file is gone or changed.
    """
    info = meta["ssl"]
    if not info["cached"]:
        return waveform_store(utts, corpus, progress)
    src = info["source"]

    def read() -> EncoderFile:
        path = Path(src["checkpoint"])
        if not path.is_file() or file_digest(path) != src["digest"]:
            raise CheckpointError(f"this model is a head over the outputs of the SSL encoder {path} (digest "
                                  f"{src['digest']}), which is {'gone' if not path.is_file() else 'changed'} and "
                                  f"not cached for every utterance to decode; put that encoder file back")
        return read_encoder(path)

    return encoder_store(utts, corpus, read, src["digest"], info["layers"], info["normalize_waveform"],
                         model.dims.d_model, device or pick_device("auto"), progress)


def evaluate_ssl(checkpoint: str | Path, utts: list[Utterance], out_dir: str | Path, corpus,
                 decode: DecodeConfig) -> dict:
    """Decode and score `utts` with an adapted SSL model: {wer, cer, n_utts, len_ratio}; files in out_dir."""
    model, tok, meta = load_ssl_model(checkpoint)
    store = model_store(model, meta, utts, corpus)
    summary = decode_and_score(model, tok, store, utts, out_dir, decode)
    return {k: summary[k] for k in ("wer", "cer", "n_utts", "len_ratio")}
