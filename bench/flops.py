"""The model against the machine: FLOPs per audio second, matmul FLOP/s of these cores, utilization, and what
raises it (threads, bf16 autocast, the convolution memory format, torch.compile, a fused optimizer).

  model FLOPs    torch.utils.flop_counter.FlopCounterMode over one training step (forward, CTC loss, backward)
                 on a fixed batch of 4-second utterances; matmuls, convolutions and attention only (elementwise
                 work, norms, dropout and the optimizer are not counted, so utilization is a lower bound).
  machine        median FLOP/s of square torch.mm (fp32 and bf16) and of a matmul shaped like the model's feed-forward
                 layer, with 1 thread and with all cores.
  variants       the same training step (forward, loss, backward, clip, AdamW) under each setting, interleaved
                 round-robin; speed-up = baseline step time / variant step time of the same round, median over
                 rounds. The first-step loss of each variant is compared with fp32's (bf16 changes numerics).

    python -m bench.flops                       # tiny and small presets, every variant incl. torch.compile
    python -m bench.flops --quick               # smoke run without torch.compile, about a minute
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench import common
from xlingual.config import ModelConfig
from xlingual.model import AcousticModel, dims_from_config
from xlingual.train import FRAMES_PER_SECOND

NAME = "flops"
N_MELS = 80
VOCAB = 64  # a character unit set of about this size
UTT_SECONDS = 4.0
LABELS_PER_SECOND = 12  # characters per second of synthetic speech, roughly
GRAD_CLIP = 5.0


def make_batch(batch_seconds: float, seed: int = 0) -> dict:
    """A fixed batch of 4-second utterances filling `batch_seconds` (random features and labels)."""
    g = torch.Generator().manual_seed(seed)
    t = int(UTT_SECONDS * FRAMES_PER_SECOND)
    b = max(1, round(batch_seconds / UTT_SECONDS))
    n = int(LABELS_PER_SECOND * UTT_SECONDS)
    return {"feats": torch.randn(b, t, N_MELS, generator=g), "feat_lens": torch.full((b,), t),
            "targets": torch.randint(1, VOCAB, (b * n,), generator=g), "target_lens": torch.full((b,), n)}


def loss_of(model, batch, autocast: bool = False) -> torch.Tensor:
    """Forward + CTC loss, as xlingual.train.compute_loss (optionally under CPU bf16 autocast)."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with ctx:
        logits, out_lens = model(batch["feats"], batch["feat_lens"])
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(log_probs, batch["targets"], out_lens, batch["target_lens"], blank=0,
                      reduction="sum") / batch["feats"].shape[0]


def step_flops(model, batch) -> dict:
    """FLOPs of one forward (with loss) and of forward + backward, by FlopCounterMode."""
    model = copy.deepcopy(model)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            loss_of(model, batch)
    with FlopCounterMode(display=False) as both:
        loss_of(model, batch).backward()
    per_op = {str(op): n for op, n in both.get_flop_counts().get("Global", {}).items()}
    return {"forward": fwd.get_total_flops(), "train_step": both.get_total_flops(), "by_op": per_op}


# ---------------------------------------------------------------------------------------------------------------
# The machine


def matmul_flops(threads_list: list[int], repeats: int, n: int, model_shape: tuple[int, int, int]) -> list[dict]:
    """FLOP/s of n x n torch.mm in fp32 and bf16, and of an (m x k) @ (k x n) fp32 matmul shaped like the model."""
    out = []
    cases = [("fp32 %dx%d" % (n, n), torch.float32, (n, n, n)), ("bf16 %dx%d" % (n, n), torch.bfloat16, (n, n, n)),
             ("fp32 model-shaped %dx%dx%d" % model_shape, torch.float32, model_shape)]
    for threads in threads_list:
        torch.set_num_threads(threads)
        for label, dtype, (m, k, nn) in cases:
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, nn).to(dtype)
            flop = 2 * m * k * nn
            inner = max(1, int(2e9 / flop))  # ~2 GFLOP per timing: long enough to time, short on a slow core

            def run():
                t0 = time.perf_counter()
                for _ in range(inner):
                    torch.mm(a, b)
                return (time.perf_counter() - t0) / inner

            secs = common.interleaved({"mm": run}, repeats=repeats, warmup=1)["mm"]
            out.append({"case": label, "threads": threads, "gflops": common.stats([flop / s / 1e9 for s in secs])})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Variants of the training step


def build_variant(name: str, base: AcousticModel, threads_all: int):
    """(model, optimizer, autocast, threads) for a variant; each starts from the same weights."""
    model = copy.deepcopy(base)
    model.train()
    threads = 1 if name == "threads=1" else threads_all
    opt_kw = {"lr": 1e-3, "betas": (0.9, 0.98), "weight_decay": 1e-2}
    if name == "fused AdamW":
        opt_kw["fused"] = True
    elif name == "foreach AdamW":
        opt_kw["foreach"] = True
    if name == "contiguous convs":  # the layout before the model shipped channels-last: < 1 is what that gains
        model.frontend.to(memory_format=torch.contiguous_format)
    if name == "no dropout":  # not a setting to keep (dropout regularizes); shows what dropout costs
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), **opt_kw)
    if name == "torch.compile":
        model = torch.compile(model)
    return model, opt, name == "bf16 autocast", threads


def train_step(model, opt, batch, autocast: bool) -> float:
    loss = loss_of(model, batch, autocast)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return loss.item()


def op_profile(base: AcousticModel, batch: dict, steps: int, top: int = 12) -> list[dict]:
    """torch.profiler of `steps` baseline training steps: the ops with the most self CPU time (where the time
    that is not matmul goes: dropout, normalization, elementwise, autograd bookkeeping)."""
    from torch.profiler import ProfilerActivity, profile

    model, opt, _, _ = build_variant("baseline fp32", base, torch.get_num_threads())
    train_step(model, opt, batch, False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step(model, opt, batch, False)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def measure_variants(preset: str, variants: list[str], batch: dict, repeats: int, steps: int,
                     threads_all: int) -> dict:
    torch.manual_seed(0)
    base = AcousticModel(dims_from_config(ModelConfig(preset=preset), N_MELS, VOCAB))
    flops = step_flops(base, batch)
    audio = float(batch["feat_lens"].sum()) / FRAMES_PER_SECOND
    built, first_loss, setup_seconds, errors = {}, {}, {}, {}
    for v in variants:
        try:
            t0 = time.perf_counter()
            model, opt, autocast, threads = build_variant(v, base, threads_all)
            torch.set_num_threads(threads)
            torch.manual_seed(1)
            first_loss[v] = train_step(model, opt, batch, autocast)  # also the warm-up (and compilation)
            setup_seconds[v] = time.perf_counter() - t0
            built[v] = (model, opt, autocast, threads)
        except Exception as e:  # a variant this machine or version cannot run is reported, not fatal
            errors[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"

    def timer(v):
        model, opt, autocast, threads = built[v]

        def run():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, opt, batch, autocast)
            return (time.perf_counter() - t0) / steps
        return run

    shares: dict[str, list[float]] = {}
    times = common.interleaved({v: timer(v) for v in built}, repeats=repeats, warmup=1, cpu_share=shares)
    torch.set_num_threads(threads_all)
    base_times = times.get("baseline fp32", [])
    rows = {}
    for v, secs in times.items():
        rows[v] = {
            "step_seconds": common.stats(secs),
            "audio_sec_per_sec": common.stats([audio / s for s in secs]),
            "achieved_gflops": common.stats([flops["train_step"] / s / 1e9 for s in secs]),
            "speedup_vs_baseline": common.stats(common.ratios(base_times, secs)) if base_times else None,
            "first_loss": first_loss[v],
            "loss_rel_diff_vs_baseline": (abs(first_loss[v] - first_loss["baseline fp32"]) /
                                          abs(first_loss["baseline fp32"]) if "baseline fp32" in first_loss else None),
            "setup_seconds": setup_seconds[v], "cpu_share": common.stats(shares.get(v, [])),
        }
    ops = op_profile(base, batch, steps)
    return {"preset": preset, "params": sum(p.numel() for p in base.parameters()), "op_profile": ops,
            "batch": {"utterances": int(batch["feats"].shape[0]), "seconds_each": UTT_SECONDS, "audio_seconds": audio},
            "flops": flops, "gflop_per_audio_second": flops["train_step"] / audio / 1e9,
            "forward_gflop_per_audio_second": flops["forward"] / audio / 1e9, "variants": rows, "errors": errors}


ALL_VARIANTS = ["baseline fp32", "threads=1", "bf16 autocast", "contiguous convs", "fused AdamW", "foreach AdamW",
                "no dropout", "torch.compile"]


def markdown(res: dict) -> str:
    peak = {(m["case"].split()[0] if "model" not in m["case"] else "model", m["threads"]): m["gflops"]["median"]
            for m in res["matmul"]}
    text = "## The machine: matmul throughput (median GFLOP/s)\n\n"
    text += common.md_table(["case", "threads", "GFLOP/s (median)", "min..max"],
                            [[m["case"], m["threads"], m["gflops"]["median"],
                              f"{common.fmt(m['gflops']['min'])}..{common.fmt(m['gflops']['max'])}"]
                             for m in res["matmul"]])
    threads_all = res["setup"]["threads"]
    fp32_peak = peak.get(("fp32", threads_all))
    for p in res["presets"]:
        text += (f"\n## {p['preset']} ({p['params'] / 1e6:.2f}M parameters), batch of {p['batch']['utterances']} x "
                 f"{p['batch']['seconds_each']:g} s\n\n"
                 f"Training step: {p['gflop_per_audio_second']:.3g} GFLOP per audio second "
                 f"(forward alone {p['forward_gflop_per_audio_second']:.3g}). Utilization = achieved GFLOP/s / "
                 f"fp32 {res['setup']['matmul_n']}^2 matmul GFLOP/s with the same threads.\n\n")
        rows = []
        for v, r in p["variants"].items():
            ref = peak.get(("fp32", 1 if v == "threads=1" else threads_all))
            util = r["achieved_gflops"]["median"] / ref if ref else None
            sp = r["speedup_vs_baseline"]
            rows.append([v, r["audio_sec_per_sec"]["median"], r["step_seconds"]["median"],
                         r["achieved_gflops"]["median"], util,
                         sp["median"] if sp else None,
                         f"{common.fmt(sp['min'])}..{common.fmt(sp['max'])}" if sp else "-",
                         r["loss_rel_diff_vs_baseline"], r["setup_seconds"], r["cpu_share"]["median"]])
        text += common.md_table(["variant", "audio-s/s", "step s", "GFLOP/s", "utilization", "speed-up",
                                 "(min..max)", "first-loss rel. diff", "set-up s (incl. 1st step)", "CPU share"], rows)
        for v, e in p["errors"].items():
            text += f"\n{v}: not available ({e})\n"
        text += "\nWhere a baseline step's CPU time goes (torch.profiler, self time, top ops):\n\n"
        text += common.md_table(["op", "calls", "ms per step", "share"],
                                [[o["op"], o["calls"], o["self_ms_per_step"], f"{100 * o['share']:.1f}%"]
                                 for o in p["op_profile"]])
    if fp32_peak:
        text += (f"\nfp32 matmul reference with {threads_all} threads: {fp32_peak:.3g} GFLOP/s; "
                 f"bf16: {common.fmt(peak.get(('bf16', threads_all)))} GFLOP/s "
                 f"(oneDNN bf16 supported: {res['setup']['mkldnn_bf16']}).\n")
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 step per timing, 3 repeats, no torch.compile")
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--variants", nargs="+", default=None, help=f"subset of {ALL_VARIANTS}")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="audio per training batch (as the recipes)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; --quick 3)")
    p.add_argument("--steps", type=int, default=None, help="training steps per timing (default 3; --quick 1)")
    p.add_argument("--matmul-n", type=int, default=None, help="square matmul size (default 2048; --quick 512)")
    p.add_argument("--threads", type=int, default=0, help="threads of the baseline (0: all cores)")
    p.add_argument("--compile", action="store_true", help="include torch.compile in --quick runs")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.steps = args.steps or (1 if args.quick else 3)
    args.matmul_n = args.matmul_n or (512 if args.quick else 2048)
    if args.variants is None:
        args.variants = [v for v in ALL_VARIANTS if v != "torch.compile" or not args.quick or args.compile]
    unknown = set(args.variants) - set(ALL_VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {ALL_VARIANTS}")
    if "baseline fp32" not in args.variants:
        args.variants.insert(0, "baseline fp32")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.flops", argv)
    threads = common.set_threads(args.threads)
    batch = make_batch(args.batch_seconds)
    d = dims_from_config(ModelConfig(preset=args.presets[0]), N_MELS, VOCAB)
    # the first preset's feed-forward matmul: (batch frames after 4x subsampling) x d_model x ffn_dim
    model_shape = (int(batch["feats"].shape[0] * batch["feats"].shape[1] / 4), d.d_model, d.ffn_dim)
    res = {"setup": {"threads": threads, "batch_seconds": args.batch_seconds, "repeats": args.repeats,
                     "steps": args.steps, "matmul_n": args.matmul_n, "mkldnn_bf16": bf16_supported()},
           "matmul": matmul_flops(sorted({1, threads}), args.repeats, args.matmul_n, model_shape), "presets": []}
    common.set_threads(threads)
    for preset in args.presets:
        p = measure_variants(preset, args.variants, batch, args.repeats, args.steps, threads)
        res["presets"].append(p)
        best = max(p["variants"].items(), key=lambda kv: (kv[1]["speedup_vs_baseline"] or {"median": 0})["median"])
        print(f"{preset}: {p['gflop_per_audio_second']:.3g} GFLOP/audio-s; baseline "
              f"{p['variants']['baseline fp32']['audio_sec_per_sec']['median']:.1f} audio-s/s; best {best[0]} "
              f"x{best[1]['speedup_vs_baseline']['median']:.2f}", flush=True)
    common.write_results(NAME, head, res, markdown(res), common.results_dir(args.out, args.quick), title="Model FLOPs and machine utilization")
    return res


if __name__ == "__main__":
    main()
