"""Cross-lingual transfer: initialize from a source-language checkpoint, adapt to a target language.

`setup_adapt` prepares one adaptation run for the training loop, in order:
  1. load the source model (with its CMVN statistics, which are kept: the body was trained on features
     normalized that way, and the target's small budget would give noisier statistics anyway);
  2. choose the target's units: the source's, and so its output layer, when the unit set is shared (IPA phones,
     or the same language) and covers every target unit; otherwise the target's own units and a new output layer;
  3. optionally transfer only the bottom k conformer layers (the rest re-initialized);
  4. optionally add adaptation layers (residual adapters, LHUC, a linear input network);
  5. a freezing plan (head / full / adaptation / chain-thaw / gradual unfreezing) and discriminative learning
     rates, applied by the shared training loop with the fine-tuning run's schedule (STLR by default).

`xlingual adapt` (recipe.run_adapt) is one run of kind "adapt" through runs.execute.
"""

from __future__ import annotations

from pathlib import Path

from .adapters import adaptation_parameters, add_adaptation
from .asr import build_tokenizer, fixed_tokenizer, make_evaluator, make_examples, stores
from .checkpoint import CheckpointError, load_model, model_meta
from .config import AdaptConfig, FeatureConfig, UnitConfig, from_dict, to_dict
from .corpus import Utterance
from .fileio import write_json
from .runspec import RunSpec, file_digest
from .schedules import (ADAPTATION, MODES, apply_trainable, named_groups, new_groups_after_reinit, param_groups,
                        plan_for, trainable_at)
from .tokenizer import WORD_SEP, Tokenizer
from .train import Setup

SHARED_UNIT_KINDS = ("ipa",)  # unit kinds that mean the same thing in every language
FEATURE_KEYS = ("n_mels", "win_ms", "hop_ms")  # what the cached features depend on (SpecAugment may differ)


def check_features(source: dict, target: FeatureConfig | None, where: str) -> FeatureConfig:
    """The features to adapt with: the checkpoint's, with the target's SpecAugment settings when it gives any.

    Raises:
        ValueError: the target config computes different features (n_mels, window, hop) than the checkpoint's.
    """
    src = from_dict(FeatureConfig, source, f"{where}: features")
    if target is None:
        return src
    diff = {k: (getattr(src, k), getattr(target, k)) for k in FEATURE_KEYS if getattr(src, k) != getattr(target, k)}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
        raise ValueError(f"{where} was trained on other features than the config asks for ({shown}); remove the "
                         f"features section (the checkpoint's are used) or set it to the checkpoint's values")
    return target


def check_adapt_config(cfg: AdaptConfig, n_layers: int) -> None:
    """Fail early on settings that cannot work with a model of `n_layers` conformer layers."""
    if cfg.mode not in MODES:
        raise ValueError(f"adapt.mode {cfg.mode!r} is unknown; valid modes: {', '.join(MODES)}")
    if cfg.mode in ("adaptation", "full+adaptation") and not cfg.adaptation:
        raise ValueError(f"adapt.mode={cfg.mode} trains adaptation layers, but adapt.adaptation is empty; "
                         f"add e.g. adaptation: [adapter]")
    if cfg.adaptation and cfg.mode not in ("adaptation", "full+adaptation"):
        raise ValueError(f"adapt.adaptation={cfg.adaptation} would stay frozen (the identity) under mode "
                         f"{cfg.mode!r}; use mode adaptation or full+adaptation, or drop the adaptation layers")
    k = cfg.transfer_layers
    if k is not None and not 0 <= k <= n_layers:
        raise ValueError(f"adapt.transfer_layers={k}: the model has {n_layers} conformer layers, so k must be "
                         f"0..{n_layers} (or null for all)")
    if cfg.lr_decay is not None and cfg.lr_decay <= 0:
        raise ValueError(f"adapt.lr_decay must be > 0 or null, got {cfg.lr_decay}")
    names = ["frontend"] + [f"layer{i}" for i in range(n_layers)] + ["head"]
    new = new_groups_after_reinit(names, k) if k is not None and k < n_layers else None
    plan_for(cfg.mode, names, cfg.train.epochs, cfg.stage_epochs, new)  # raises if too few epochs for the stages


def missing_units(tokenizer: Tokenizer, utts: list[Utterance]) -> list[str]:
    """Units of `utts` that `tokenizer` cannot represent (sorted); [] when it covers them all."""
    missing: set[str] = set()
    if tokenizer.kind == "spm":
        known = set("".join(tokenizer.units[2:]))
        for u in utts:
            text = tokenizer.to_units(u.text, u.language)
            if 2 in tokenizer.encode(text):  # piece 0 is <unk>, shifted to id 2
                missing.update(c for c in text if c != " " and c not in known)
        return sorted(missing)
    known = set(tokenizer.units)
    for u in utts:
        missing.update(x for x in tokenizer.split(tokenizer.to_units(u.text, u.language)) if x not in known)
    missing.discard(WORD_SEP)
    return sorted(missing)


def choose_units(source_tok: Tokenizer | None, source_language: str | None, language: str, utts: list[Utterance],
                 units: UnitConfig, keep_if_shared: bool) -> tuple[Tokenizer, bool]:
    """(tokenizer, kept): the source's unit set when it is shared and kept, else one built from `utts`.

    A unit set is shared when source and target use the same kind and that kind is language-independent (IPA),
    or the source is the target language itself.
    Raises:
        ValueError listing the target units a shared unit set lacks (set keep_head_if_shared false to get a new
        output layer instead).
    """
    shared = (source_tok is not None and source_tok.kind == units.kind
              and (units.kind in SHARED_UNIT_KINDS or source_language == language))
    if not (shared and keep_if_shared):
        return build_tokenizer(utts, units), False
    missing = missing_units(source_tok, utts)
    if missing:
        shown = " ".join(missing[:40]) + (" ..." if len(missing) > 40 else "")
        raise ValueError(f"the source's {units.kind} unit set ({source_tok.vocab_size} units, from "
                         f"{source_language!r}) lacks {len(missing)} unit(s) of the {language!r} training data: "
                         f"{shown}; set adapt.keep_head_if_shared=false to train a new output layer for "
                         f"{language!r}'s own units")
    return source_tok, True


def load_source(source_ckpt: str | Path, cfg: AdaptConfig, features: FeatureConfig | None = None):
    """(model, tokenizer, meta, features) of a source checkpoint, checked against the adaptation settings.

    Raises:
        FileNotFoundError: no file at source_ckpt.
        ValueError: not an xlingual ASR checkpoint, other features than `features`, or settings that cannot
            work with this model (mode, k, adaptation layers, too few epochs for a staged plan).
    """
    source_ckpt = Path(source_ckpt)
    if not source_ckpt.is_file():
        raise FileNotFoundError(f"source checkpoint not found: {source_ckpt} (pre-train a source first, e.g. "
                                f"`xlingual recipe`, and pass its best.pt)")
    model, tok, meta = load_model(source_ckpt, task="asr")
    if tok is None:
        raise CheckpointError(f"{source_ckpt} has no ASR units; adapt needs a speech recognizer (best.pt of "
                              f"`xlingual recipe` or of a matrix source)")
    if (meta.get("adaptation") or {}).get("kinds") and cfg.adaptation:
        raise ValueError(f"{source_ckpt} already has adaptation layers {meta['adaptation']['kinds']}; adapt from "
                         f"its base checkpoint, or leave adapt.adaptation empty")
    feats = check_features(meta.get("features") or {}, features, str(source_ckpt))
    check_adapt_config(cfg, model.dims.n_layers)
    return model, tok, meta, feats


def setup_adapt(spec: RunSpec, data: dict, out_dir: Path, key: str) -> Setup:
    """The source model prepared for adaptation to spec.languages[0] (see the module docstring), with its
    examples, dev evaluator, parameter groups and freezing plan.

    Raises:
        FileNotFoundError: no checkpoint at spec.source.
        ValueError: not an xlingual ASR checkpoint, a feature mismatch, an invalid mode/k/adaptation setting, or a
            shared unit set that lacks target units.
    """
    import torch

    cfg, language = spec.adapt, spec.language
    model, source_tok, meta, feats = load_source(spec.source, cfg, spec.features)
    n_layers = model.dims.n_layers
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    store, dev_store = stores(spec, train, dev, feats)
    # the unit set is fixed at the first start and reloaded on resume, so a resumed run uses the same units
    tokenizer, extra = fixed_tokenizer(out_dir, key, lambda: _units(source_tok, meta, language, train, spec.units,
                                                                    cfg.keep_head_if_shared))
    kept = extra["kept_head"]

    torch.manual_seed(spec.train.seed)  # the new head's initialization is part of the run's configuration
    if not kept:
        model.replace_head(tokenizer.vocab_size)
    k = cfg.transfer_layers
    names = [n for n, _ in model.layer_groups()]
    new = None
    if k is not None and k < n_layers:
        model.reinit_layers_from(k, seed=spec.train.seed)
        new = new_groups_after_reinit(names, k)  # the fresh layers learn with the head from the start
    elif not kept:
        new = [names[-1]]  # explicit, so that mode "adaptation" trains the new head too
    if cfg.adaptation:
        add_adaptation(model, cfg.adaptation, cfg.bottleneck)

    plan = plan_for(cfg.mode, names, spec.train.epochs, cfg.stage_epochs, new)
    extra_groups = {ADAPTATION: adaptation_parameters(model)} if cfg.adaptation else None
    groups = param_groups(model, spec.train.lr, cfg.lr_decay, extra=extra_groups)
    by_name = named_groups(model)

    def on_epoch_start(epoch: int) -> None:
        apply_trainable(model, by_name, trainable_at(plan, epoch))

    source = {"checkpoint": str(spec.source), "digest": file_digest(spec.source), "language": meta.get("language"),
              "train_hours": meta.get("train_hours")}
    run_meta = model_meta(model, "asr", feats, tokenizer, language=language, languages=list(spec.languages),
                          train_hours=spec.hours, source=source, adapt=to_dict(cfg), kept_head=kept)
    write_json(out_dir / "adapt.json", {"source": source, "language": language, "train_hours": spec.hours,
                                        "kept_head": kept, "new_groups": new,
                                        "plan": [[sorted(g), n] for g, n in plan], "adapt": to_dict(cfg)})
    examples, skipped = make_examples(train, store, tokenizer)
    return Setup(model, examples, store, make_evaluator(dev_store, dev, tokenizer), ("dev_cer", "min"), run_meta,
                 feats, param_groups=groups, on_epoch_start=on_epoch_start, skipped=len(skipped))


def _units(source_tok, meta: dict, language: str, train: list[Utterance], units: UnitConfig,
           keep_if_shared: bool) -> tuple[Tokenizer, dict]:
    tok, kept = choose_units(source_tok, meta.get("language"), language, train, units, keep_if_shared)
    return tok, {"kept_head": kept}
