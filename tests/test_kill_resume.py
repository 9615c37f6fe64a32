"""Interruption with real kills: SIGKILL a training run and a matrix run at several points, then resume.

A recipe run killed three times (after a few checkpoint writes, in its second epoch, while decoding) and resumed
with --resume ends with the same best.pt weights, training log and WER as an uninterrupted run: bit-identical on
CPU with one thread, because every step reseeds from (seed, step) and the epoch's running sums are checkpointed.

A matrix run killed twice (in-process runs with --jobs 1, then subprocess runs with --jobs 2, whose runs must die
with it) and re-run recomputes no finished run and leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import RECIPE, TINY_YAML, sets, start, write_tiny_corpus
from xlingual.cli import main
from xlingual.fileio import LockError, exclusive_lock

TIMING = ("epoch_seconds", "audio_sec_per_sec")  # the only log fields allowed to differ between runs


def kill_when(proc: subprocess.Popen, condition, timeout: float = 90.0) -> int:
    """Poll `condition` every millisecond; SIGKILL the process as soon as it holds. Returns the exit status."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    else:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


class Writes:
    """Counts the checkpoint writes seen at `path` (each atomic write renames a new file onto it)."""

    def __init__(self, path: Path):
        self.path, self.seen, self.count = path, None, 0

    def __call__(self) -> int:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.count
        if (st.st_ino, st.st_mtime_ns) != self.seen:
            self.seen, self.count = (st.st_ino, st.st_mtime_ns), self.count + 1
        return self.count


def log_lines(out: Path) -> int:
    try:
        return len((out / "train_log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def assert_nothing_half_written(out: Path, finished: bool) -> None:
    """Every JSON parses, every checkpoint loads, no temporary file is visible (none at all once finished)."""
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        hidden_tmp = p.name.startswith(".") and ".tmp" in p.name
        assert not (".tmp" in p.name and not hidden_tmp), p
        assert not (finished and hidden_tmp), f"temporary file left behind: {p}"
        if hidden_tmp:
            continue
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
        elif p.suffix == ".pt":
            torch.load(p, map_location="cpu", weights_only=True)


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def history(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from data_prep.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("syn")
    prepare_synthetic(root, languages=("tr",), hours={"train": 0.01, "dev": 0.003, "test": 0.003}, progress=False)
    return root


def test_recipe_killed_three_times_ends_bit_identical(corpus, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    base = ["recipe"] + sets(RECIPE + [f"corpus.dir={corpus}"])
    proc = start(base + sets([f"out_dir={ref}"]), tmp_path / "ref.log")
    assert proc.wait(timeout=120) == 0, (tmp_path / "ref.log").read_text()
    steps = json.loads((ref / "done.json").read_text())["history"][-1]["step"]
    assert steps >= 15  # enough checkpoint writes for the kill points below

    args = base + sets([f"out_dir={out}"])
    writes = Writes(out / "last.pt")
    kills = [
        ("after 3 checkpoint writes", lambda: writes() >= 3),
        ("in the second epoch", lambda: log_lines(out) >= 1 and writes() >= 6),
        ("while decoding, after training finished", lambda: (out / "done.json").is_file()),
    ]
    for i, (when, condition) in enumerate(kills):
        rc = kill_when(start(args + (["--resume"] if i else []), tmp_path / "killed.log"), condition)
        assert rc == -signal.SIGKILL, f"the run ended (status {rc}) before the kill {when}"
        print(f"killed {when}: {writes()} checkpoint writes seen, {log_lines(out)} epochs logged, "
              f"done.json {(out / 'done.json').is_file()}")
        assert not (out / "results.json").exists()
        assert_nothing_half_written(out, finished=False)
        if i == 0:  # an interrupted run continues only when asked to
            assert main(args + ["--stage", "1"]) == 2
    proc = start(args + ["--resume"], tmp_path / "killed.log")
    assert proc.wait(timeout=120) == 0, (tmp_path / "killed.log").read_text()
    assert_nothing_half_written(out, finished=True)

    a, b = weights(ref / "best.pt"), weights(out / "best.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert history(ref) == history(out)  # train loss, skipped steps, dev loss/WER of every epoch
    r, k = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    assert (r["dev"], r["test"]) == (k["dev"], k["test"])


def matrix_args(corpus_dir: Path, out: Path) -> list[str]:
    return ["matrix", str(TINY_YAML)] + sets([
        f"corpus.dir={corpus_dir}", "corpus.kind=manifests", f"out_dir={out}", "target_hours=0.001",
        "train.device=cpu", "adapt.train.device=cpu", "train.threads=1", "adapt.train.threads=1",
        "variants={}", "variant_pairs=[]", "layer_sweep=[]", "size_pairs=[]",
        "train.checkpoint_every_steps=1", "adapt.train.checkpoint_every_steps=1"])


def finished(out: Path) -> dict[str, tuple[int, int]]:
    """Finished runs: folder -> (results.json mtime, best.pt mtime)."""
    return {str(p.parent.relative_to(out)): (p.stat().st_mtime_ns, (p.parent / "best.pt").stat().st_mtime_ns)
            for p in out.glob("**/results.json")}


def partial(out: Path) -> list[str]:
    """Runs interrupted in training: a last.pt but neither done.json nor results.json."""
    return sorted(str(p.parent.relative_to(out)) for p in out.rglob("last.pt")
                  if not (p.parent / "done.json").exists() and not (p.parent / "results.json").exists())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_matrix_killed_twice_recomputes_no_finished_run(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "matrix"
    args = matrix_args(Path(corpus.dir), out)

    # 1: runs in the matrix process (--jobs 1), killed once the first one has finished
    rc = kill_when(start(args, tmp_path / "m.log"), lambda: len(finished(out)) >= 1)
    assert rc == -signal.SIGKILL, (tmp_path / "m.log").read_text()
    done1 = finished(out)
    print(f"killed with {len(done1)} of 8 runs finished: {sorted(done1)}")
    assert 1 <= len(done1) < 8
    assert_nothing_half_written(out, finished=False)

    # 2: runs as subprocesses (--jobs 2), killed in the middle of a run's training: killing the matrix ends its
    # runs too, which releases their locks
    rc = kill_when(start(args + ["--jobs", "2"], tmp_path / "m.log"),
                   lambda: len(finished(out)) > len(done1) and partial(out))
    assert rc == -signal.SIGKILL, (tmp_path / "m.log").read_text()
    pids = [int(t) for t in (p.read_text().strip() for p in out.rglob(".lock")) if t.isdigit()]
    deadline = time.time() + 30  # generous: the machine may be loaded
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a run outlived the killed matrix"
    for lock in out.rglob(".lock"):
        # released by the kernel once the run has died; a run killed while starting may not have written its PID
        # into .lock yet (so `pids` above can miss it): wait for the lock itself, with a deadline
        deadline = time.time() + 30
        while True:
            try:
                with exclusive_lock(lock.parent):
                    break
            except LockError:
                assert time.time() < deadline, f"{lock.parent} stayed locked after the matrix was killed"
                time.sleep(0.1)
    done2 = finished(out)
    print(f"killed with {len(done2)} of 8 runs finished; interrupted in training: {partial(out)}")
    assert {k: v for k, v in done2.items() if k in done1} == done1  # the second run skipped what was done
    assert_nothing_half_written(out, finished=False)

    # 3: run to the end: the runs finished before a kill are neither retrained nor re-scored
    assert main(args) == 0
    summary = json.loads((out / "last_run.json").read_text())
    assert summary["failed"] == {} and set(summary["skipped"]) == set(done2)
    assert len(summary["ran"]) == 8 - len(done2) > 0
    done3 = finished(out)
    assert len(done3) == 8 and {k: done3[k] for k in done2} == done2
    assert_nothing_half_written(out, finished=True)
