"""Ranking vs matrix: what it costs to choose a source for a new language by LID, against training its matrix row.

  query   `xlingual rank --lid <model> --target <manifest> --json` as a user runs it (a fresh process: imports,
          checkpoint load, feature extraction of the target's audio, one LID forward), median wall time of
          --repeats calls; and rank_query() inside a warm process (what a notebook pays per extra query)
  row     the wall seconds a matrix spent on one target's row: its from-scratch baseline at the target budget
          plus the adaptation from every source (the matrix's `runs.csv`, column wall_seconds; the sources'
          pre-training is not counted, since a ranking needs it too: the LID is trained on the same sources)

    python -m bench.ranking_cost --lid exp/lid_synthetic/best.pt --target exp/rank_new/test.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "ranking_cost"
RUNS_CSV = common.REPO / "results" / "matrix_synthetic" / "runs.csv"


def row_seconds(runs_csv: Path) -> dict[str, dict]:
    """Per target: wall seconds of its small-budget baseline(s) and of its main adaptation cells, from runs.csv.

    A matrix cell is a main-method adaptation run to the target from a large-budget source; with several seeds
    the mean over seeds is taken for each run.
    """
    rows = list(csv.DictReader(runs_csv.open(encoding="utf-8")))
    if not rows:
        raise ValueError(f"{runs_csv} lists no runs")
    hours = {r["hours"] for r in rows if r["kind"] == "adapt"}
    if len(hours) != 1:
        raise ValueError(f"{runs_csv}: expected one target budget among the adaptation runs, found {sorted(hours)}")
    budget = hours.pop()
    large = {r["name"] for r in rows if r["kind"] == "scratch" and r["hours"] != budget}
    out: dict[str, dict] = {}
    for t in sorted({r["language"] for r in rows if r["kind"] == "adapt"}):
        base = [float(r["wall_seconds"]) for r in rows if r["kind"] == "scratch" and r["language"] == t
                and r["hours"] == budget and r["wall_seconds"]]
        cells: dict[str, list[float]] = {}
        for r in rows:
            if r["kind"] == "adapt" and r["language"] == t and r["label"] == "main" and r["source"] in large \
                    and r["wall_seconds"]:
                cells.setdefault(r["source"].split("/")[1].rsplit("-", 1)[0], []).append(float(r["wall_seconds"]))
        if base and cells:
            per_cell = {s: statistics.mean(v) for s, v in cells.items()}
            out[t] = {"baseline_s": statistics.mean(base), "cells_s": per_cell,
                      "row_s": statistics.mean(base) + sum(per_cell.values())}
    if not out:
        raise ValueError(f"{runs_csv}: no target has both a finished baseline and adaptation cells")
    return out


def time_query(lid: Path, target: Path, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "xlingual.cli", "rank", "--lid", str(lid), "--target", str(target), "--json"]
    walls, inner = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO, timeout=600)
        walls.append(time.perf_counter() - t0)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        inner.append(json.loads(out.stdout)["seconds"])
    from xlingual.ranking import rank_query

    warm = []
    rank_query(lid, target)  # first call loads the libraries
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = rank_query(lid, target)
        warm.append(time.perf_counter() - t0)
    return {"cli_s": common.stats(walls), "cli_reported_s": common.stats(inner), "warm_s": common.stats(warm),
            "ranking": [list(x) for x in result.ranking], "n_utterances": result.n_utterances,
            "hours": result.hours}


def _shown(path: str) -> str:
    """A path relative to the repository when it lies inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(common.REPO)) if p.is_relative_to(common.REPO) else str(p)


def markdown(res: dict) -> str:
    q, rows = res["query"], res["rows"]
    cli = q["cli_s"]["median"]
    lines = [f"Query: `xlingual rank` on {q['n_utterances']} utterances ({60 * (q['hours'] or 0):.1f} min of audio) "
             f"of a language the LID never heard: whole CLI call {common.fmt(cli)} s (median of "
             f"{q['cli_s']['n']}; {common.fmt(q['cli_s']['min'])}..{common.fmt(q['cli_s']['max'])}), of which "
             f"scoring {common.fmt(q['cli_reported_s']['median'])} s; in a warm process "
             f"{common.fmt(q['warm_s']['median'])} s.\n",
             f"Matrix rows ({_shown(res['runs_csv'])}): the target's from-scratch baseline plus one adaptation from each "
             "source, wall seconds as that matrix recorded them.\n"]
    table = [[t, r["baseline_s"], sum(r["cells_s"].values()), len(r["cells_s"]), r["row_s"], r["row_s"] / cli,
              r["row_s"] / q["warm_s"]["median"]] for t, r in rows.items()]
    lines.append(common.md_table(["target", "baseline s", "adaptation s", "sources", "row s",
                                  "row / CLI query", "row / warm query"], table))
    lines.append(f"Smallest ratio: {common.fmt(min(x[5] for x in table))}x (whole CLI call). The LID model itself "
                 "is trained once for all sources, like the sources' pre-training, and is not in either figure.")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lid", required=True, help="an LID checkpoint (xlingual lid train)")
    p.add_argument("--target", required=True, help="manifest or audio folder of the new language")
    p.add_argument("--runs-csv", default=str(RUNS_CSV), help="a matrix report's runs.csv (default: the committed "
                   "results/matrix_synthetic)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.ranking_cost", argv)
    res = {"runs_csv": args.runs_csv, "rows": row_seconds(Path(args.runs_csv)),
           "query": time_query(Path(args.lid), Path(args.target), args.repeats)}
    common.write_results(NAME, head, res, markdown(res), common.results_dir(args.out, False),
                         title="LID ranking query vs training a matrix row")
    return res


if __name__ == "__main__":
    main()
