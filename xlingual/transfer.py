"""Cross-lingual transfer: initialize from a source-language checkpoint, adapt to a target language.

`adapt` is the whole step, in order:
  1. load the source model (with its CMVN statistics, which are kept: the body was trained on features
     normalized that way, and the target's small budget would give noisier statistics anyway);
  2. choose the target's units: the source's, and so its output layer, when the unit set is shared (IPA phones,
     or the same language) and covers every target unit; otherwise the target's own units and a new output layer;
  3. optionally transfer only the bottom k conformer layers (the rest re-initialized);
  4. optionally add adaptation layers (residual adapters, LHUC, a linear input network);
  5. train with a freezing plan (head / full / adaptation / chain-thaw / gradual unfreezing), discriminative
     learning rates and, by default, the slanted triangular LR — all from schedules.py, applied by train.fit.

`run_adapt` wraps it for `xlingual adapt`: data, adaptation, decoding of dev and test, results.json.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .adapters import adaptation_parameters, add_adaptation
from .asr import (build_tokenizer, budget, checkpoint_meta, decode_and_score, feature_cache, load_language, load_model,
                  make_evaluator, make_examples, run_key)
from .config import AdaptConfig, AdaptRecipeConfig, CorpusConfig, FeatureConfig, UnitConfig, from_dict, to_dict
from .corpus import Utterance
from .features import compute_features
from .fileio import exclusive_lock, locked, read_json, write_json, write_text
from .schedules import (ADAPTATION, MODES, apply_trainable, named_groups, new_groups_after_reinit, param_groups,
                        plan_for, trainable_at)
from .tokenizer import WORD_SEP, Tokenizer
from .train import fit

SHARED_UNIT_KINDS = ("ipa",)  # unit kinds that mean the same thing in every language
FEATURE_KEYS = ("n_mels", "win_ms", "hop_ms")  # what the cached features depend on (SpecAugment may differ)
RUNTIME_TRAIN_KEYS = ("progress", "threads")  # how a run is executed, not what it computes: not in its run key


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


def file_digest(path: str | Path) -> str:
    """Content hash of a file (a source checkpoint): a retrained source never resumes an old adaptation."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _key_train(cfg: AdaptConfig) -> dict:
    d = to_dict(cfg)
    for k in RUNTIME_TRAIN_KEYS:
        d["train"].pop(k, None)
    return d


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
    model, tok, meta = load_model(source_ckpt)
    if meta.get("task", "asr") != "asr" or tok is None:
        raise ValueError(f"{source_ckpt} is a {meta.get('task')!r} checkpoint without ASR units; adapt needs a "
                         f"speech recognizer (best.pt of `xlingual recipe` or of a matrix source)")
    if (meta.get("adaptation") or {}).get("kinds") and cfg.adaptation:
        raise ValueError(f"{source_ckpt} already has adaptation layers {meta['adaptation']['kinds']}; adapt from "
                         f"its base checkpoint, or leave adapt.adaptation empty")
    feats = check_features(meta.get("features") or {}, features, str(source_ckpt))
    check_adapt_config(cfg, model.dims.n_layers)
    return model, tok, meta, feats


@locked("out_dir")  # one run per folder (matrix cells and `xlingual adapt` both come through here)
def adapt(source_ckpt: str | Path, language: str, data: dict[str, list[Utterance]], out_dir: str | Path,
          cfg: AdaptConfig, corpus: CorpusConfig, units: UnitConfig, features: FeatureConfig | None = None,
          train_hours: float | None = None) -> Path:
    """Adapt the model in `source_ckpt` to `language`; returns the path of the adapted best.pt.

    Args:
        data: the target's {"train", "dev", "test"} utterances (asr.load_language).
        cfg: mode, transferred layers, adaptation layers, discriminative LR decay, the fine-tuning run.
        corpus: where the feature cache lives, and the seed of the budget subset.
        units: the target's unit kind (its own units, unless the source's are shared and kept).
        features: None = the checkpoint's; otherwise must compute the same features (SpecAugment may differ).
        train_hours: the target training budget (nested subset of data["train"]); None = all.
    Outputs in out_dir: best.pt / last.pt / train_log.jsonl / done.json (train.fit), tokenizer.json, adapt.json.
    Resumable: a killed run continues from last.pt; a finished one returns at once.
    Raises:
        FileNotFoundError: no checkpoint at source_ckpt.
        ValueError: not an xlingual ASR checkpoint, a feature mismatch, an invalid mode/k/adaptation setting, or a
            shared unit set that lacks target units.
    """
    source_ckpt, out_dir = Path(source_ckpt), Path(out_dir)
    model, source_tok, meta, feats = load_source(source_ckpt, cfg, features)
    n_layers = model.dims.n_layers

    train_utts = budget(data["train"], train_hours, corpus.seed)
    if not train_utts:
        raise ValueError(f"no {language!r} training utterances (budget {train_hours} h); check the manifest")
    cache = feature_cache(corpus)
    progress = cfg.train.progress
    store = compute_features(train_utts, cache, feats, progress=progress, desc=f"{language} train feats")
    dev_store = compute_features(data["dev"], cache, feats, progress=progress, desc=f"{language} dev feats")

    source_digest = file_digest(source_ckpt)
    key = run_key("adapt", language, [u.id for u in train_utts], source_digest, to_dict(units), to_dict(feats),
                  _key_train(cfg))
    # The unit set is fixed at the first start and reloaded on resume, so a resumed run uses the same units.
    tok_path = out_dir / "tokenizer.json"
    if tok_path.is_file() and read_json(tok_path).get("run_key") == key:
        saved = read_json(tok_path)
        spm = saved["spm_model"]
        tokenizer = Tokenizer.from_dict({**saved, "spm_model": bytes.fromhex(spm) if spm else None})
        kept = saved["kept_head"]
    else:
        tokenizer, kept = choose_units(source_tok, meta.get("language"), language, train_utts, units,
                                       cfg.keep_head_if_shared)
        d = tokenizer.to_dict()
        write_json(tok_path, {**d, "spm_model": d["spm_model"].hex() if d["spm_model"] else None, "kept_head": kept,
                              "run_key": key})

    import torch

    torch.manual_seed(cfg.train.seed)  # the new head's initialization is part of the run's configuration
    if not kept:
        model.replace_head(tokenizer.vocab_size)
    k = cfg.transfer_layers
    names = [n for n, _ in model.layer_groups()]
    new = None
    if k is not None and k < n_layers:
        model.reinit_layers_from(k, seed=cfg.train.seed)
        new = new_groups_after_reinit(names, k)  # the fresh layers learn with the head from the start
    elif not kept:
        new = [names[-1]]  # explicit, so that mode "adaptation" trains the new head too
    if cfg.adaptation:
        add_adaptation(model, cfg.adaptation, cfg.bottleneck)

    plan = plan_for(cfg.mode, names, cfg.train.epochs, cfg.stage_epochs, new)
    extra = {ADAPTATION: adaptation_parameters(model)} if cfg.adaptation else None
    groups = param_groups(model, cfg.train.lr, cfg.lr_decay, extra=extra)
    by_name = named_groups(model)

    def on_epoch_start(epoch: int) -> None:
        apply_trainable(model, by_name, trainable_at(plan, epoch))

    run_meta = checkpoint_meta(model, tokenizer, feats, language=language, train_hours=train_hours,
                               source={"checkpoint": str(source_ckpt), "digest": source_digest,
                                       "language": meta.get("language"), "train_hours": meta.get("train_hours")},
                               adapt=to_dict(cfg), kept_head=kept)
    write_json(out_dir / "adapt.json", {"source": run_meta["source"], "language": language, "train_hours": train_hours,
                                        "kept_head": kept, "new_groups": new,
                                        "plan": [[sorted(g), n] for g, n in plan], "adapt": to_dict(cfg)})
    fit(model, make_examples(train_utts, store, tokenizer), store, cfg.train, out_dir,
        evaluate=make_evaluator(dev_store, data["dev"], tokenizer), select=("dev_wer", "min"),
        param_groups=groups, on_epoch_start=on_epoch_start, specaug=feats, meta=run_meta, run_key=key)
    return out_dir / "best.pt"


def run_adapt(cfg: AdaptRecipeConfig, source_ckpt: str | Path) -> dict:
    """`xlingual adapt`: adapt, then decode and score dev and test; writes and returns results.json's content.

    Raises:
        fileio.LockError: another run is writing cfg.out_dir.
    """
    t0 = time.time()
    load_source(source_ckpt, cfg.adapt, cfg.features)  # fail on a wrong checkpoint before writing anything
    with exclusive_lock(cfg.out_dir):  # held through adapt() (re-entrant) until results.json is written
        return _run_adapt(cfg, source_ckpt, t0)


def _run_adapt(cfg: AdaptRecipeConfig, source_ckpt: str | Path, t0: float) -> dict:
    import yaml

    out = Path(cfg.out_dir)
    write_text(out / "config.yaml", yaml.safe_dump({"source_checkpoint": str(source_ckpt), **to_dict(cfg)},
                                                   sort_keys=False, allow_unicode=True))
    progress = cfg.adapt.train.progress
    data = load_language(cfg.corpus, cfg.language, progress)
    best = adapt(source_ckpt, cfg.language, data, out, cfg.adapt, cfg.corpus, cfg.units, cfg.features,
                 cfg.train_hours)
    model, tok, meta = load_model(best)
    feats = from_dict(FeatureConfig, meta["features"])
    results = {"language": cfg.language, "train_hours": cfg.train_hours, "source": meta.get("source"),
               "mode": cfg.adapt.mode, "transfer_layers": cfg.adapt.transfer_layers,
               "adaptation": cfg.adapt.adaptation, "kept_head": meta.get("kept_head")}
    for split in ("dev", "test"):
        store = compute_features(data[split], feature_cache(cfg.corpus), feats, progress=progress)
        summary = decode_and_score(model, tok, store, data[split], out / f"decode_{split}", cfg.decode)
        results[split] = {"wer": round(summary["wer"], 2), "cer": round(summary["cer"], 2),
                          "n_utts": summary["n_utts"]}
    results["wall_seconds"] = round(time.time() - t0, 1)
    write_json(out / "results.json", results)
    return results
