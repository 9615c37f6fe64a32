"""Test hook for the runs of tests/test_cluster_slurm.py: makes one run's first attempt outlast its job's time limit.

On PYTHONPATH (the jobs inherit the submitting test's environment), Python imports this at every start. It acts
only in a run process (`python -m xlingual.worker <cell.json>`) whose cell.json path contains
$XL_TEST_PAUSE, and then:
  - after the run writes last.pt, it sleeps $XL_TEST_PAUSE_S seconds (default 600): a run still training when
    SLURM's time-limit warning comes. Once only: an attempt that finds a "paused" record does not pause (an
    attempt warned before its first checkpoint pauses in the next one);
  - in every attempt, a resume from last.pt is recorded.
Both are appended to <run>/hook.jsonl ({"event": "paused"|"resumed", "epoch", "restart", "job"}), the evidence the
tests read. Nothing else changes: the run trains, checkpoints and resumes through the toolkit's own code. (Being
first on PYTHONPATH, this module hides any other sitecustomize in the jobs' Python; none is needed there.)
"""

import json
import os
import sys
import time
from pathlib import Path


def _install(cell_json: Path) -> None:
    from xlingual import train

    marks = cell_json.parent / "hook.jsonl"
    restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    paused = marks.is_file() and '"paused"' in marks.read_text()

    def mark(event: str, epoch: int) -> None:
        with open(marks, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "epoch": epoch, "restart": restart,
                                "job": os.environ.get("SLURM_JOB_ID")}) + "\n")

    save, load = train.save_checkpoint, train.load_checkpoint  # the names the training loop calls

    def paused_save(path, obj):
        save(path, obj)
        nonlocal paused
        if Path(path).name == "last.pt" and not paused:
            paused = True
            mark("paused", obj["state"]["epoch"])
            time.sleep(float(os.environ.get("XL_TEST_PAUSE_S", "600")))

    def marked_load(path):
        ck = load(path)
        mark("resumed", ck["state"]["epoch"])
        return ck

    train.save_checkpoint, train.load_checkpoint = paused_save, marked_load


_want = os.environ.get("XL_TEST_PAUSE")
if _want and len(sys.argv) >= 2 and sys.argv[-1].endswith("cell.json") and _want in sys.argv[-1]:
    _install(Path(sys.argv[-1]))
