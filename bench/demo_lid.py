"""How reliably does the demo's LID recipe learn? Its language-ID model over seeds and recipe variants.

    python -m bench.demo_lid <demo folder> [--seeds 0 1 2] [--variants demo ...] [--jobs 2] [--out FILE.json]

Needs a finished `xlingual demo --out <demo folder>` (its corpus, cached features and the Bengali source run whose
encoder starts the LID). Trains the demo's LID (`xlingual.demo.demo_configs`) once per variant and seed, each
on one thread, `--jobs` at a time, into <demo folder>/lid_probe/<variant>/seed<N>/ (finished runs are reused), and
prints per variant the held-out-voice test accuracy of every seed, their mean and spread, and the worst language:
a recipe that reaches 0.84 at one seed and 0.6 at another is not a recipe. The variants (VARIANTS below) change
the LID's batch size, learning rate, warm-up, training audio and epochs; every other setting is the demo's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

# name -> (LIDConfig.train settings, LID training audio per language in hours at scale 1); every variant sets
# all of them, so a variant means the same run whatever the demo's own recipe is now
VARIANTS = {
    "a401781": ({"epochs": 20, "lr": 3e-3, "max_batch_seconds": 16, "warmup_steps": 50}, 0.05),  # the demo then
    "lr1e-3": ({"epochs": 20, "lr": 1e-3, "max_batch_seconds": 16, "warmup_steps": 50}, 0.05),
    "batch48": ({"epochs": 20, "lr": 2e-3, "max_batch_seconds": 48, "warmup_steps": 20}, 0.05),  # the demo now
    "batch48_6min": ({"epochs": 20, "lr": 2e-3, "max_batch_seconds": 48, "warmup_steps": 20}, 0.1),
    "batch48_6min_30ep": ({"epochs": 30, "lr": 2e-3, "max_batch_seconds": 48, "warmup_steps": 20}, 0.1),
}


def probe_config(demo_dir: Path, scale: float, variant: str, seed: int):
    """The demo's LIDConfig with `variant`'s settings at `seed`, in its own folder."""
    from xlingual.demo import demo_configs

    _, lid, _ = demo_configs(demo_dir, scale)
    over, hours = VARIANTS[variant]
    return replace(lid, out_dir=str(demo_dir / "lid_probe" / variant / f"seed{seed}"),
                   train_hours=round(hours * scale, 4), train=replace(lid.train, seed=seed, threads=1, progress=False, **over))


def train_one(cfg) -> dict:
    from xlingual.recipe import train_lid

    train_lid(cfg)
    res = json.loads((Path(cfg.out_dir) / "results.json").read_text())
    per_lang = res["test"]["per_language_accuracy"]
    return {"test_accuracy": res["test"]["accuracy"], "dev_accuracy": res["dev"]["accuracy"],
            "per_language": per_lang, "seconds": res["wall_seconds"]}  # when it trained (a reused run: then)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_dir", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    summary = args.demo_dir / "summary.json"
    if not summary.is_file():
        print(f"{summary} not found: run `xlingual demo --out {args.demo_dir}` to the end first", file=sys.stderr)
        return 2
    scale = json.loads(summary.read_text())["scale"]
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job: pool.submit(train_one, probe_config(args.demo_dir, scale, *job)) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}
    out = {"demo_dir": str(args.demo_dir), "seeds": args.seeds, "wall_seconds": round(time.time() - t0, 1),
           "variants": {}}
    print("| variant | test accuracy per seed | mean | min | worst language (mean accuracy) | s per run |")
    print("|---|---|---|---|---|---|")
    for v in args.variants:
        rs = [results[(v, s)] for s in args.seeds]
        accs = [r["test_accuracy"] for r in rs]
        langs = rs[0]["per_language"]
        worst = min(langs, key=lambda lang: statistics.mean(r["per_language"][lang] for r in rs))
        worst_acc = statistics.mean(r["per_language"][worst] for r in rs)
        secs = statistics.mean(r["seconds"] for r in rs)
        out["variants"][v] = {"overrides": VARIANTS[v][0], "hours": VARIANTS[v][1], "runs": rs,
                              "mean": statistics.mean(accs), "min": min(accs)}
        print(f"| {v} | {' '.join(f'{a:.2f}' for a in accs)} | {statistics.mean(accs):.3f} | {min(accs):.2f} "
              f"| {worst} ({worst_acc:.2f}) | {secs:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
