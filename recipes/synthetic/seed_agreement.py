"""How well does one more training run of the matrix itself pick each target's best source? The oracle's own noise
ceiling for a source ranking.

    python recipes/synthetic/seed_agreement.py results/ranking_benchmark/benchmark_3seeds \
        [--rank-eval results/ranking_benchmark/benchmark_3seeds/ranking_nofloor] [--out FILE.md]

Reads a matrix folder whose cells were trained at several seeds (report/runs.csv; e.g. benchmark.sh stage 6 or 7)
and, for each seed s in turn, treats the cells of seed s as a "predictor" of the mean of the other seeds (the
reference): per target, the predictor's pick is the source with the lowest CER at seed s, the reference's best the
one with the lowest mean over the other seeds (sources other than the target only). Reported per held-out seed and
on average: top-1 (the pick is the reference's best) over all targets and over the targets that a rank-eval output
calls unique-best (--rank-eval: its oracle's noise view), and the mean regret (the reference's CER of the pick minus
that of its best), each beside a random ranking's expectation (top-1 1/(sources); regret: the mean over sources).

A source predictor is scored against the oracle with the same noise in it, so this is the agreement to expect from
a perfect predictor of the *expected* CER when the matrix is re-drawn once: a predictor near it is at the noise
ceiling of the benchmark, and a goal above it cannot be met by any predictor.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def read_cells(folder: Path) -> dict[tuple[str, str], dict[int, float]]:
    """{(target, source): {seed: test CER}} of the single-source, off-diagonal adaptation runs of report/runs.csv."""
    path = folder / "report" / "runs.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `xlingual report {folder}` (or restore the matrix) first")
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for r in csv.DictReader(path.open(encoding="utf-8")):
        if r["kind"] != "adapt" or r["label"] != "main" or r["learned"] != "True":
            continue
        source = r["name"].split("/")[1].split("_to_")[0].rsplit("-", 1)[0]
        if "+" in source or source == r["language"]:
            continue  # pools and the target itself are not candidates
        cells.setdefault((r["language"], source), {})[int(r["seed"])] = float(r["test_cer"])
    return cells


def agreement(cells: dict, unique_best: set[str] | None = None, picks: dict[str, str] | None = None) -> dict:
    """Leave-one-seed-out agreement (see the module docstring): {"seeds": [per held-out seed], "mean": {...}}.

    picks: {target: source} of a predictor, scored instead of seed s's own picks against the same references (the
    mean of the seeds other than s), so that a predictor and a re-drawn seed are measured alike.
    """
    seeds = sorted({s for v in cells.values() for s in v})
    targets = sorted({t for t, _ in cells})
    if len(seeds) < 2:
        raise SystemExit(f"the matrix has cells at {len(seeds)} seed(s): this needs two or more")
    rows = []
    for s in seeds:
        hits, hits_u, regrets, rand_regrets, rand_top1, rand_top1_u = 0, 0, [], [], [], []
        for t in targets:
            srcs = [src for (tt, src), v in cells.items() if tt == t and set(v) == set(seeds)]
            if len(srcs) < 2:
                continue
            pick = picks[t] if picks is not None else min(srcs, key=lambda src: cells[(t, src)][s])
            ref = {src: statistics.mean(c for k, c in cells[(t, src)].items() if k != s) for src in srcs}
            best = min(srcs, key=ref.get)
            if pick not in ref:
                raise SystemExit(f"the predictor picks {pick} for {t}, which is not a source of the matrix")
            hits += pick == best
            hits_u += pick == best and t in (unique_best or ())
            regrets.append(ref[pick] - ref[best])
            rand_regrets.append(statistics.mean(ref.values()) - ref[best])
            rand_top1.append(1 / len(srcs))
            rand_top1_u.append(1 / len(srcs) if t in (unique_best or ()) else 0.0)
        rows.append({"held_out_seed": s, "targets": len(regrets), "top1": hits, "top1_unique_best": hits_u,
                     "mean_regret": statistics.mean(regrets), "random_regret": statistics.mean(rand_regrets),
                     "random_top1": sum(rand_top1), "random_top1_unique_best": sum(rand_top1_u)})
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("top1", "top1_unique_best", "mean_regret",
                                                             "random_regret", "random_top1",
                                                             "random_top1_unique_best")}
    return {"seeds": rows, "mean": mean, "n_unique_best": len(unique_best or ()), "targets": len(targets)}


def table(results: dict[str, dict]) -> str:
    """One row per picker: the mean over held-out seeds, with the range over seeds in brackets."""
    lines = ["| picks | top-1 | top-1 of the unique-best targets | mean regret (CER points) |", "|---|---|---|---|"]
    for name, res in results.items():
        lines.append(f"| {name} | {_cell(res, 'top1')} of {res['seeds'][0]['targets']} | "
                     + (f"{_cell(res, 'top1_unique_best')} of {res['n_unique_best']}" if res["n_unique_best"] else "-")
                     + f" | {_cell(res, 'mean_regret', '.2f')} |")
    m = next(iter(results.values()))["mean"]
    lines.append(f"| random ranking (expectation) | {m['random_top1']:.2f} | {m['random_top1_unique_best']:.2f} | "
                 f"{m['random_regret']:.2f} |")
    return "\n".join(lines) + "\n"


def _cell(res: dict, key: str, fmt: str = ".3g") -> str:
    v = [r[key] for r in res["seeds"]]
    return f"{res['mean'][key]:{fmt}} ({min(v):{fmt}}..{max(v):{fmt}})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("matrix", type=Path, help="a matrix folder with cells at 2+ seeds (report/runs.csv)")
    p.add_argument("--rank-eval", type=Path, help="a rank-eval output (folder or ranking_eval.json) whose oracle's "
                                                  "unique-best targets are counted apart")
    p.add_argument("--predictor", action="append", default=[], metavar="GROUP/NAME",
                   help="also score this predictor of --rank-eval (e.g. loo/lid_fused) against the same references; "
                        "repeatable")
    p.add_argument("--out", type=Path, help="also write the table here (Markdown, and the figures as .json)")
    args = p.parse_args(argv)
    unique, evaluations = None, {}
    if args.rank_eval:
        path = args.rank_eval / "ranking_eval.json" if args.rank_eval.is_dir() else args.rank_eval
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `xlingual rank-eval` first")
        ev = json.loads(path.read_text(encoding="utf-8"))
        unique, evaluations = set(ev["oracle"]["unique_best"]), ev["evaluations"]
    elif args.predictor:
        p.error("--predictor needs --rank-eval")
    cells = read_cells(args.matrix)
    res = {"a re-drawn seed of the matrix": agreement(cells, unique)}
    for name in args.predictor:
        group, _, pred = name.partition("/")
        e = evaluations.get(group, {}).get(pred)
        if not e or not e.get("targets"):
            raise SystemExit(f"{args.rank_eval} has no evaluation of {name}; it has "
                             + ", ".join(f"{g}/{n}" for g, v in evaluations.items() for n in v))
        res[name] = agreement(cells, unique, {r["target"]: r["predicted"][0][0] for r in e["targets"]})
    text = table(res) + (f"\nUnique-best targets (from `{args.rank_eval}`): {', '.join(sorted(unique))}.\n"
                         if unique else "")
    print(text, end="")
    if args.out:
        cmd = " ".join(["python recipes/synthetic/seed_agreement.py", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(f"# One seed of the matrix as a predictor of the other seeds' mean\n\n`{cmd}`\n\n{text}",
                            encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
