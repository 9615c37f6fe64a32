"""How cost grows: training time and peak memory against corpus hours, and the WER matrix against languages.

Corpus hours (default 0.25, 1, 4 h, an equal share of bn/as/th/tr): each size runs as two child processes, so
that peak RSS (ru_maxrss) belongs to one run:

  features   compute_features from audio into an empty cache (log-mel, concatenated, saved as one .npy)
  train      one epoch of xlingual.train.fit over the cached features (tiny preset, batches of 60 s, the real
             per-epoch dev evaluation on a fixed 0.05 h dev set, checkpoints), as a recipe's epoch

Matrix vs number of languages L: xlingual.matrix.plan_cells gives the runs of a matrix (L from-scratch sources at
the large budget, L small-budget baselines, L x L adaptation cells; the recipe's extra tables on top); each run's
cost is predicted from the measured epoch time, a + b x hours (fitted to the train runs above), times its epochs.

    python -m bench.scaling                  # 0.25, 1, 4 h; tiny preset
    python -m bench.scaling --quick          # 0.01, 0.02, 0.04 h
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "scaling"
DEV_HOURS = 0.05  # the recipes' dev set per language: fixed while the training set grows
MATRIX_RECIPE = common.REPO / "recipes" / "synthetic" / "matrix.yaml"
MATRIX_LANGUAGES = (2, 4, 8, 16)


# ---------------------------------------------------------------------------------------------------------------
# Child processes: one measurement each, a JSON line on stdout


def child(args) -> dict:
    import torch

    from xlingual.config import FeatureConfig

    common.set_threads(args.threads)
    base_rss = common.peak_rss_mb()  # the interpreter, torch and xlingual, before any work
    feats = FeatureConfig()
    utts = common.train_utterances(args.hours, tuple(args.languages), args.corpus)
    cache = Path(args.cache)
    if args.child == "features":
        from xlingual.features import compute_features

        with common.Clock() as c:
            store = compute_features(utts, cache, feats, progress=False)
        nbytes = store.nbytes
        return {"seconds": c.wall, "cpu_share": c.cpu_share, "base_rss_mb": base_rss,
                "peak_rss_mb": common.peak_rss_mb(), "feature_mb": nbytes / 2 ** 20, "utterances": len(utts),
                "audio_seconds": sum(u.duration for u in utts)}

    from xlingual.asr import build_tokenizer, make_evaluator, make_examples, new_model
    from xlingual.config import ModelConfig, TrainConfig, UnitConfig
    from xlingual.features import compute_features
    from xlingual.train import fit

    dev = common.train_utterances(args.dev_hours, tuple(args.languages), args.corpus, split="dev")
    store = compute_features(utts, cache, feats, progress=False)
    dev_store = compute_features(dev, cache, feats, progress=False)
    tok = build_tokenizer(utts, UnitConfig())
    model = new_model(ModelConfig(preset=args.preset), feats, tok.vocab_size, store, [u.id for u in utts], seed=0)
    cfg = TrainConfig(epochs=1, max_batch_seconds=args.batch_seconds, progress=False, threads=args.threads,
                      device="cpu")
    out = cache / "run"
    shutil.rmtree(out, ignore_errors=True)
    with common.Clock() as c:
        hist = fit(model, make_examples(utts, store, tok)[0], store, cfg, out, make_evaluator(dev_store, dev, tok),
                   specaug=feats, run_key="scaling")
    return {"seconds": c.wall, "epoch_loop_seconds": hist[0]["epoch_seconds"], "cpu_share": c.cpu_share,
            "steps": hist[0]["step"], "base_rss_mb": base_rss, "peak_rss_mb": common.peak_rss_mb(),
            "utterances": len(utts), "audio_seconds": sum(u.duration for u in utts),
            "torch_threads": torch.get_num_threads()}


def run_child(kind: str, hours: float, cache: Path, args) -> dict:
    cmd = [sys.executable, "-m", "bench.scaling", "--child", kind, "--hours", str(hours), "--cache", str(cache),
           "--preset", args.preset, "--batch-seconds", str(args.batch_seconds), "--threads", str(args.threads),
           "--dev-hours", str(args.dev_hours), "--languages", *args.languages]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0  # with interpreter start and imports
    return result


# ---------------------------------------------------------------------------------------------------------------
# The matrix's cost model


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b of y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def matrix_runs(n_languages: int, core: bool) -> list[dict]:
    """The runs of a matrix over `n_languages` (sources = targets), with the recipe's budgets and epochs:
    [{"kind", "hours", "epochs"}]. core=True drops the extra tables (data size, variants, layer sweep) and the
    baselines' extra seeds."""
    from xlingual.config import MatrixConfig, load_config
    from xlingual.matrix import plan_cells

    cfg = load_config(MatrixConfig, MATRIX_RECIPE)
    langs = [f"l{i}" for i in range(n_languages)]
    cfg.sources, cfg.targets = langs, list(langs)
    if core:
        cfg.size_pairs, cfg.variants, cfg.layer_sweep, cfg.baseline_seeds = [], {}, [], []
    else:  # the recipe's extra tables name bn/as/th/tr: map them onto the first four stand-in languages
        names = dict(zip(("bn", "as", "th", "tr"), langs))
        keep = lambda pairs: [(names[s], names[t]) for s, t in pairs if s in names and t in names]  # noqa: E731
        cfg.size_pairs = keep(cfg.size_pairs)
        cfg.variant_pairs = keep(cfg.variant_pairs) if cfg.variant_pairs is not None else None
        cfg.sweep_pairs = keep(cfg.sweep_pairs) if cfg.sweep_pairs is not None else None
    runs = []
    for cell in plan_cells(cfg).values():
        train = cell.spec["train"] if cell.kind == "scratch" else cell.spec["adapt"]["train"]
        hours = cell.hours if cell.hours is not None else cfg.corpus.train_hours
        runs.append({"kind": cell.kind, "hours": hours, "epochs": train["epochs"]})
    return runs


def matrix_costs(a: float, b: float) -> dict:
    """Predicted training hours of the matrix for each L, from the epoch cost a + b x hours (seconds)."""
    out = {"epoch_seconds_model": {"a_seconds": a, "b_seconds_per_hour": b}, "core": [], "recipe": []}
    for core in (True, False):
        for n in MATRIX_LANGUAGES:
            try:
                runs = matrix_runs(n, core)
            except Exception as e:  # the matrix module is still moving: report, don't fail the benchmark
                out["error"] = f"{type(e).__name__}: {e}"
                return out
            by_kind: dict[str, dict] = {}
            for r in runs:
                k = by_kind.setdefault(r["kind"], {"runs": 0, "seconds": 0.0})
                k["runs"] += 1
                k["seconds"] += r["epochs"] * (a + b * r["hours"])
            total = sum(k["seconds"] for k in by_kind.values())
            out["core" if core else "recipe"].append({"languages": n, "runs": len(runs), "by_kind": by_kind,
                                                       "predicted_hours": total / 3600})
    return out


def markdown(res: dict) -> str:
    s = res["setup"]
    text = (f"Preset {s['preset']}, batches of <= {s['batch_seconds']} s, {s['threads']} threads, dev set "
            f"{s['dev_hours']} h; each row: two child processes (cold feature extraction, then one training epoch "
            f"with dev evaluation).\n\n")
    rows = []
    for r in res["sizes"]:
        f, t = r["features"], r["train"]
        rows.append([r["hours"], f["audio_seconds"], f["seconds"], f["feature_mb"], f["peak_rss_mb"], t["steps"],
                     t["seconds"], t["epoch_loop_seconds"], t["audio_seconds"] / t["epoch_loop_seconds"],
                     t["seconds"] / t["steps"], t["peak_rss_mb"], t["base_rss_mb"], t["cpu_share"]])
    text += common.md_table(["hours", "audio s", "features s", "features MiB", "features peak RSS MiB", "steps",
                             "epoch s (with eval)", "loop s", "audio-s/s", "s per step", "train peak RSS MiB",
                             "RSS after imports MiB", "CPU share"], rows)
    g = res.get("growth", {})
    if g:
        text += (f"\nGrowth from the smallest to the largest corpus ({g['hours_ratio']:.3g}x the audio): feature "
                 f"time x{g['features_seconds']:.3g}, training epoch x{g['train_seconds']:.3g}, feature-extraction "
                 f"peak RSS x{g['features_rss']:.3g}, training peak RSS x{g['train_rss']:.3g}. Fitted epoch cost: "
                 f"{g['a']:.3g} s + {g['b']:.3g} s per hour of training audio.\n")
    m = res.get("matrix", {})
    if m.get("core"):
        text += "\n### Matrix cost vs number of languages L (predicted from the fitted epoch cost)\n\n"
        rows = []
        for core, label in ((True, "core"), (False, "recipe")):
            for r in m["core" if core else "recipe"]:
                kinds = r["by_kind"]
                rows.append([label, r["languages"], r["runs"], kinds.get("scratch", {}).get("runs", 0),
                             kinds.get("adapt", {}).get("runs", 0),
                             kinds.get("scratch", {}).get("seconds", 0) / 3600,
                             kinds.get("adapt", {}).get("seconds", 0) / 3600, r["predicted_hours"]])
        text += common.md_table(["matrix", "L", "runs", "scratch runs", "adapt runs", "scratch h", "adapt h",
                                 "total h"], rows)
        text += ("\ncore = L sources pre-trained at the large budget + L small-budget baselines + L x L adaptation "
                 "cells; recipe = recipes/synthetic/matrix.yaml with its data-size, variant and layer-sweep "
                 "tables and its baselines at 3 seeds. Cost = sum over runs of epochs x (a + b x hours).\n")
    if m.get("error"):
        text += f"\nMatrix cost model unavailable: {m['error']}\n"
    if res.get("complexity"):
        text += f"\n{res['complexity']}\n"
    return text


def complexity_note(res: dict) -> str:
    m = res.get("matrix", {})
    core = m.get("core") or []
    if len(core) < 2:
        return ""
    by_l = {r["languages"]: r for r in core}
    first, last = core[0], core[-1]
    lin = sum(v["seconds"] for k, v in first["by_kind"].items() if k == "scratch")
    quad = first["by_kind"].get("adapt", {}).get("seconds", 0.0)
    n = first["languages"]
    # per-language linear cost c1 and per-pair cost c2: total(L) = c1 L + c2 L^2
    c1, c2 = lin / n, quad / n ** 2
    cross = c1 / c2 if c2 else float("inf")
    sizes = res.get("sizes") or []
    memory = ""
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        memory = (f"; memory: feature extraction writes shards of bounded size, so its peak RSS stays nearly flat "
                  f"({a['features']['peak_rss_mb']:.0f} -> {b['features']['peak_rss_mb']:.0f} MiB from {a['hours']:g} "
                  f"to {b['hours']:g} h); training reads the features as a memory map whose touched pages count in "
                  f"RSS (page cache, given back under memory pressure), so its RSS grows by about the feature size "
                  f"({a['train']['peak_rss_mb']:.0f} -> {b['train']['peak_rss_mb']:.0f} MiB)")
    return (f"Complexity: training cost is linear in corpus hours (one epoch = a + b x hours{memory}). "
            f"The matrix costs "
            f"c1 L + c2 L^2 with c1 = {c1 / 3600:.3g} h per language (from-scratch runs) and c2 = "
            f"{c2 / 3600:.3g} h per (source, target) cell: quadratic, the L^2 adaptation grid overtakes the "
            f"linear part from L > {cross:.2g}; at L = {last['languages']} the grid is "
            f"{100 * last['by_kind'].get('adapt', {}).get('seconds', 0) / (last['predicted_hours'] * 3600):.0f}% "
            f"of {last['predicted_hours']:.3g} h. A ranking query for a new language instead costs one LID forward "
            f"pass over its data (constant in L) after an LID model trained once on all sources (linear in L). "
            f"L = {', '.join(str(k) for k in by_l)}.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 0.01, 0.02, 0.04 h")
    p.add_argument("--sizes", type=float, nargs="+", default=None, help="corpus hours (default 0.25 1 4)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--dev-hours", type=float, default=None, help=f"dev set (default {DEV_HOURS}; --quick 0.005)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--languages", nargs="+", default=list(common.BENCH_LANGUAGES))
    p.add_argument("--corpus", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--child", choices=["features", "train"], help=argparse.SUPPRESS)
    p.add_argument("--hours", type=float, help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([0.01, 0.02, 0.04] if args.quick else [0.25, 1.0, 4.0])
    args.dev_hours = args.dev_hours or (0.005 if args.quick else DEV_HOURS)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    head = common.header("bench.scaling", argv)
    args.threads = common.set_threads(args.threads)
    work = common.WORK_DIR / "scaling"
    sizes = []
    for hours in args.sizes:
        cache = work / f"{hours:g}h"
        shutil.rmtree(cache, ignore_errors=True)  # cold: feature extraction is part of what is measured
        try:
            feats = run_child("features", hours, cache, args)
            train = run_child("train", hours, cache, args)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        sizes.append({"hours": hours, "features": feats, "train": train})
        print(f"{hours:g} h: features {feats['seconds']:.1f} s (peak RSS {feats['peak_rss_mb']:.0f} MiB), "
              f"epoch {train['seconds']:.1f} s in {train['steps']} steps (peak RSS {train['peak_rss_mb']:.0f} MiB)",
              flush=True)
    res = {"setup": {"sizes": args.sizes, "preset": args.preset, "batch_seconds": args.batch_seconds,
                     "threads": args.threads, "dev_hours": args.dev_hours, "languages": args.languages},
           "sizes": sizes}
    lo, hi = sizes[0], sizes[-1]
    hrs = [s["train"]["audio_seconds"] / 3600 for s in sizes]
    a, b = fit_line(hrs, [s["train"]["seconds"] for s in sizes])
    res["growth"] = {"hours_ratio": hi["hours"] / lo["hours"],
                     "features_seconds": hi["features"]["seconds"] / lo["features"]["seconds"],
                     "train_seconds": hi["train"]["seconds"] / lo["train"]["seconds"],
                     "features_rss": hi["features"]["peak_rss_mb"] / lo["features"]["peak_rss_mb"],
                     "train_rss": hi["train"]["peak_rss_mb"] / lo["train"]["peak_rss_mb"], "a": a, "b": b}
    res["matrix"] = matrix_costs(a, b)
    res["complexity"] = complexity_note(res)
    common.write_results(NAME, head, res, markdown(res), common.results_dir(args.out, args.quick), title="Scaling: corpus hours and languages")
    return res


if __name__ == "__main__":
    main()
