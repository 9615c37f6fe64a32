"""`xlingual <verb>`: thin argument parsing over the Python API."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _recipe(args) -> None:
    from .config import RecipeConfig, load_config
    from .recipe import run_recipe

    cfg = load_config(RecipeConfig, args.config, args.set)
    results = run_recipe(cfg, args.stage, args.stop_stage)
    if results:
        print(json.dumps(results, indent=2, ensure_ascii=False))


def _prepare_synthetic(args) -> None:
    from data_prep.synthetic import prepare_synthetic

    paths = prepare_synthetic(args.out, languages=tuple(args.languages), seed=args.seed,
                              hours={"train": args.train_hours, "dev": args.dev_hours, "test": args.test_hours},
                              noise_snr=args.noise_snr, telephone=args.telephone, jobs=args.jobs)
    print(json.dumps({k: {s: str(p) for s, p in v.items()} for k, v in paths.items()}, indent=2))


def _decode(args) -> None:
    from pathlib import Path

    from .asr import decode_and_score, load_model
    from .config import DecodeConfig, FeatureConfig, from_dict
    from .corpus import read_manifest
    from .features import compute_features

    model, tok, meta = load_model(args.checkpoint)
    utts = read_manifest(args.manifest)
    feats = from_dict(FeatureConfig, meta["features"])
    cache = Path(args.manifest).parent / ".features"
    store = compute_features(utts, cache, feats)
    summary = decode_and_score(model, tok, store, utts, args.out, DecodeConfig(method=args.method,
                                                                               beam_size=args.beam_size))
    print(json.dumps(summary, indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlingual", description="Cross-lingual transfer for low-resource ASR.")
    p.add_argument("--version", action="version", version=f"xlingual {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    r = sub.add_parser("recipe", help="one language end to end: prepare, train from scratch, decode, score")
    r.add_argument("config", nargs="?", help="YAML delta over xlingual.config.RecipeConfig")
    r.add_argument("--stage", type=int, default=0, help="first stage (0 prepare, 1 train, 2 score)")
    r.add_argument("--stop-stage", type=int, default=2, help="last stage")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    r.set_defaults(func=_recipe)

    prep = sub.add_parser("prepare", help="prepare a corpus into manifests")
    psub = prep.add_subparsers(dest="corpus", required=True)
    s = psub.add_parser("synthetic", help="generate the embedded multilingual corpus with eSpeak NG")
    s.add_argument("--out", default="data/synthetic")
    s.add_argument("--languages", nargs="+", default=["bn", "as", "th", "tr"])
    s.add_argument("--train-hours", type=float, default=0.5)
    s.add_argument("--dev-hours", type=float, default=0.05)
    s.add_argument("--test-hours", type=float, default=0.05)
    s.add_argument("--noise-snr", type=float, default=None)
    s.add_argument("--telephone", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--jobs", type=int, default=2)
    s.set_defaults(func=_prepare_synthetic)

    d = sub.add_parser("decode", help="decode and score a manifest with a checkpoint")
    d.add_argument("checkpoint")
    d.add_argument("manifest")
    d.add_argument("--out", required=True)
    d.add_argument("--method", choices=["greedy", "beam"], default="greedy")
    d.add_argument("--beam-size", type=int, default=16)
    d.set_defaults(func=_decode)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        # our errors carry file/line/utterance and the fix: show them without a traceback
        print(f"xlingual {args.verb}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
