"""train.cpu_bf16 (the training forward pass under CPU bf16 autocast) against float32, epoch by epoch, in real fit()s.

Each measurement is one child process that builds the same data and model and runs xlingual.train.fit for a few
epochs (no dev pass: the training loop alone, as fit's own epoch_seconds report it), with cpu_bf16 off or on.
Children alternate (fp32, bf16, bf16, fp32, ...), and each precision has a process of its own, so that neither
inherits the other's compiled kernels: oneDNN makes a bf16 kernel for each new batch shape the first time it
meets it, so the first epoch (every shape new) is slower than the next ones (the batches' composition, and so their
shapes, is the same every epoch). Reported per setting: audio-s/s of the first epoch and the median of the later
ones, for each precision, their ratio, the first-epoch training loss of each (bf16 rounds differently), and the
later epochs' utilization: achieved FLOP/s over the machine's fp32 matmul peak (as bench.flops counts them).

Settings: the tiny and small presets with 2 threads and 120-s batches (the recipes' defaults), and the ranking
benchmark's model (a 64-d tiny conformer) as its matrix runs it: one thread per run, 30-s batches.

    python -m bench.cpu_bf16            # ~5 min on 2 cores
    python -m bench.cpu_bf16 --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "cpu_bf16"
# name -> (ModelConfig overrides, threads, batch seconds)
SETTINGS = {
    "tiny, 2 threads, 120-s batches": ({"preset": "tiny"}, 2, 120.0),
    "small, 2 threads, 120-s batches": ({"preset": "small"}, 2, 120.0),
    "benchmark model (64-d tiny), 1 thread, 30-s batches": (
        {"preset": "tiny", "d_model": 64, "ffn_dim": 256, "subsample_channels": 16}, 1, 30.0),
}


def child(args) -> dict:
    """One fit() of `args.epochs` epochs at one precision; prints its per-epoch figures as JSON."""
    import torch

    from xlingual.asr import build_tokenizer, make_examples, new_model
    from xlingual.config import FeatureConfig, ModelConfig, TrainConfig, UnitConfig
    from xlingual.features import compute_features
    from xlingual.train import fit

    model_over, threads, batch_s = SETTINGS[args.setting]
    common.WORK_DIR = Path(args.work)  # the parent's (a test moves it)
    torch.set_num_threads(threads)
    utts = common.train_utterances(args.hours)
    feats = FeatureConfig(n_mels=40) if model_over.get("d_model") == 64 else FeatureConfig()
    store = compute_features(utts, common.WORK_DIR / NAME / f"features_{feats.n_mels}", feats, progress=False)
    tok = build_tokenizer(utts, UnitConfig())
    examples, _ = make_examples(utts, store, tok)
    model = new_model(ModelConfig(**model_over), feats, tok.vocab_size, store, [u.id for u in utts], seed=0)
    cfg = TrainConfig(epochs=args.epochs, max_batch_seconds=batch_s, threads=threads, device="cpu", progress=False,
                      checkpoint_every_steps=0, cpu_bf16=args.bf16)
    gflop = None if args.bf16 else train_gflop_per_audio_second(model, examples, store, batch_s)  # same model
    with tempfile.TemporaryDirectory(dir=common.WORK_DIR) as out:
        history = fit(model, examples, store, cfg, Path(out), evaluate=lambda m: {"dev_wer": 0.0}, specaug=feats,
                      run_key="bench")
    return {"audio_sec_per_sec": [h["audio_sec_per_sec"] for h in history],
            "train_loss": [h["train_loss"] for h in history], "gflop_per_audio_second": gflop}


def train_gflop_per_audio_second(model, examples, store, batch_s: float) -> float:
    """GFLOP of a training step (forward, CTC, backward; FlopCounterMode: matmuls, convolutions, attention) per
    second of real audio, over the epoch's batches as fit() makes them: padded frames count as work done, the audio
    only as what it is, so this times audio-s/s is the FLOP/s the machine executed."""
    from bench.flops import step_flops
    from xlingual.train import FRAMES_PER_SECOND, bucket_batches, collate

    frames = [e.frames for e in examples]
    total = audio = 0.0
    for idx in bucket_batches(frames, int(batch_s * FRAMES_PER_SECOND), 0, 0):
        batch = collate(store, [examples[i] for i in idx])
        total += step_flops(model, batch)["train_step"]
        audio += float(batch["feat_lens"].sum()) / FRAMES_PER_SECOND
    return total / audio / 1e9


def run_child(setting: str, bf16: bool, args) -> dict:
    cmd = [sys.executable, "-m", "bench.cpu_bf16", "--child", "--setting", setting, "--hours", str(args.hours),
           "--epochs", str(args.epochs), "--work", str(common.WORK_DIR), *(["--bf16"] if bf16 else [])]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fp32_peak(threads: int, repeats: int) -> float:
    """The machine's fp32 matmul GFLOP/s (2048^2 torch.mm, median) with `threads` threads: utilization's yardstick,
    as in bench.flops."""
    from bench.flops import matmul_flops

    n = 512 if repeats < 3 else 2048
    (fp32,) = [r for r in matmul_flops([threads], repeats, n, (64, 64, 64)) if r["case"] == f"fp32 {n}x{n}"]
    return fp32["gflops"]["median"]


def measure(args) -> dict:
    out = {}
    peaks = {t: fp32_peak(t, args.peak_repeats) for t in sorted({SETTINGS[s][1] for s in args.settings})}
    for setting in args.settings:
        runs = {"fp32": [], "bf16": []}
        for r in range(args.rounds):
            for prec in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
                res = run_child(setting, prec == "bf16", args)
                runs[prec].append(res)
                print(f"{setting} round {r + 1} {prec}: {res['audio_sec_per_sec']}", flush=True)
        first = {p: [x["audio_sec_per_sec"][0] for x in v] for p, v in runs.items()}
        later = {p: [statistics.median(x["audio_sec_per_sec"][1:]) for x in v] for p, v in runs.items()}
        out[setting] = {
            "runs": runs,
            "first_epoch": {p: common.stats(v) for p, v in first.items()},
            "later_epochs": {p: common.stats(v) for p, v in later.items()},
            # ratios within a round (the two children ran one after the other)
            "bf16_over_fp32_first": common.stats(common.ratios(first["bf16"], first["fp32"])),
            "bf16_over_fp32_later": common.stats(common.ratios(later["bf16"], later["fp32"])),
            "first_loss": {p: [x["train_loss"][0] for x in v] for p, v in runs.items()},
            "gflop_per_audio_second": runs["fp32"][0]["gflop_per_audio_second"],
            "fp32_peak_gflops": peaks[SETTINGS[setting][1]],
        }
        # achieved FLOP/s of the later epochs over the fp32 matmul peak with the same threads
        out[setting]["utilization_later"] = {
            p: round(out[setting]["later_epochs"][p]["median"] * out[setting]["gflop_per_audio_second"]
                     / out[setting]["fp32_peak_gflops"], 3) for p in runs}
    return out


def markdown(res: dict, args) -> str:
    rows = []
    for setting, r in res.items():
        loss32, loss16 = r["first_loss"]["fp32"][0], r["first_loss"]["bf16"][0]
        rows.append([setting, common.fmt(r["first_epoch"]["fp32"]["median"]),
                     common.fmt(r["first_epoch"]["bf16"]["median"]), common.fmt(r["bf16_over_fp32_first"]["median"]),
                     common.fmt(r["later_epochs"]["fp32"]["median"]), common.fmt(r["later_epochs"]["bf16"]["median"]),
                     f"**{common.fmt(r['bf16_over_fp32_later']['median'])}** "
                     f"({common.fmt(r['bf16_over_fp32_later']['min'])}..{common.fmt(r['bf16_over_fp32_later']['max'])})",
                     common.fmt(abs(loss16 - loss32) / loss32), common.fmt(r["gflop_per_audio_second"]),
                     common.fmt(r["fp32_peak_gflops"]),
                     f"{r['utilization_later']['fp32']:.0%} / **{r['utilization_later']['bf16']:.0%}**"])
    return (f"fit() on {args.hours} h of the embedded corpus ({len(common.BENCH_LANGUAGES)} languages), "
            f"{args.epochs} epochs, no dev pass; {args.rounds} rounds, the two precisions alternating, each in a "
            f"process of its own. Audio-s/s of the training loop; 'later' = median over epochs 2..{args.epochs}; "
            f"ratios are medians over rounds (min..max).\n\n"
            + common.md_table(["setting", "fp32, 1st epoch", "bf16, 1st epoch", "bf16 / fp32, 1st",
                               "fp32, later", "bf16, later", "bf16 / fp32, later", "1st-epoch loss rel. diff",
                               "GFLOP per audio-s", "fp32 peak GFLOP/s", "utilization, later: fp32 / bf16"], rows)
            + "\n\nUtilization: the later epochs' audio-s/s x the training step's GFLOP per audio second (FlopCounterMode "
            "over the epoch's real batches, padding included: matmuls, convolutions and attention only, so a lower "
            "bound) / the fp32 2048^2 matmul GFLOP/s with the same threads, measured at the start of this run. The "
            "issue's goal: the small preset at >= 40% of the fp32 peak in the real pipeline.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=0.25, help="training audio (default 0.25 h)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (fp32, bf16), alternating order (default 2)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING")
    p.add_argument("--peak-repeats", type=int, default=5, help="timings of the fp32 matmul peak (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.02 h, 2 epochs, 1 round, the benchmark model")
    p.add_argument("--out", default=None, help="results folder (default results/bench; --quick: exp/bench/quick)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.hours, args.epochs, args.rounds, args.settings = 0.02, 2, 1, [list(SETTINGS)[-1]]
        args.peak_repeats = 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        res = child(args)
        print(json.dumps(res), flush=True)
        return res
    head = common.header(f"bench.{NAME}", argv)
    from xlingual.train import cpu_has_bf16

    res = {"cpu_has_bf16": cpu_has_bf16(), "settings": measure(args)}
    md = (f"This CPU {'has' if res['cpu_has_bf16'] else 'does not have'} native bf16 matmuls (AMX / AVX512-BF16).\n\n"
          + markdown(res["settings"], args))
    common.write_results(NAME, head, res, md, common.results_dir(args.out, args.quick),
                         title="train.cpu_bf16 against float32")
    return res


if __name__ == "__main__":
    main()
