"""The same training step under two torch installations: the default install's against another (e.g. a CPU build).

On a machine without a GPU, `pip install -e .` takes PyPI's torch, a CUDA build (several GB of CUDA libraries that
are never used here). This times xlingual's acoustic model (forward, CTC, backward, fused AdamW on a fixed batch of
4-second utterances, as bench/flops.py) in child processes of this environment's Python and of another one's
(--python), alternating, per preset and thread count, and reports training audio-s/s and the ratio, with each
build's torch.__config__ differences (BLAS, OpenMP, oneDNN, CPU capability) so that a difference can be traced.

The other environment needs torch, numpy and PyYAML. Where its torchaudio does not import (PyPI's torchaudio is
built against PyPI's torch: beside a CPU build it fails to load its library), the child loads torchaudio's
Conformer (pure Python, torch only) from this environment's copy of its source instead: the model code is the same
on both sides either way.

    python -m bench.torch_build --python /path/to/cpu-venv/bin/python     # ~5 min on 2 cores
    python -m bench.torch_build --python ... --quick                       # smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "torch_build"
N_MELS, VOCAB, UTT_SECONDS, LABELS_PER_SECOND = 80, 64, 4.0, 12  # as bench/flops.py


def child(preset: str, threads: int, batch_seconds: float, warmup: int, steps: int) -> dict:
    """In the child: the model's training step, timed; what this torch is."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    from xlingual.config import ModelConfig
    from xlingual.model import AcousticModel, dims_from_config

    torch.manual_seed(0)
    model = AcousticModel(dims_from_config(ModelConfig(preset=preset), N_MELS, VOCAB)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    t, b, n = 400, max(1, round(batch_seconds / UTT_SECONDS)), int(LABELS_PER_SECOND * UTT_SECONDS)
    feats, lens = torch.randn(b, t, N_MELS, generator=g), torch.full((b,), t)
    targets, target_lens = torch.randint(1, VOCAB, (b * n,), generator=g), torch.full((b,), n)

    def step() -> float:
        logits, out_lens = model(feats, lens)
        loss = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, out_lens, target_lens,
                          reduction="sum") / b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    config = torch.__config__.show()
    return {"audio_s_per_s": steps * b * UTT_SECONDS / wall, "cpu_share": cpu / (wall * threads), "loss": loss,
            "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "parallel": torch.__config__.parallel_info().splitlines()[:6],
            "config": [ln.strip() for ln in config.splitlines() if "Build settings" not in ln and ln.strip()]}


def _shim(work: Path) -> Path:
    """A folder holding `torchaudio.models.Conformer` only, from this environment's torchaudio source (torch only)."""
    import torchaudio.models.conformer as conformer

    root = work / "torchaudio_shim"
    pkg = root / "torchaudio" / "models"
    pkg.mkdir(parents=True, exist_ok=True)
    (root / "torchaudio" / "__init__.py").write_text('"""Conformer only (bench.torch_build)."""\n')
    shutil.copy(conformer.__file__, pkg / "conformer.py")
    (pkg / "__init__.py").write_text("from .conformer import Conformer\n")
    return root


@functools.lru_cache(maxsize=None)
def _imports_torchaudio(python: str) -> bool:
    return subprocess.run([python, "-c", "import torchaudio"], capture_output=True, text=True).returncode == 0


def run_child(python: str, args: list[str], shim: Path) -> dict:
    """One timing in a child process of `python`; torchaudio from the shim only where its own does not import."""
    from bench import common

    own = _imports_torchaudio(python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO)] + ([] if own else [str(shim)]))
    proc = subprocess.run([python, "-m", "bench.torch_build", "--child", *args], cwd=common.REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{python}: the child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "torchaudio_shim": not own}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", help="the other environment's python (e.g. a venv with a CPU build of torch)")
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--threads", default="", help="comma list (default: all cores, then 1)")
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny preset, 2 steps, 1 round")
    p.add_argument("--out", default=None, help="results folder (default results/bench; --quick: exp/bench/quick)")
    p.add_argument("--child", nargs=5, metavar=("PRESET", "THREADS", "BATCH_S", "WARMUP", "STEPS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        preset, threads, batch, warmup, steps = args.child
        print(json.dumps(child(preset, int(threads), float(batch), int(warmup), int(steps))))
        return {}
    from bench import common

    if not args.python:
        p.error("--python: the other environment's interpreter is required")
    if args.quick:
        args.presets, args.steps, args.rounds, args.batch_seconds = "tiny", 2, 1, 8.0
    threads = [int(x) for x in args.threads.split(",")] if args.threads else sorted({os.cpu_count() or 1, 1},
                                                                                     reverse=True)
    head = common.header(f"bench.{NAME}", argv)
    shim = _shim(common.WORK_DIR / NAME)
    pythons = {"default": sys.executable, "other": args.python}
    runs: dict = {}
    for preset in args.presets.split(","):
        for n in threads:
            key = f"{preset}/{n}"
            runs[key] = {side: [] for side in pythons}
            for r in range(args.rounds):
                for side in (("default", "other") if r % 2 == 0 else ("other", "default")):
                    res = run_child(pythons[side], [preset, str(n), str(args.batch_seconds), "2", str(args.steps)],
                                    shim)
                    runs[key][side].append(res)
            d, o = runs[key]["default"], runs[key]["other"]
            ratio = [b["audio_s_per_s"] / a["audio_s_per_s"] for a, b in zip(d, o)]
            runs[key]["other_over_default"] = {"median": statistics.median(ratio), "min": min(ratio),
                                               "max": max(ratio)}
            print(f"{key}: default {statistics.median(x['audio_s_per_s'] for x in d):.0f} audio-s/s, other "
                  f"{statistics.median(x['audio_s_per_s'] for x in o):.0f}: x{statistics.median(ratio):.2f}",
                  flush=True)
    first = {side: runs[next(iter(runs))][side][0] for side in pythons}
    same = [ln for ln in first["default"]["config"] if ln in first["other"]["config"]]
    differs = {side: [ln for ln in first[side]["config"] if ln not in same] for side in pythons}
    results = {"pythons": pythons, "batch_seconds": args.batch_seconds, "steps": args.steps, "runs": runs,
               "torch": {side: {k: first[side][k] for k in ("torch", "cuda_build", "cpu_capability", "parallel",
                                                            "torchaudio_shim")} for side in pythons},
               "config_differences": differs}
    rows = []
    for key, r in runs.items():
        rows.append([key] + [f"{statistics.median(x['audio_s_per_s'] for x in r[s]):.1f}" for s in pythons]
                    + [f"{r['other_over_default']['median']:.3f} ({r['other_over_default']['min']:.3f}.."
                       f"{r['other_over_default']['max']:.3f})",
                       f"{statistics.median(x['cpu_share'] for x in r['default']):.2f} / "
                       f"{statistics.median(x['cpu_share'] for x in r['other']):.2f}"])
    t = results["torch"]
    md = (f"The acoustic model's training step (forward, CTC, backward, fused AdamW; a fixed {args.batch_seconds:g}-s "
          f"batch of 4-s utterances; {args.steps} timed steps after 2) in child processes, alternating, "
          f"{args.rounds} rounds. default: {t['default']['torch']} (CUDA {t['default']['cuda_build']}) at "
          f"`{pythons['default']}`; other: {t['other']['torch']} (CUDA {t['other']['cuda_build']}) at "
          f"`{pythons['other']}`" + (" (torchaudio's Conformer from the default environment's source: its own "
                                     "torchaudio does not import)" if t["other"]["torchaudio_shim"] else "")
          + ".\n\n" + common.md_table(["preset / threads", "default audio-s/s", "other audio-s/s",
                                       "other / default (min..max)", "CPU share default / other"], rows)
          + "\n\ntorch.__config__ lines that differ (besides the build settings):\n\n"
          + "\n".join(f"- {side}: " + ("; ".join(v) or "none") for side, v in differs.items()) + "\n")
    common.write_results(NAME, head, results, md, common.results_dir(args.out, args.quick),
                         title="The training step under two torch installations")
    return results


if __name__ == "__main__":
    main()
