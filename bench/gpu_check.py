"""GPU check: the CUDA path on one GPU, then the base preset trained for a few hundred steps; under 5 minutes.

  1. one batch on CPU (float32) and on CUDA (bf16 autocast, pinned memory, non-blocking copies, CUDA CTC): the
     two losses agree to bf16 precision, the head's output is bf16, the gradients are finite
  2. a synthetic corpus (eSpeak NG, one language, 2 h by default), generated once
  3. the `base` preset (12 conformer layers, d_model 256) trained from scratch through the recipe (features,
     bucketed 120 s batches, SpecAugment, dev evaluation each epoch, checkpoints) with train.device=cuda

Prints and writes (results/bench/gpu_check.json/.md) the training speed in audio seconds per wall second per
epoch (fit's own measure: the training loop, not the dev evaluation) and the peak GPU memory.

    bash bench/gpu_check.sh                      # the same as python -m bench.gpu_check
    python -m bench.gpu_check --train-hours 0.5 --epochs 2     # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "gpu_check"
LANGUAGE = "tr"


def cuda_path_check(corpus_dir: Path, device: str = "cuda", preset: str = "base") -> dict:
    """One batch through compute_loss on CPU and on CUDA: what the GPU path changes, and that it is right."""
    import torch

    from xlingual.asr import build_tokenizer, make_examples, new_model
    from xlingual.config import FeatureConfig, ModelConfig, UnitConfig
    from xlingual.corpus import read_manifest
    from xlingual.features import compute_features
    from xlingual.train import collate, compute_loss

    utts = read_manifest(corpus_dir / LANGUAGE / "dev.jsonl")[:16]
    feats = FeatureConfig()
    store = compute_features(utts, corpus_dir / ".features", feats, progress=False)
    tok = build_tokenizer(utts, UnitConfig())
    model = new_model(ModelConfig(preset=preset, dropout=0.0), feats, tok.vocab_size, store, [u.id for u in utts], seed=0)
    examples, _ = make_examples(utts, store, tok)
    losses = {}
    for name, dev in (("cpu", "cpu"), ("cuda", device)):
        dev = torch.device(dev)
        model.to(dev).train()
        dtypes = []
        hook = model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        batch = collate(store, examples, pin=dev.type == "cuda")
        model.zero_grad(set_to_none=True)
        loss = compute_loss(model, batch, dev)
        loss.backward()
        hook.remove()
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
        losses[name] = {"loss": loss.item(), "head_dtype": str(dtypes[0]), "grads_finite": grads_finite,
                        "pinned": bool(batch["feats"].is_pinned()) if dev.type == "cuda" else False}
    rel = abs(losses["cuda"]["loss"] - losses["cpu"]["loss"]) / abs(losses["cpu"]["loss"])
    ok = rel < 0.02 and losses["cuda"]["grads_finite"] and (device == "cpu" or (
        losses["cuda"]["head_dtype"] == "torch.bfloat16" and losses["cuda"]["pinned"]))
    return {**losses, "relative_loss_difference": rel, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--train-hours", type=float, default=2.0, help="synthetic training audio (~60 steps per hour "
                   "per epoch at 120 s batches)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (2 h x 5 epochs: about 300 steps)")
    p.add_argument("--work", default=str(common.WORK_DIR / NAME), help="corpus and run folder")
    p.add_argument("--out", default=None, help="results folder (default results/bench)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more recipe overrides")
    p.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)  # the script's plumbing, on CPU
    args = p.parse_args(argv)

    import torch

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; nothing to check", file=sys.stderr)
        return 2
    from data_prep.synthetic import prepare_synthetic
    from xlingual.config import RecipeConfig, load_config
    from xlingual.fileio import read_json
    from xlingual.recipe import run_recipe

    head = common.header(f"bench.{NAME}", argv)
    head["gpu"] = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                   "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                   "bf16": torch.cuda.is_bf16_supported()} if device == "cuda" else {"name": "none (CPU smoke run)"}
    work = Path(args.work)
    corpus_dir = work / "data"
    t0 = time.perf_counter()
    prepare_synthetic(corpus_dir, languages=(LANGUAGE,), overwrite=False, jobs=max(1, (os.cpu_count() or 2) // 2),
                      hours={"train": args.train_hours, "dev": 0.05, "test": 0.05}, progress=False)
    corpus_s = time.perf_counter() - t0
    check = cuda_path_check(corpus_dir, device, "tiny" if args.cpu_smoke else "base")
    print(f"CUDA path: loss cpu {check['cpu']['loss']:.4f} vs cuda {check['cuda']['loss']:.4f} "
          f"(relative {check['relative_loss_difference']:.2e}), head {check['cuda']['head_dtype']}, pinned "
          f"{check['cuda']['pinned']}, gradients finite {check['cuda']['grads_finite']}: "
          f"{'OK' if check['ok'] else 'FAILED'}", flush=True)

    out_dir = work / "run"
    sets = [f"language={LANGUAGE}", f"corpus.dir={corpus_dir}", f"corpus.train_hours={args.train_hours}",
            f"out_dir={out_dir}", "model.preset=base", f"train.device={device}", f"train.epochs={args.epochs}",
            "train.max_batch_seconds=120", "train.warmup_steps=50", "train.progress=false", *args.set]
    cfg = load_config(RecipeConfig, common.REPO / "recipes" / "synthetic" / "asr.yaml", sets)
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run: the figures are of training, not of resuming
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = run_recipe(cfg, stage=1, stop_stage=2)
    recipe_s = time.perf_counter() - t0
    history = read_json(out_dir / "done.json")["history"]
    speeds = [h["audio_sec_per_sec"] for h in history]
    steady = speeds[1:] or speeds  # the first epoch includes CUDA start-up and kernel selection
    res = {"cuda_path": check, "corpus_seconds": corpus_s, "recipe_seconds": recipe_s,
           "train_hours": args.train_hours, "epochs": len(history), "steps": history[-1]["step"],
           "audio_sec_per_sec_per_epoch": speeds, "audio_sec_per_sec_median": statistics.median(steady),
           "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else 0.0,
           "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2 ** 30 if device == "cuda" else 0.0,
           "train_loss": [h["train_loss"] for h in history], "dev_wer": [h.get("dev_wer") for h in history],
           "test": results["test"], "overrides": sets}
    print(f"base preset, {res['steps']} steps: {res['audio_sec_per_sec_median']:.0f} audio-s/s (median of epochs "
          f"2..{len(history)}; per epoch {speeds}), peak GPU memory {res['peak_gpu_memory_gb']:.1f} GB "
          f"allocated ({res['peak_gpu_reserved_gb']:.1f} GB reserved); train loss {res['train_loss'][0]:.1f} -> "
          f"{res['train_loss'][-1]:.1f}; recipe {recipe_s:.0f} s", flush=True)
    md = common.md_table(["GPU", "steps", "audio-s/s (median)", "peak GPU GB", "CUDA path", "recipe s"],
                         [[head["gpu"]["name"], res["steps"], res["audio_sec_per_sec_median"],
                           res["peak_gpu_memory_gb"], "OK" if check["ok"] else "FAILED", recipe_s]])
    common.write_results(NAME, head, res, md, args.out, "GPU check: base preset on the synthetic corpus")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
