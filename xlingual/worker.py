"""One run in a child process: `python -m xlingual.worker <cell.json>`, its log file, and dying with its parent.

The matrix's local process pool and its cluster jobs (cluster.py) both run this command, so a run's cache, resume
and results are the same whichever executor started it. cell.json (written by the matrix) holds the run's spec
and the execution settings pinned at its first start (torch threads, progress bar).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

LOG_FILE = "log.txt"  # a run's stdout and stderr, appended by every start
PARENT_ENV = "XLINGUAL_MATRIX_PID"  # set for a run's subprocess: the matrix process it must not outlive


def run_in_subprocess(cell_json: Path, threads: int) -> int:
    """Run the cell in a child process with `threads` torch threads, output appended to its log.txt; exit code."""
    # the log is not a terminal: progress shows as a line every 30 s (xlingual.progress), epochs as one line each
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), PARENT_ENV: str(os.getpid())}
    command = [sys.executable, "-m", "xlingual.worker", str(cell_json)]
    with open(cell_json.parent / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


CELL_FILE = "cell.json"  # what a matrix run does; written before it starts
CELL_FIELDS = ("name", "label", "hash", "config_hash", "code_version")  # copied from cell.json into results.json


def run_cell(cell_json: str | Path) -> dict:
    """Train (or resume), decode the test set and score the run described by cell.json (runs.execute), then add
    the matrix's fields (name, label, plan hashes, source run) to its results.json; returns that content."""
    import torch

    from .config import from_dict
    from .fileio import exclusive_lock, read_json
    from .runs import execute
    from .runspec import RunSpec

    cell_json = Path(cell_json)
    folder = cell_json.parent
    with exclusive_lock(folder):  # the run's folder: one process at a time
        c = read_json(cell_json)
        rt = c["runtime"]
        torch.set_num_threads(rt["threads"])
        spec_dict = c["spec"]
        spec_dict["train"] = {**spec_dict["train"], "threads": rt["threads"], "progress": rt["progress"]}
        if spec_dict.get("adapt"):
            spec_dict["adapt"]["train"] = spec_dict["train"]
        spec = from_dict(RunSpec, spec_dict, f"{cell_json}: spec")
        return execute(spec, folder, splits=("test",),
                       extra={**{k: c[k] for k in CELL_FIELDS}, "source_run": c.get("source")})


def die_with_parent() -> None:
    """A run started by the matrix ends when the matrix process does (Linux), so a killed matrix leaves no
    orphan still training and holding its run's lock; the next matrix run resumes it from last.pt."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the matrix died before prctl took effect
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xlingual.worker", description="run one matrix cell (internal)")
    p.add_argument("cell", help="the run's cell.json, written by the matrix")
    args = p.parse_args(argv)
    die_with_parent()
    print(f"run {args.cell}", flush=True)
    try:
        results = run_cell(args.cell)
    except Exception:
        traceback.print_exc()
        return 1
    test = results.get("test", {})
    print(f"finished in {results['wall_seconds']} s: test WER {test.get('wer', float('nan')):.2f}, "
          f"CER {test.get('cer', float('nan')):.2f}" + ("" if results.get("learned", True) else
                                                      " (DID NOT LEARN: flagged in the report)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
