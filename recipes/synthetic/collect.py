"""Copy what an experiment measured (not its checkpoints) into results/, or back into exp/ to resume elsewhere.

    python recipes/synthetic/collect.py save exp/benchmark results/ranking_benchmark/matrix
    python recipes/synthetic/collect.py restore results/ranking_benchmark/matrix exp/benchmark
    python recipes/synthetic/collect.py save exp/benchmark exp/benchmark_seeds --only 'scratch/*-3min/seed[12]'

`save` keeps, for every run folder below the source (a folder with a run.json or cell.json): cell.json, run.json,
results.json, train_log.jsonl, decode_*/errors.jsonl, decode_*/summary.json, decode_*/report.json and
decode_*/confusion.csv; and every file of the top-level report/ and ranking*/ folders (a ranking evaluation's
--out, e.g. ranking/ or ranking_phones/) and the matrix's plan
(cells.json, matrix.yaml, last_run.json). Those are small text files: enough to rebuild every report, rerun the
ranking evaluation's statistics, and let a matrix on a fresh machine count the finished runs as done (a run's
results.json carries its hash), so that only unfinished runs are trained again. `restore` copies them back.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

RUN_FILES = ("cell.json", "run.json", "results.json", "train_log.jsonl", "tokenizer.json")  # no checkpoints
DECODE_FILES = ("errors.jsonl", "summary.json", "report.json", "confusion.csv")
TOP_FILES = ("cells.json", "matrix.yaml", "last_run.json")
TOP_FOLDERS = ("report", "ranking*")  # glob patterns of top-level folders kept whole


def wanted(root: Path) -> list[Path]:
    """The files of `root` worth keeping, relative to it."""
    out = [Path(f) for f in TOP_FILES if (root / f).is_file()]
    tops = sorted({d for pattern in TOP_FOLDERS for d in root.glob(pattern) if d.is_dir()})
    for folder in tops:
        out += [p.relative_to(root) for p in sorted(folder.rglob("*")) if p.is_file()]
    for marker in sorted({*root.rglob("run.json"), *root.rglob("cell.json")}):
        run = marker.parent
        if any(run.is_relative_to(top) for top in tops):
            continue
        out += [(run / f).relative_to(root) for f in RUN_FILES if (run / f).is_file()]
        out += [p.relative_to(root) for d in sorted(run.glob("decode_*")) for f in DECODE_FILES
                if (p := d / f).is_file()]
    return sorted(set(out))


def copy(src: Path, dst: Path, only: str | None = None) -> int:
    files = wanted(src)
    if only is not None:  # the run folders matching the glob, nothing else (no plan, no reports)
        runs = {p.relative_to(src) for p in src.glob(only) if p.is_dir()}
        files = [f for f in files if any(f.is_relative_to(r) for r in runs)]
    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)
    return len(files)


def main(argv: list[str]) -> int:
    only = None
    if len(argv) == 5 and argv[3] == "--only":  # keep just the runs whose folder matches a glob, e.g. scratch/*/seed1
        only, argv = argv[4], argv[:3]
    if len(argv) != 3 or argv[0] not in ("save", "restore"):
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[1]), Path(argv[2])
    if not src.is_dir():
        print(f"collect: {src} is not a folder", file=sys.stderr)
        return 2
    n = copy(src, dst, only)
    print(f"collect {argv[0]}: {n} files from {src} to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
