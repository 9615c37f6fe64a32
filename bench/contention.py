"""The demo (and the matrix inside it) on the idle machine and beside busy processes, in one invocation.

Researchers run the toolkit on shared workstations and oversubscribed cluster nodes. This runs `xlingual demo` into
a fresh empty folder twice: first on the idle machine, then with --load busy processes (Python loops, one core
each) started before it and kept running to its end, and reports wall time, the matrix's and the LID's time (from
the demo's summary.json), the demo's CPU seconds and peak memory, and the loaded / idle ratios. The goal (issue 16):
at most 1.5x slower with one busy process per machine.

Before the loaded run the busy processes run until the cores show them busy (at most --settle-max seconds), as when
another job was already running: `xlingual` decides how its OpenMP threads wait from how busy its cores are when it
starts (xlingual/cores.py; before 0.2's cores.busy_cores, from the 1-minute load average).

    python -m bench.contention                  # ~12 min on 2 cores: demo at scale 1, idle then 1 busy process
    python -m bench.contention --quick          # smoke run: demo at scale 0.15
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.optimizations import Load
from xlingual.cores import BUSY_CORES, busy_cores, openmp_wait

NAME = "contention"


def settle(n: int, max_seconds: float) -> float:
    """Wait until the cores show n busy processes (xlingual.cores.busy_cores, what the CLI looks at when it starts),
    or max_seconds; returns the wait."""
    t0 = time.time()
    while n and (busy_cores(0.2) or 0.0) < BUSY_CORES * n and time.time() - t0 < max_seconds:
        time.sleep(0.5)
    return round(time.time() - t0, 1)


def run_demo(out: Path, scale: float, jobs: int) -> dict:
    """`xlingual demo` into the empty folder `out` as a child process: its summary, wall, CPU seconds, peak RSS."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "xlingual.cli", "demo", "--out", str(out), "--scale", str(scale),
                           "--jobs", str(jobs)], capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"xlingual demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": round(wall, 1), "timings_s": summary["timings_s"],
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "peak_memory_gb": summary["peak_memory_gb"],
            "unlearned": len(json.loads((out / "matrix" / "report" / "unlearned.json").read_text()))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", type=int, default=1, help="busy processes in the loaded run (default 1)")
    p.add_argument("--scale", type=float, default=1.0, help="the demo's --scale (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="the demo's --jobs (default 2)")
    p.add_argument("--settle-max", type=float, default=30.0, help="longest wait for the busy processes to show (s)")
    p.add_argument("--quick", action="store_true", help="smoke run: scale 0.15, no settling")
    p.add_argument("--out", default=None, help="results folder (default results/bench; --quick: exp/bench/quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.settle_max = 0.15, 0.0
    head = common.header(f"bench.{NAME}", argv)
    work = common.WORK_DIR / NAME
    runs = {}
    for label, n in (("idle", 0), ("loaded", args.load)):
        with Load(n):
            waited = settle(n, args.settle_max)
            load_at_start = round(os.getloadavg()[0], 2)
            busy = busy_cores(0.2)
            busy = None if busy is None else round(busy, 2)
            # what the CLI will choose from how busy the cores are when it starts (None: libgomp's default)
            policy = openmp_wait(os.environ, busy)
            print(f"{label}: xlingual demo --scale {args.scale} with {n} busy processes (busy cores {busy}, "
                  f"load average {load_at_start}) ...", flush=True)
            runs[label] = {**run_demo(work / label, args.scale, args.jobs), "busy_processes": n,
                           "settled_s": waited, "loadavg_at_start": load_at_start, "busy_cores_at_start": busy,
                           "omp_wait_policy": policy or "default"}
        r = runs[label]
        print(f"{label}: {r['wall_s']:.0f} s wall, matrix {r['timings_s']['matrix_s']:.0f} s, "
              f"LID {r['timings_s'].get('lid_train_s', 0):.0f} s", flush=True)
    idle, loaded = runs["idle"], runs["loaded"]
    ratio = {"wall": loaded["wall_s"] / idle["wall_s"],
             "matrix": loaded["timings_s"]["matrix_s"] / idle["timings_s"]["matrix_s"],
             "lid": loaded["timings_s"].get("lid_train_s", 0) / max(idle["timings_s"].get("lid_train_s", 0), 1e-9)}
    results = {"scale": args.scale, "jobs": args.jobs, "runs": runs, "loaded_over_idle": ratio}
    rows = [[label, r["busy_processes"], r["busy_cores_at_start"], r["loadavg_at_start"], r["omp_wait_policy"],
             r["wall_s"],
             r["timings_s"]["matrix_s"], r["timings_s"].get("lid_train_s"), r["cpu_s"], r["peak_memory_gb"],
             r["unlearned"]]
            for label, r in runs.items()]
    rows.append(["loaded / idle", "", "", "", "", ratio["wall"], ratio["matrix"], ratio["lid"], "", "", ""])
    md = (f"`xlingual demo --scale {args.scale} --jobs {args.jobs}` into an empty folder, on the idle machine and "
          f"then beside {args.load} busy process(es) (a Python loop each, running before the demo started, and to "
          f"its end). Goal: at most 1.5x slower loaded.\n\n"
          + common.md_table(["run", "busy processes", "busy cores at start", "load avg at start", "OpenMP waits",
                             "wall s", "matrix s", "LID s", "CPU s (demo + workers)", "peak GB",
                             "unlearned runs"], rows))
    common.write_results(NAME, head, results, md, common.results_dir(args.out, args.quick),
                         title="The demo idle and beside busy processes")
    return results


if __name__ == "__main__":
    main()
