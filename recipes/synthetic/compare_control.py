"""Does the benchmark's transfer matrix survive the control corpus (no word form shared between languages)?

    python recipes/synthetic/compare_control.py results/ranking_benchmark/benchmark \
        results/ranking_benchmark/benchmark_control [--out results/ranking_benchmark/control_vs_main.md]

With each matrix's noise matrix beside it (<matrix>_seeds/, as benchmark.sh makes them), also the training noise
of each: the standard deviation of an adaptation cell's test CER over seeds 0-2 (its source retrained at each seed),
pooled over the off-diagonal cells that have all three.

Reads each matrix's report/cer_matrix.csv (rows: targets, columns: sources) and prints, over the cells where a
target is adapted from another single source: the correlation of the two matrices' cells, the mean CER of
same-family and other-family sources and of the diagonal, and per target the best source in each and the rank
correlation of its sources. Families: the benchmark's (benchmark.yaml). One seed per cell: differences of a point
or two between the two are within a cell's training noise (sd ~1.6 CER points in the main benchmark).

With --rankings MAIN CONTROL (two `xlingual rank-eval` outputs: folders or ranking_eval.json, the same noise rule on
each; repeat it for another noise view), also whether the source rankings survive: per predictor, its top-1 (of the targets, and of those with a
unique best beyond noise), mean regret, pooled Spearman and permutation p on each corpus, each beside random's.

    python recipes/synthetic/compare_control.py results/ranking_benchmark/benchmark \
        results/ranking_benchmark/benchmark_control --rankings \
        results/ranking_benchmark/benchmark/ranking_loo6_pools \
        results/ranking_benchmark/benchmark_control/ranking_loo6
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from scipy.stats import pearsonr, spearmanr

FAMILIES = {"bn": "Indo-Aryan", "as": "Indo-Aryan", "hi": "Indo-Aryan", "ne": "Indo-Aryan", "mr": "Indo-Aryan",
            "ur": "Indo-Aryan", "tr": "Turkic", "az": "Turkic", "kk": "Turkic", "uz": "Turkic", "ta": "Dravidian",
            "te": "Dravidian", "th": "Tai-Kadai"}


def read_matrix(folder: Path) -> dict[tuple[str, str], float]:
    """{(target, source): test CER} of a matrix's report (single-language sources only)."""
    path = folder / "report" / "cer_matrix.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the matrix (recipes/synthetic/benchmark.sh) or restore it first")
    rows = list(csv.reader(path.open(encoding="utf-8")))
    sources = rows[0][1:]
    return {(r[0], s): float(v) for r in rows[1:] for s, v in zip(sources, r[1:]) if v and s in FAMILIES}


def seed_sd(folder: Path) -> tuple[int, float] | None:
    """(cells, pooled sd of test CER over seeds 0-2) of the single-source adaptation cells of `folder` and its noise
    matrix <folder>_seeds (None when that is missing)."""
    files = [folder / "report" / "runs.csv", Path(f"{folder}_seeds") / "report" / "runs.csv"]
    if not all(f.is_file() for f in files):
        return None
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for f in files:
        for r in csv.DictReader(f.open(encoding="utf-8")):
            source = r["name"].split("/")[1].split("-")[0] if r["kind"] == "adapt" else None
            if source in FAMILIES and source != r["language"] and r["label"] == "main":
                cells.setdefault((r["language"], source), {})[r["seed"]] = float(r["test_cer"])
    full = [list(v.values()) for v in cells.values() if len(v) == 3]
    return (len(full), statistics.mean(statistics.variance(v) for v in full) ** 0.5) if full else None


def compare(main: dict, control: dict, noise: dict | None = None,
            names: tuple[str, str] = ("main", "control")) -> str:
    cells = sorted(k for k in main if k[0] != k[1] and k in control)
    if not cells:
        raise SystemExit("the two matrices share no off-diagonal cell")
    a, b = [main[k] for k in cells], [control[k] for k in cells]
    d = [y - x for x, y in zip(a, b)]
    lines = [f"{len(cells)} cells (a target adapted from another single source) in both: Pearson "
             f"{pearsonr(a, b)[0]:.3f}, Spearman {spearmanr(a, b)[0]:.3f}; mean CER {statistics.mean(a):.1f} ({names[0]}) "
             f"vs {statistics.mean(b):.1f} ({names[1]}); their difference per cell: mean "
             f"{statistics.mean(d):+.2f}, sd {statistics.stdev(d):.2f} CER points.", "",
             "| matrix | same-family sources | other-family sources | diagonal (the target itself) |",
             "|---|---|---|---|"]
    for name, m in zip(names, (main, control)):
        same = [m[k] for k in cells if FAMILIES[k[0]] == FAMILIES[k[1]]]
        other = [m[k] for k in cells if FAMILIES[k[0]] != FAMILIES[k[1]]]
        diag = [m[(t, t)] for t in FAMILIES if (t, t) in m]
        lines.append(f"| {name} | {statistics.mean(same):.1f} | {statistics.mean(other):.1f} | "
                     f"{statistics.mean(diag):.1f} |")
    for name, sd in (noise or {}).items():
        if sd:
            lines.append(f"\nTraining noise, {name}: sd {sd[1]:.2f} CER points (an adaptation cell over seeds 0-2, "
                         f"sources retrained; pooled over {sd[0]} cells).")
    lines += ["", f"| target | best source, {names[0]} (CER) | best source, {names[1]} (CER) | same family as the "
              f"target ({names[0]} / {names[1]}) | Spearman of its sources |", "|---|---|---|---|---|"]
    for t in FAMILIES:
        srcs = [s for s in FAMILIES if s != t and (t, s) in main and (t, s) in control]
        if len(srcs) < 2:
            continue
        bm, bc = min(srcs, key=lambda s: main[(t, s)]), min(srcs, key=lambda s: control[(t, s)])
        fam = lambda s: "yes" if FAMILIES[s] == FAMILIES[t] else "no"  # noqa: E731
        rho = spearmanr([main[(t, s)] for s in srcs], [control[(t, s)] for s in srcs])[0]
        lines.append(f"| {t} | {bm} ({main[(t, bm)]:.1f}) | {bc} ({control[(t, bc)]:.1f}) | {fam(bm)} / {fam(bc)} "
                     f"| {rho:.2f} |")
    return "\n".join(lines) + "\n"


def read_rankings(path: Path) -> dict:
    """{group/predictor: evaluation} of a rank-eval output (its folder or ranking_eval.json)."""
    path = path / "ranking_eval.json" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `xlingual rank-eval` (benchmark.sh stage 3 or 4) first")
    ev = json.loads(path.read_text(encoding="utf-8"))["evaluations"]
    return {f"{group}/{name}": e for group, preds in ev.items() for name, e in preds.items() if e.get("summary")}


def compare_rankings(main: dict, control: dict, names: tuple[str, str] = ("main", "control")) -> str:
    """One row per predictor evaluated on both corpora: top-1, regret, Spearman, p, each beside random's."""
    def n(x: float) -> str:  # fractional hits (a predictor's own ties count by expectation) to one decimal
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"

    def cell(e: dict) -> str:
        s, perm = e["summary"], e.get("permutation", {})
        unique = (f"; {n(s['top1_hits_unique_best'])} of {s['n_unique_best']}" if s.get("n_unique_best") else "")
        p = perm.get("mean_regret", {}).get("p")
        return (f"{n(s['top1_hits'])} of {s['n_targets']}{unique} (random {s['random_top1_hits']:.2f}) | "
                f"{s['mean_regret']:.2f} (random {s['random_regret']:.2f}) | {s['spearman']:.3f} | "
                + (f"{p:.4f}" if p is not None else "-"))

    names = [n for n in main if n in control]
    if not names:
        raise SystemExit("the two rank-eval outputs share no predictor")
    head = [f"{col}, {name}" for name in names for col in ("top-1", "regret", "Spearman", "p (regret)")]
    lines = ["| predictor | " + " | ".join(head) + " |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {cell(main[n])} | {cell(control[n])} |" for n in names]
    only = sorted(set(main) ^ set(control))
    if only:
        lines.append(f"\nEvaluated on one corpus only: {', '.join(only)}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("main", type=Path)
    p.add_argument("control", type=Path)
    p.add_argument("--out", type=Path, help="also write the tables here (Markdown)")
    p.add_argument("--rankings", type=Path, nargs=2, metavar=("MAIN", "CONTROL"), action="append", default=[],
                   help="two rank-eval outputs (folder or ranking_eval.json): compare the predictors on both; "
                        "repeat for another pair (e.g. another noise view)")
    p.add_argument("--names", nargs=2, default=["main", "control"], metavar=("FIRST", "SECOND"),
                   help="what to call the two matrices in the tables (default: main control); e.g. `benchmark "
                        "rerun` for a re-run of the same matrix")
    p.add_argument("--title", default="The transfer matrix on the control corpus vs the main one",
                   help="the heading of --out")
    args = p.parse_args(argv)
    names = tuple(args.names)
    text = compare(read_matrix(args.main), read_matrix(args.control),
                   {names[0]: seed_sd(args.main), names[1]: seed_sd(args.control)}, names)
    for main_eval, control_eval in args.rankings:
        text += (f"\n## The source rankings on both corpora: `{main_eval}` vs `{control_eval}`\n\n"
                 + compare_rankings(read_rankings(main_eval), read_rankings(control_eval), names))
    print(text, end="")
    if args.out:
        cmd = " ".join(["python recipes/synthetic/compare_control.py", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(f"# {args.title}\n\n`{cmd}`\n\n{text}",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
