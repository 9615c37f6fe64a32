"""A slice of the ranking benchmark's matrix, made by the code of two commits, one after the other in one run.

Issue 16 asks that the benchmark matrix run at least 1.5x faster than with the per-run settings of its time. This
extracts each commit's tree (`git archive`: the repository is not touched), prepares each side's own copy of the
corpus (not timed: only the matrix is), and runs `xlingual matrix recipes/synthetic/benchmark.yaml --jobs N` from
that tree, with that commit's recipe, on the same slice of sources and targets (the single-source pre-training
runs, every adaptation between them and each target's 3-min from-scratch baseline; no pools, one seed), into an
empty folder, with an empty feature cache. Sides alternate (before, after, after, before, ...) and the figure is
the median of the per-round ratios. Reported per side: the matrix's wall time, the runs' own seconds by kind
(results.json wall_seconds), how many runs learned, and the mean test CER (the code changed, so the cells are
another draw, not the same numbers: the check is that they are alike).

The default "before" is e55f52c, the last commit before the first change made for issue 16 (fused AdamW eea8f82,
serving matrix workers 4a29bcc, cheap dropout masks 58203f6, dev passes from half-way 96d4b14 with the recipe's
eval_from 0.5).

    python -m bench.matrix_speed                 # ~20 min on 2 cores: 2 rounds of 2 sources x 4 targets
    python -m bench.matrix_speed --quick         # smoke run: HEAD against itself on a tiny slice

--after-set KEY=VALUE (repeatable) adds a recipe override to the "after" side only: e.g. the same commit on both
sides with `--before HEAD --after-set train.cpu_bf16=true --after-set small_train.cpu_bf16=true --after-set
adapt.train.cpu_bf16=true` times one setting against the recipe's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "matrix_speed"
BEFORE = "e55f52c"  # the last commit before issue 16's first change (eea8f82, fused AdamW)
RECIPE = "recipes/synthetic/benchmark.yaml"
# one slice of the benchmark: no pools and no extra seeds, so that every run is a single-source or baseline run
SLICE = ("baseline_seeds=[]", "pools={}", "pool_budgets=[]", "seeds=[0]")
QUICK = ("source_hours=0.01", "target_hours=0.005", "dev_hours=0.005", "corpus.train_hours=0.02",
         "corpus.dev_hours=0.005", "corpus.test_hours=0.005", "train.epochs=2", "small_train.epochs=2",
         "adapt.train.epochs=2")


def extract(commit: str, where: Path) -> str:
    """The tree of `commit` in the empty folder `where` (git archive | tar); returns its full hash."""
    full = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=common.REPO,
                          capture_output=True, text=True, check=True).stdout.strip()
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", full], cwd=common.REPO, stdout=subprocess.PIPE)
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        tar.extractall(where, filter="data")
    if archive.wait():
        raise RuntimeError(f"git archive {full} failed ({archive.returncode})")
    return full


def _env(code: Path) -> dict:
    """Run `code`'s package, not the installed one: it comes first on the path of the matrix and of its workers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    return env


def prepare(code: Path, sets: list[str]) -> None:
    """The side's corpus, made by its own code before any timing (the matrix step then finds it up to date)."""
    script = ("import sys\nfrom xlingual.config import MatrixConfig, load_config\n"
              "from xlingual.runspec import prepare_corpus\n"
              "c = load_config(MatrixConfig, sys.argv[1], sys.argv[2:])\n"
              "prepare_corpus(c.corpus, sorted(set(c.sources) | set(c.targets)), progress=False)\n")
    subprocess.run([sys.executable, "-c", script, RECIPE, *sets], cwd=code, env=_env(code), check=True,
                   capture_output=True, text=True)


def run_matrix(code: Path, sets: list[str], out: Path, jobs: int) -> dict:
    """`xlingual matrix` of `code` into the empty folder `out`, its feature cache emptied first."""
    for old in (out, Path(_set_value(sets, "corpus.dir")) / ".features"):
        if old.exists():
            shutil.rmtree(old)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "xlingual.cli", "matrix", RECIPE, "--jobs", str(jobs),
                           *[a for s in [*sets, f"out_dir={out}"] for a in ("--set", s)]],
                          cwd=code, env=_env(code), capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"xlingual matrix ({code}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": round(wall, 1), **summarize(out)}


def _set_value(sets: list[str], key: str) -> str:
    return [s.split("=", 1)[1] for s in sets if s.startswith(key + "=")][-1]


def summarize(out: Path) -> dict:
    """What the runs of a matrix folder say: seconds by kind (sources, adaptations, baselines), learned, mean CER."""
    seconds = {"source": [], "adapt": [], "baseline": []}
    cers, learned, versions = [], 0, set()
    runs = {str(path.parent.relative_to(out)): json.loads(path.read_text())
            for path in sorted(out.glob("*/**/results.json"))}
    pretrained = {r.get("source_run") for r in runs.values() if r["kind"] == "adapt"}  # what adaptations start from
    for name, r in runs.items():
        kind = "adapt" if r["kind"] == "adapt" else ("source" if name in pretrained else "baseline")
        seconds[kind].append(r["wall_seconds"])
        learned += bool(r.get("learned"))
        versions.add(r.get("code_version"))
        if r.get("test"):
            cers.append(r["test"]["cer"])
    return {"runs": len(runs), "learned": learned, "run_seconds": {k: round(sum(v), 1) for k, v in seconds.items()},
            "mean_test_cer": round(statistics.fmean(cers), 2) if cers else None,
            "code_versions": sorted(v for v in versions if v)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=BEFORE, help=f"the earlier commit (default {BEFORE})")
    p.add_argument("--after", default="HEAD", help="the later commit (default HEAD)")
    p.add_argument("--sources", default="bn,tr", help="the slice's sources (default bn,tr)")
    p.add_argument("--targets", default="bn,as,tr,az", help="the slice's targets (default bn,as,tr,az)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (before, after), alternating order (default 2)")
    p.add_argument("--jobs", type=int, default=2, help="the matrix's --jobs (default 2)")
    p.add_argument("--after-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for the after side only (repeatable)")
    p.add_argument("--quick", action="store_true", help="smoke run: HEAD against itself, 1 source x 1 target, tiny")
    p.add_argument("--out", default=None, help="results folder (default results/bench; --quick: exp/bench/quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.before, args.sources, args.targets, args.rounds, args.jobs = "HEAD", "bn", "bn", 1, 1
    head = common.header(f"bench.{NAME}", argv)
    work = common.WORK_DIR / NAME
    sides, code = {}, {}
    for side in ("before", "after"):
        code[side] = work / f"code_{side}"
        commit = extract(getattr(args, side), code[side])
        sets = [*SLICE, f"sources=[{args.sources}]", f"targets=[{args.targets}]",
                f"corpus.dir={work / f'data_{side}'}", *(QUICK if args.quick else ()),
                *(args.after_set if side == "after" else ())]
        print(f"{side}: {commit[:10]}, preparing its corpus ...", flush=True)
        prepare(code[side], sets)
        sides[side] = {"commit": commit, "sets": sets, "rounds": []}
    for i in range(args.rounds):
        for side in (("before", "after") if i % 2 == 0 else ("after", "before")):
            r = run_matrix(code[side], sides[side]["sets"], work / f"matrix_{side}", args.jobs)
            sides[side]["rounds"].append({**r, "loadavg_after": round(os.getloadavg()[0], 2)})
            print(f"round {i + 1} {side}: {r['wall_s']:.0f} s wall, {r['runs']} runs ({r['learned']} learned), "
                  f"mean test CER {r['mean_test_cer']}", flush=True)
    ratios = [b["wall_s"] / a["wall_s"] for b, a in zip(sides["before"]["rounds"], sides["after"]["rounds"])]
    results = {"sources": args.sources, "targets": args.targets, "jobs": args.jobs, "after_set": args.after_set,
               "sides": sides,
               "before_over_after": {"median": round(statistics.median(ratios), 3),
                                     "rounds": [round(x, 3) for x in ratios]}}
    rows = []
    for side, s in sides.items():
        for i, r in enumerate(s["rounds"]):
            rows.append([side, s["commit"][:10], i + 1, r["wall_s"], r["run_seconds"]["source"],
                         r["run_seconds"]["adapt"], r["run_seconds"]["baseline"], f"{r['learned']} of {r['runs']}",
                         r["mean_test_cer"], r["loadavg_after"]])
    extra = (f" The after side with `{' '.join('--set ' + a for a in args.after_set)}`." if args.after_set else "")
    md = (f"`xlingual matrix {RECIPE} --jobs {args.jobs}` on sources [{args.sources}] x targets [{args.targets}] "
          f"(their pre-training, every adaptation, each target's 3-min baseline; no pools, one seed), each commit's "
          f"own code and recipe, into an empty folder with an empty feature cache; corpus prepared beforehand (not "
          f"timed).{extra} **Before / after wall time: x{results['before_over_after']['median']:.2f}** (median of rounds "
          f"{', '.join(f'{x:.2f}' for x in ratios)}; goal >= 1.5).\n\n"
          + common.md_table(["side", "commit", "round", "matrix wall s", "source runs s", "adaptation runs s",
                             "baseline runs s", "learned", "mean test CER %", "load avg after"], rows))
    common.write_results(NAME, head, results, md, common.results_dir(args.out, args.quick),
                         title="The benchmark matrix: code before issue 16 vs now")
    return results


if __name__ == "__main__":
    main()
