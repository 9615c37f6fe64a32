"""Training throughput through the real pipeline against the model alone, in audio seconds per wall second.

Three ways of spending one epoch of the same training audio, interleaved round-robin so that the machine's load
hits all of them alike:

  pipeline    xlingual.train.fit for one epoch: cached features (memmap) -> bucketed batches -> collate ->
              SpecAugment -> forward/CTC -> backward -> clip -> AdamW, exactly as a recipe trains. fit's own
              epoch_seconds (the training loop) is the figure; the whole call, which adds the real dev evaluation
              (CTC loss + greedy decoding + WER on dev audio = 5% of the training audio, as in the recipes) and
              the checkpoint writes, is reported beside it.
  model_only  the same batches (same shapes, same order), collated and augmented once beforehand and held in
              memory: forward/CTC -> backward -> clip -> AdamW only.
  fixed_4s    the model on fixed 4-second batches of the same batch duration (no padding, one shape): its
              best-case "fixed-shape" speed, the kind of figure quoted for a model measured without a pipeline.

pipeline / model_only is the data pipeline's efficiency (goal >= 0.85); model_only / fixed_4s is what padding and
varying shapes cost the model itself. A timed breakdown (collate, feature reads, SpecAugment, forward, backward,
clip, optimizer, other) and a cProfile of one pipeline epoch show where the rest goes.

    python -m bench.train_throughput                 # tiny and small presets, 0.25 h, 5 repeats
    python -m bench.train_throughput --quick         # smoke run, about a minute

Candidate changes (--candidates bf16 contiguous_convs) are timed in the real pipeline too, as extra interleaved
modes, so that a proposed optimization comes with its before/after from the same run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from xlingual import features as features_mod
from xlingual import train as train_mod
from xlingual.asr import build_tokenizer, make_evaluator, make_examples, new_model
from xlingual.config import FeatureConfig, ModelConfig, TrainConfig, UnitConfig
from xlingual.features import compute_features
from xlingual.train import FRAMES_PER_SECOND, bucket_batches, collate, fit, spec_augment

NAME = "train_throughput"
CPU = torch.device("cpu")
FIXED_SECONDS = 4.0  # utterance length of the fixed-shape reference batches
DEV_PER_TRAIN = 0.05  # dev audio per training audio, as in the recipes (0.05 h dev per 1 h train)


# ---------------------------------------------------------------------------------------------------------------
# The three ways to run an epoch


def make_cfg(batch_seconds: float, threads: int) -> TrainConfig:
    # checkpoint_every_steps keeps its default: a real run writes those checkpoints too
    return TrainConfig(epochs=1, max_batch_seconds=batch_seconds, progress=False, threads=threads, device="cpu")


def no_eval(model) -> dict:
    return {"dev_wer": 0.0}


def pipeline_epoch(model, examples, store, cfg: TrainConfig, feats: FeatureConfig, work: Path,
                   evaluate=no_eval) -> tuple[float, float]:
    """One epoch of the real fit(); returns (fit's own epoch_seconds, wall seconds of the whole call, which adds
    the dev evaluation and the checkpoint writes)."""
    out = Path(tempfile.mkdtemp(prefix="fit-", dir=work))
    try:
        t0 = time.perf_counter()
        history = fit(model, examples, store, cfg, out, evaluate=evaluate, specaug=feats, run_key="bench")
        call = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return history[0]["epoch_seconds"], call


def premade_batches(examples, store, cfg: TrainConfig, feats: FeatureConfig) -> list[dict]:
    """The batches fit() builds in epoch 0, in its order, with its SpecAugment masks (same seeds)."""
    frames = [e.frames for e in examples]
    batches = []
    for step, idx in enumerate(bucket_batches(frames, int(cfg.max_batch_seconds * FRAMES_PER_SECOND), cfg.seed, 0)):
        batch = collate(store, [examples[i] for i in idx])
        if feats.specaugment:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], feats, gen)
        batches.append(batch)
    return batches


def fixed_batches(like: list[dict], n_mels: int, seed: int = 0) -> list[dict]:
    """Batches of FIXED_SECONDS utterances holding the same audio per batch as `like` (and as many of them)."""
    g = torch.Generator().manual_seed(seed)
    t = int(FIXED_SECONDS * FRAMES_PER_SECOND)
    audio = sum(int(b["feat_lens"].sum()) for b in like)
    units = sum(int(b["target_lens"].sum()) for b in like)
    per_frame = units / max(audio, 1)
    b = max(1, round(audio / len(like) / t))
    label_len = max(1, min(round(per_frame * t), t // 4 - 1))  # CTC needs a label no longer than T/4
    vocab = int(max(int(x["targets"].max()) for x in like)) + 1
    out = []
    for _ in like:
        out.append({"ids": [f"fixed{i}" for i in range(b)], "feats": torch.randn(b, t, n_mels, generator=g),
                    "feat_lens": torch.full((b,), t),
                    "targets": torch.randint(1, max(vocab, 2), (b * label_len,), generator=g),
                    "target_lens": torch.full((b,), label_len)})
    return out


def model_epoch(model, batches: list[dict], cfg: TrainConfig) -> float:
    """Seconds for the model part of fit's step on ready batches: forward/loss, backward, clip, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    model.train()
    t0 = time.perf_counter()
    for batch in batches:
        loss = train_mod.compute_loss(model, batch, CPU)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loss.item()
    return time.perf_counter() - t0


def padding_stats(batches: list[dict]) -> dict:
    real = sum(int(b["feat_lens"].sum()) for b in batches)
    padded = sum(b["feats"].shape[0] * b["feats"].shape[1] for b in batches)
    sizes = [b["feats"].shape[0] for b in batches]
    return {"batches": len(batches), "audio_seconds": real / FRAMES_PER_SECOND, "padding_fraction": 1 - real / padded,
            "mean_batch_size": sum(sizes) / len(sizes), "distinct_lengths": len({b["feats"].shape[1] for b in batches})}


# ---------------------------------------------------------------------------------------------------------------
# Where the time goes


@contextmanager
def instrumented(times: dict[str, float]):
    """Accumulate seconds spent in each stage of a training step into `times`, by wrapping the functions fit()
    calls (module attributes, so the real code path is unchanged). Overhead: two perf_counter calls per call."""
    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    saved = [(train_mod, "collate", train_mod.collate), (train_mod, "spec_augment", train_mod.spec_augment),
             (train_mod, "compute_loss", train_mod.compute_loss),
             (features_mod.FeatureStore, "__getitem__", features_mod.FeatureStore.__getitem__),
             (torch.Tensor, "backward", torch.Tensor.backward),
             (torch.nn.utils, "clip_grad_norm_", torch.nn.utils.clip_grad_norm_)]
    names = {"collate": "collate", "spec_augment": "spec_augment", "compute_loss": "forward+loss",
             "__getitem__": "feature reads (in collate)", "backward": "backward", "clip_grad_norm_": "clip"}
    start: dict[int, float] = {}

    def pre(opt, args, kwargs):
        start[id(opt)] = time.perf_counter()

    def post(opt, args, kwargs):
        times["optimizer"] = times.get("optimizer", 0.0) + time.perf_counter() - start.pop(id(opt))

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    for owner, attr, fn in saved:
        setattr(owner, attr, timed(names[attr], fn))
    try:
        yield times
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
        for h in handles:
            h.remove()


# Proposed changes, applied around a pipeline epoch without editing xlingual, timed against the plain pipeline
CANDIDATES = ("bf16", "contiguous_convs")


@contextmanager
def candidate(name: str, model):
    """bf16: compute_loss under CPU bf16 autocast (AMX/AVX512-bf16 matmuls; fit() enables autocast on CUDA only).
    contiguous_convs: the convolutional subsampling back in contiguous memory format, the layout before the model
    shipped channels-last (a speed-up below 1 is what channels-last gains)."""
    if name == "bf16":
        # the model's forward, not compute_loss: compute_loss opens autocast(enabled=False) on CPU, which would
        # switch an outer autocast off; this is what enabling it there for CPU would do
        def forward(*a, **k):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return type(model).forward(model, *a, **k)

        model.forward = forward
        try:
            yield
        finally:
            del model.forward
    elif name == "contiguous_convs":
        model.frontend.to(memory_format=torch.contiguous_format)
        try:
            yield
        finally:
            model.frontend.to(memory_format=torch.channels_last)
    else:
        raise ValueError(f"unknown candidate {name!r}; choose from {CANDIDATES}")


TOP_LEVEL = ("collate", "spec_augment", "forward+loss", "backward", "clip", "optimizer")


def breakdown(model, examples, store, cfg, feats, batches, work) -> dict:
    """Per-stage seconds of one pipeline epoch and one model-only epoch (same batches)."""
    pipe: dict[str, float] = {}
    with instrumented(pipe):
        loop, _ = pipeline_epoch(model, examples, store, cfg, feats, work)
    only: dict[str, float] = {}
    with instrumented(only):
        only_total = model_epoch(model, batches, cfg)
    pipe["total"], only["total"] = loop, only_total
    for d in (pipe, only):
        d["other"] = d["total"] - sum(d.get(k, 0.0) for k in TOP_LEVEL)
    return {"pipeline": pipe, "model_only": only}


def profile_epoch(model, examples, store, cfg, feats, work, top: int = 15) -> list[dict]:
    """cProfile of one pipeline epoch: the `top` functions by own time (profiling inflates Python-heavy code)."""
    prof = cProfile.Profile()
    prof.enable()
    pipeline_epoch(model, examples, store, cfg, feats, work)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
        where = fn if file == "~" else f"{Path(file).name}:{line}({fn})"
        rows.append({"function": where, "calls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:top]


# ---------------------------------------------------------------------------------------------------------------


def measure_preset(preset: str, utts, dev, args, work: Path) -> dict:
    feats = FeatureConfig()
    t0 = time.perf_counter()
    store = compute_features(utts, work / "features", feats, progress=False)
    feature_seconds = time.perf_counter() - t0
    tok = build_tokenizer(utts, UnitConfig())
    # the real per-epoch dev evaluation (CTC loss + greedy decoding + WER), on the recipes' dev/train ratio
    evaluate = make_evaluator(compute_features(dev, work / "features", feats, progress=False), dev, tok)
    examples, _ = make_examples(utts, store, tok)
    model = new_model(ModelConfig(preset=preset), feats, tok.vocab_size, store, [u.id for u in utts], seed=0)
    cfg = make_cfg(args.batch_seconds, args.threads)
    batches = premade_batches(examples, store, cfg, feats)
    fixed = fixed_batches(batches, feats.n_mels)
    pad = padding_stats(batches)
    audio = pad["audio_seconds"]
    fixed_audio = sum(int(b["feat_lens"].sum()) for b in fixed) / FRAMES_PER_SECOND
    calls: list[float] = []

    def pipe():
        loop, call = pipeline_epoch(model, examples, store, cfg, feats, work, evaluate)
        calls.append(call)
        return loop

    def with_candidate(name):
        def run():
            with candidate(name, model):
                return pipeline_epoch(model, examples, store, cfg, feats, work, evaluate)[0]
        return run

    modes = {"pipeline": pipe, "model_only": lambda: model_epoch(model, batches, cfg),
             "fixed_4s": lambda: model_epoch(model, fixed, cfg)}
    modes.update({f"pipeline+{c}": with_candidate(c) for c in args.candidates})
    shares: dict[str, list[float]] = {}
    times = common.interleaved(modes, repeats=args.repeats, warmup=1, cpu_share=shares)
    calls = calls[1:]  # drop the warm-up round, as interleaved() does
    rate = {"pipeline": [audio / s for s in times["pipeline"]], "pipeline_call": [audio / s for s in calls],
            "model_only": [audio / s for s in times["model_only"]],
            "fixed_4s": [fixed_audio / s for s in times["fixed_4s"]]}
    rate.update({f"pipeline+{c}": [audio / s for s in times[f"pipeline+{c}"]] for c in args.candidates})
    result = {
        "preset": preset, "params": sum(p.numel() for p in model.parameters()),
        "audio_seconds_per_epoch": audio, "steps_per_epoch": len(batches), "padding": pad,
        "feature_cache_seconds": feature_seconds, "epoch_seconds": {k: common.stats(v) for k, v in times.items()},
        "cpu_share": {k: common.stats(v) for k, v in shares.items()},
        "audio_sec_per_sec": {k: common.stats(v) for k, v in rate.items()},
        # ratios of the same round: the machine's load affects both sides alike
        "pipeline_over_model_only": common.stats(common.ratios(times["model_only"], times["pipeline"])),
        "pipeline_call_over_model_only": common.stats(common.ratios(times["model_only"], calls)),
        "model_only_over_fixed_4s": common.stats([(audio / a) / (fixed_audio / b) for a, b in
                                                  zip(times["model_only"], times["fixed_4s"])]),
        # speed-up of each candidate over the plain pipeline, per round
        "candidate_speedup": {c: common.stats(common.ratios(times["pipeline"], times[f"pipeline+{c}"]))
                              for c in args.candidates},
    }
    if not args.no_profile:
        result["breakdown_seconds"] = breakdown(model, examples, store, cfg, feats, batches, work)
        result["cprofile_top"] = profile_epoch(model, examples, store, cfg, feats, work)
    return result


def markdown(results: dict) -> str:
    def spread(st):
        return f"{common.fmt(st['median'])} ({common.fmt(st['min'])}..{common.fmt(st['max'])})"

    rows = []
    for r in results["presets"]:
        a = r["audio_sec_per_sec"]
        rows.append([r["preset"], f"{r['params'] / 1e6:.2f}M", r["steps_per_epoch"],
                     r["padding"]["padding_fraction"], a["pipeline"]["median"], a["pipeline_call"]["median"],
                     a["model_only"]["median"], a["fixed_4s"]["median"], spread(r["pipeline_over_model_only"]),
                     r["pipeline_call_over_model_only"]["median"], r["model_only_over_fixed_4s"]["median"],
                     r["cpu_share"]["pipeline"]["median"]])
    s = results["setup"]
    text = (f"{s['hours']} h of training audio ({', '.join(s['languages'])}), batches of <= {s['batch_seconds']} s, "
            f"{s['threads']} threads, median of {s['repeats']} interleaved repeats. Rates in audio seconds per wall "
            f"second; ratios are per round, then the median (the min..max column shows the spread).\n\n")
    text += common.md_table(["preset", "params", "steps", "padding", "pipeline", "whole fit call (+ dev eval, "
                             "checkpoints)", "model only", "fixed 4 s", "pipeline / model only (min..max)",
                             "whole call / model only", "model only / fixed 4 s", "CPU share"], rows)
    text += ("\nCPU share: process CPU time / (wall x threads) during the pipeline epochs; well below 1 means other "
             "work on the machine took the cores and every rate above is a lower bound.\n")
    cands = [(r["preset"], c, st) for r in results["presets"] for c, st in r["candidate_speedup"].items()]
    if cands:
        text += "\nCandidate changes in the real pipeline (fit epoch time, plain / with the change, same round):\n\n"
        text += common.md_table(["preset", "candidate", "speed-up (median)", "min..max"],
                                [[p, c, st["median"], f"{common.fmt(st['min'])}..{common.fmt(st['max'])}"]
                                 for p, c, st in cands])
    for r in results["presets"]:
        if "breakdown_seconds" not in r:
            continue
        p, m = r["breakdown_seconds"]["pipeline"], r["breakdown_seconds"]["model_only"]
        keys = ["collate", "feature reads (in collate)", "spec_augment", "forward+loss", "backward", "clip",
                "optimizer", "other", "total"]
        text += f"\n### Where one epoch's time goes: {r['preset']}\n\n"
        text += common.md_table(["stage", "pipeline s", "model only s", "pipeline extra s", "share of pipeline"],
                                [[k, p.get(k, 0.0), m.get(k, 0.0), p.get(k, 0.0) - m.get(k, 0.0),
                                  f"{100 * p.get(k, 0.0) / p['total']:.1f}%"] for k in keys])
        text += "\ncProfile, top functions by own time (one pipeline epoch):\n\n"
        text += common.md_table(["function", "calls", "own s", "cumulative s"],
                                [[c["function"].replace("|", "/"), c["calls"], c["tottime"], c["cumtime"]]
                                 for c in r["cprofile_top"][:10]])
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 0.03 h, batches of 30 s, 3 repeats")
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--hours", type=float, default=None, help="training audio (default 0.25; --quick 0.03)")
    p.add_argument("--batch-seconds", type=float, default=None, help="max_batch_seconds (default 60, as the recipes)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; --quick 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--languages", nargs="+", default=list(common.BENCH_LANGUAGES))
    p.add_argument("--corpus", default=None, help="folder of <lang>/train.jsonl (default: data/synthetic if big "
                                                  "enough, else generated under exp/bench)")
    p.add_argument("--candidates", nargs="*", default=None, choices=CANDIDATES,
                   help="proposed changes to time in the real pipeline (default: all; --quick: none)")
    p.add_argument("--no-profile", action="store_true", help="skip the breakdown and cProfile epochs")
    p.add_argument("--out", default=None, help="results folder (default results/bench)")
    args = p.parse_args(argv)
    args.hours = args.hours or (0.03 if args.quick else 0.25)
    args.batch_seconds = args.batch_seconds or (30.0 if args.quick else 60.0)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.candidates is None:
        args.candidates = [] if args.quick else list(CANDIDATES)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.train_throughput", argv)
    args.threads = common.set_threads(args.threads)
    utts = common.train_utterances(args.hours, tuple(args.languages), args.corpus)
    dev = common.train_utterances(args.hours * DEV_PER_TRAIN, tuple(args.languages), args.corpus, split="dev")
    work = common.WORK_DIR / "train_throughput"
    work.mkdir(parents=True, exist_ok=True)
    results = {"setup": {"hours": args.hours, "languages": args.languages, "utterances": len(utts),
                         "dev_hours": args.hours * DEV_PER_TRAIN,
                         "batch_seconds": args.batch_seconds, "threads": args.threads, "repeats": args.repeats},
               "presets": []}
    for preset in args.presets:
        r = measure_preset(preset, utts, dev, args, work)
        results["presets"].append(r)
        a = r["audio_sec_per_sec"]
        print(f"{preset}: pipeline {a['pipeline']['median']:.1f}  model-only {a['model_only']['median']:.1f}  "
              f"fixed-4s {a['fixed_4s']['median']:.1f} audio-s/s; pipeline/model-only "
              f"{r['pipeline_over_model_only']['median']:.3f}; padding {r['padding']['padding_fraction']:.3f}",
              flush=True)
    md = markdown(results)
    common.write_results(NAME, head, results, md, common.results_dir(args.out, args.quick), title="Training throughput: pipeline vs model only")
    return results


if __name__ == "__main__":
    main()
