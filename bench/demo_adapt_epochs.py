"""Could the demo's adaptation runs take fewer epochs? (the demo's time is mostly its 22 adaptation runs)

    python -m bench.demo_adapt_epochs <demo folder> <epochs> [--jobs N]

Needs a finished `xlingual demo --out <demo folder>`. Copies what its matrix measured (collect.py save, no
checkpoints) to <demo folder>_matrix_e<default epochs>, re-runs only the adaptation cells at <epochs> (sources and
baselines are reused: their run keys do not change) and prints, per cell, test CER at the demo's epochs and at
<epochs>, the mean difference and the runs that did not learn. The demo folder then holds the <epochs> runs.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


def main(argv: list[str]) -> int:
    from xlingual.demo import demo_configs
    from xlingual.matrix import run_matrix
    from xlingual.report import write_report

    jobs = 2
    if len(argv) == 4 and argv[2] == "--jobs":
        jobs, argv = int(argv[3]), argv[:2]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, epochs = Path(argv[0]), int(argv[1])
    summary = out / "summary.json"
    if not summary.is_file():
        print(f"{summary} not found: run `xlingual demo --out {out}` to the end first", file=sys.stderr)
        return 2
    m, _, _ = demo_configs(out, json.loads(summary.read_text())["scale"])  # the corpus it was made with
    before = Path(f"{out}_matrix_e{m.adapt.train.epochs}")
    if not before.exists():
        collect = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / "collect.py"
        subprocess.run([sys.executable, str(collect), "save", str(out / "matrix"), str(before)], check=True)
    t0 = time.time()
    run_matrix(replace(m, adapt=replace(m.adapt, train=replace(m.adapt.train, epochs=epochs))), jobs=jobs,
               progress=False)
    seconds = time.time() - t0
    write_report(out / "matrix")
    rows = {name: {r["name"]: r for r in csv.DictReader(open(folder / "report" / "runs.csv"))}
            for name, folder in (("before", before), ("after", out / "matrix"))}
    diffs, unlearned = [], []
    print(f"| adaptation run | test CER, {m.adapt.train.epochs} epochs | test CER, {epochs} epochs |\n|---|---|---|")
    for name, r in rows["before"].items():
        if name.startswith("adapt/"):
            a, b = float(r["test_cer"]), float(rows["after"][name]["test_cer"])
            diffs.append(b - a)
            unlearned += [name] if rows["after"][name]["learned"] != "True" else []
            print(f"| {name} | {a:.1f} | {b:.1f} |")
    print(f"\n{epochs} epochs: CER {statistics.mean(diffs):+.2f} points on average (sd {statistics.stdev(diffs):.2f}, "
          f"{len(diffs)} runs), did not learn: {', '.join(unlearned) or 'none'}; {seconds:.0f} s for the re-run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
