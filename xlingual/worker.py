"""Runs in child processes: `python -m xlingual.worker <cell.json>` (one run), `python -m xlingual.worker --serve`
(run after run, one cell.json path per line on stdin), their log files, and dying with their parent.

Cluster jobs (cluster.py) run one cell per process; the matrix's local executor keeps one serving worker per
parallel job (WorkerPool), so torch and the toolkit are imported once per worker instead of once per run (several
seconds, a sizeable share of a small run). Either way a run goes through run_cell, so its cache, resume and results
are the same whichever executor started it. cell.json (written by the matrix) holds the run's spec and the execution
settings pinned at its first start (torch threads, progress bar).
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

LOG_FILE = "log.txt"  # a run's stdout and stderr, appended by every start
PARENT_ENV = "XLINGUAL_MATRIX_PID"  # set for a run's subprocess: the matrix process it must not outlive


def _child_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            PARENT_ENV: str(os.getpid())}


def run_in_subprocess(cell_json: Path, threads: int) -> int:
    """Run the cell in a child process with `threads` torch threads, output appended to its log.txt; exit code."""
    # the log is not a terminal: progress shows as a line every 30 s (xlingual.progress), epochs as one line each
    command = [sys.executable, "-m", "xlingual.worker", str(cell_json)]
    with open(cell_json.parent / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(threads)).returncode


class WorkerPool:
    """Serving workers (`python -m xlingual.worker --serve`) that run cells one after another; run() has
    run_in_subprocess's signature and result (0 = the run finished), so the matrix uses either.

    A worker is started when no idle one is left, with the threads of its first cell (a matrix gives every run the
    same); a worker that dies (killed, or a crash below Python) gives that run a non-zero status and is replaced by
    a fresh one for the next. close() ends the idle ones.
    """

    def __init__(self):
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        self.all: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def _take(self, threads: int) -> subprocess.Popen:
        while True:
            try:
                proc = self.idle.get_nowait()
            except queue.Empty:
                break
            if proc.poll() is None and proc.threads == threads:
                return proc
            self._end(proc)
        proc = subprocess.Popen([sys.executable, "-m", "xlingual.worker", "--serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=_child_env(threads), text=True, bufsize=1)
        proc.threads = threads
        with self.lock:
            self.all.append(proc)
        return proc

    def run(self, cell_json: Path, threads: int) -> int:
        proc = self._take(threads)
        try:
            proc.stdin.write(f"{cell_json}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer.strip():  # the worker died during the run
            rc = proc.wait()
            self._end(proc)
            return rc or 1
        self.idle.put(proc)
        try:
            return int(answer)
        except ValueError:  # not an answer of serve(): count the run as failed (its log says what happened)
            return 1

    def _end(self, proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self.lock:
            procs, self.all = self.all, []
        for proc in procs:
            self._end(proc)


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


def _run_and_report(cell: str | Path) -> int:
    """run_cell with its outcome printed (a traceback on failure); the exit status."""
    print(f"run {cell}", flush=True)
    try:
        results = run_cell(cell)
    except Exception:
        traceback.print_exc()
        return 1
    test = results.get("test", {})
    print(f"finished in {results['wall_seconds']} s: test WER {test.get('wer', float('nan')):.2f}, "
          f"CER {test.get('cer', float('nan')):.2f}" + ("" if results.get("learned", True) else
                                                      " (DID NOT LEARN: flagged in the report)"), flush=True)
    return 0


def serve() -> int:
    """Run the cells named on stdin (a path per line) one after another, each with its output appended to its own
    log.txt (file descriptors 1 and 2 point there during the run, so torch's C++ messages land there too), and
    answer each with its exit status on a line of the original stdout. Ends at the end of stdin."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # between runs a stray print goes to stderr, never into the answers on the channel
    while line := sys.stdin.readline():
        cell = Path(line.strip())
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            with open(cell.parent / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {sys.executable} -m xlingual.worker "
                          f"--serve (pid {os.getpid()}): {cell}\n")
                log.flush()
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                try:
                    rc = _run_and_report(cell)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.dup2(saved[0], 1)
                    os.dup2(saved[1], 2)
        except OSError:  # the run's folder cannot take a log: that run fails, the worker goes on
            traceback.print_exc()
            rc = 1
        finally:
            for fd in saved:
                os.close(fd)
        channel.write(f"{rc}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xlingual.worker", description="run matrix cells (internal)")
    p.add_argument("cell", nargs="?", help="the run's cell.json, written by the matrix")
    p.add_argument("--serve", action="store_true", help="run the cell.json paths given on stdin, one per line")
    args = p.parse_args(argv)
    if args.serve == bool(args.cell):
        p.error("give either a cell.json or --serve")
    die_with_parent()
    return serve() if args.serve else _run_and_report(args.cell)


if __name__ == "__main__":
    sys.exit(main())
