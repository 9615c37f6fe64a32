"""`xlingual matrix --executor slurm` against a real SLURM: munged, slurmctld and slurmd on this machine
(tests/slurm_cluster.py, the `slurm` fixture of conftest.py; skipped, with the reason, where it cannot start).

The tiny matrix's runs go through the real sbatch, queue and node: a full matrix (each run a job squeue listed and
sacct recorded), with the README's sbatch options; a job that hits its time limit, requeued and resumed from its
checkpoint; Ctrl-C on the matrix process, which cancels the queued and running jobs; runs that fail on the node,
reported with their log, then continued by a re-run; and options the cluster cannot honour, reported, never
waited for forever. A run is made to outlast its job's time limit, or to be caught mid-training, by
tests/slurm_hooks/sitecustomize.py (on the jobs' PYTHONPATH): it pauses the run right after its first last.pt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slurm_cluster import MAX_TIME, NODE, PARTITION
from helpers import TINY_YAML, TWO_BY_ONE, mtimes, settings, write_tiny_corpus
from helpers import two_by_one as config
from xlingual import matrix as matrix_mod
from xlingual.cluster import SlurmOptions
from xlingual.matrix import MatrixError, run_matrix

HOOKS = Path(__file__).resolve().parent / "slurm_hooks"
ROOT = Path(__file__).resolve().parents[1]
TIMED_OUT = "scratch/tr-3.6s/seed0"  # the run that outlasts its job's time limit in the full matrix
ONE_SOURCE = ("sources=[bn]",)  # bn's source is bn's baseline: scratch/bn-3.6s, then adapt/bn-3.6s_to_bn-3.6s
SCRATCH, ADAPT = "scratch/bn-3.6s/seed0", "adapt/bn-3.6s_to_bn-3.6s/main/seed0"
WAIT_S = 180  # the longest any wait for a job here may take before the test fails (a run takes ~20 s)


def options(**kw) -> SlurmOptions:
    """Each job: 1 CPU, no GPU (the node has none), on the test partition; polled often, failures seen fast."""
    return SlurmOptions(**{"partition": PARTITION, "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 10,
                           "poll_s": 0.5, "result_wait_s": 2.0, **kw})


def job_env(mp: pytest.MonkeyPatch, pause: str | None = None) -> None:
    """The jobs inherit this process's environment (sbatch's default --export=ALL): the test hook on PYTHONPATH,
    and which run it pauses after its first checkpoint (a part of the run's path), if any."""
    mp.setenv("PYTHONPATH", os.pathsep.join([str(HOOKS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if pause:
        mp.setenv("XL_TEST_PAUSE", pause)
        mp.setenv("XL_TEST_PAUSE_S", str(WAIT_S))  # a pause nothing ends still ends: a failed test, not a hang
    else:
        mp.delenv("XL_TEST_PAUSE", raising=False)


def job_ids(run_dir: Path) -> list[str]:
    """The SLURM job ids a run's log.txt says it was submitted as, in order."""
    return re.findall(r"submitted slurm job (\d+)", (run_dir / "log.txt").read_text())


def marks(run_dir: Path) -> list[dict]:
    """What the test hook recorded in the run: {"event": "paused"|"resumed", "epoch", "restart", "job"}."""
    path = run_dir / "hook.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def no_jobs_left(slurm):
    """A failed test's jobs are cancelled, so that they do not hold the node for the next test."""
    yield
    slurm.cancel_all()


# The README's options (a partition, CPUs, memory, a time limit, an account through --slurm-param), sized to this
# node; the time limit is SLURM's minimum, 1 minute, so that the paused run hits it
README_OPTIONS = {"partition": PARTITION, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 1,
                  "additional": {"account": "myproject"}}


@pytest.fixture(scope="module")
def slurm_matrix(slurm, corpus, tmp_path_factory):
    """The 2 x 1 tiny matrix (4 runs, 2 epochs each) through the real SLURM, 4 jobs at a time, each with a 1-minute
    limit; TIMED_OUT pauses after its first epoch's checkpoint, so its job hits the limit. Returns (out, summary,
    what squeue showed)."""
    out = tmp_path_factory.mktemp("matrix")
    with pytest.MonkeyPatch.context() as mp, slurm.watch_queue() as seen:
        job_env(mp, pause=f"{TIMED_OUT}/")
        summary = run_matrix(config(corpus.dir, out, "train.epochs=2"), jobs=4, progress=False, executor="slurm",
                             slurm=options(**README_OPTIONS))
    return out, summary, seen


def test_every_run_is_a_job_the_scheduler_queued_and_recorded(slurm_matrix, slurm):
    out, summary, seen = slurm_matrix
    assert summary["failed"] == {} and len(summary["ran"]) == 4
    for name in summary["ran"]:
        run = out / name
        assert json.loads((run / "results.json").read_text())["name"] == name
        ids = job_ids(run)
        assert len(ids) == 1, f"{name}: one job expected, log.txt says {ids}"
        job = ids[0]
        assert "RUNNING" in seen.states.get(job, []), f"{name}: squeue never showed job {job} running: {seen.states}"
        assert f"job {job} RUNNING on {NODE}" in (run / "log.txt").read_text()
        records = slurm.completions(job)
        assert records and records[-1]["State"] == "COMPLETED" and records[-1]["NodeList"] == NODE, (name, records)
        assert records[-1]["ExitCode"] == "0:0", (name, records)


@pytest.mark.parametrize("flag, field, expected", [
    # (the README's option, the job field in squeue or sacct --completion, its value)
    ("--slurm-partition", "partition", PARTITION),
    ("--slurm-cpus-per-task", "cpus", "1"),
    ("--slurm-mem-gb", "min_memory", "1G"),
    ("--slurm-time-min", "time_limit", "1:00"),
    ("--slurm-param account=", "account", "myproject"),
    ("--slurm-param account= (sacct)", "Account", "myproject"),
    ("--slurm-time-min (sacct)", "Timelimit", "1"),
])
def test_the_readme_options_reach_the_scheduler(slurm_matrix, slurm, flag, field, expected):
    out, summary, seen = slurm_matrix
    for name in summary["ran"]:
        job = job_ids(out / name)[0]
        shown = slurm.completions(job)[-1] if field[0].isupper() else seen.fields[job]
        assert shown[field] == expected, f"{flag}: job {job} of {name} has {field}={shown[field]!r}"


def test_a_job_at_its_time_limit_is_requeued_and_resumes_from_its_checkpoint(slurm_matrix, slurm):
    out, _, _ = slurm_matrix
    run = out / TIMED_OUT
    job = job_ids(run)[0]
    hook = marks(run)
    paused = [m for m in hook if m["event"] == "paused"]
    resumed = [m for m in hook if m["event"] == "resumed"]
    assert len(paused) == 1 and paused[0]["epoch"] == 1, hook  # the first attempt stopped after epoch 1 ...
    assert resumed and resumed[-1]["epoch"] == 1 and resumed[-1]["restart"] > paused[0]["restart"], hook
    assert {m["job"] for m in hook} == {job}  # ... and the same job, requeued, went on from its last.pt
    records = slurm.completions(job)
    assert len(records) >= 2 and records[-1]["State"] == "COMPLETED", records  # the requeued attempt's end too
    err = (run / "slurm" / f"{job}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in err and "this job is timed-out" in err, err[-2000:]  # SLURM's warning ...
    assert f"Requeuing JobId={job}" in (slurm.root / "log" / "slurmctld.log").read_text()  # ... and the requeue
    assert "PENDING (BeginTime)" in (run / "log.txt").read_text()  # requeued: waiting to start again
    epochs = [json.loads(line)["epoch"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_second_matrix_run_submits_nothing(slurm_matrix, corpus, slurm):
    out, summary, _ = slurm_matrix
    before, jobs = mtimes(out), {name: job_ids(out / name) for name in summary["ran"]}
    with slurm.watch_queue() as seen:
        again = run_matrix(config(corpus.dir, out, "train.epochs=2"), jobs=4, progress=False, executor="slurm",
                           slurm=options(**README_OPTIONS))
    assert again["ran"] == [] and len(again["skipped"]) == 4 and mtimes(out) == before
    assert {name: job_ids(out / name) for name in summary["ran"]} == jobs
    assert set(seen.states) <= {j for ids in jobs.values() for j in ids}  # no job but the first run's (finished)


def _processes(out: Path, *marks: str) -> list[int]:
    """PIDs of the Python processes whose command line names the matrix folder `out` and every one of `marks`: a
    run (`python -m xlingual.worker <cell.json>`), or submitit's process in a job (`python ... submitit.core._submit
    ...`; not the srun that started it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        python = Path(cmd[0]).name.startswith("python")
        if python and any(str(out) in part for part in cmd) and all(m in cmd for m in marks):
            pids.append(int(proc.name))
    return pids


def test_ctrl_c_cancels_the_queued_and_running_jobs(slurm, corpus, tmp_path):
    out = tmp_path / "matrix"
    # every job takes all of the node's CPUs: the first runs, the second waits in the queue; both runs pause
    # after their first checkpoint, so neither finishes before the Ctrl-C
    sets = [a for s in settings(corpus.dir, out, *TWO_BY_ONE, "train.epochs=2") for a in ("--set", s)]
    cmd = [sys.executable, "-m", "xlingual.cli", "matrix", str(TINY_YAML), *sets, "--executor", "slurm",
           "--jobs", "4", "--slurm-partition", PARTITION, "--slurm-gpus-per-node", "0",
           "--slurm-cpus-per-task", str(slurm.cpus), "--slurm-mem-gb", "1", "--slurm-time-min", "10",
           "--slurm-param", "account=myproject"]
    with pytest.MonkeyPatch.context() as mp:
        job_env(mp, pause="seed0/")
        env = dict(os.environ)
    console = tmp_path / "console.txt"
    with open(console, "wb") as f:
        # SIGINT back to its default in the driver: a test suite started as a background job of a
        # non-interactive shell ignores it, and an ignored SIGINT stays ignored in every process it starts
        driver = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def one_running_one_queued():
            q = slurm.queue()
            return q if sorted(q.values()) == ["PENDING", "RUNNING"] else None

        jobs = slurm.wait_for("one job running and one queued", one_running_one_queued, WAIT_S)
        driver.send_signal(signal.SIGINT)
        rc = driver.wait(60)
        slurm.wait_for("an empty queue after Ctrl-C", lambda: not slurm.queue() or "empty", 60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
        slurm.cancel_all()
    said = console.read_text()
    assert rc != 0 and "KeyboardInterrupt" in said, said[-3000:]
    for job in jobs:
        records = slurm.completions(job)
        assert records and records[-1]["State"] == "CANCELLED", (job, records)
        assert records[-1]["Account"] == "myproject"  # the CLI's --slurm-param reached sbatch
    logs = {name: (out / name / "log.txt").read_text() for name in ("scratch/bn-3.6s/seed0", "scratch/tr-3.6s/seed0")}
    for name, log in logs.items():
        assert re.search(r"cancelled job \d+: the matrix was interrupted", log), f"{name}:\n{log}"
    slurm.wait_for("no run of the matrix still running", lambda: not _processes(out, "xlingual.worker") or "none", 30)


class Background(threading.Thread):
    """fn(*args) in a thread; result() waits for it and re-raises what it raised (a failed assertion included).
    When it raises, on_error() runs at once (e.g. cancel the jobs, so that the test fails now, not at a timeout)."""

    def __init__(self, fn, *args, on_error=lambda: None):
        super().__init__(daemon=True)
        self.fn, self.args, self.on_error, self.error = fn, args, on_error, None
        self.start()

    def run(self) -> None:
        try:
            self.fn(*self.args)
        except BaseException as e:
            self.error = e
            self.on_error()

    def result(self) -> None:
        self.join(WAIT_S)
        if self.error:
            raise self.error


FAILURES = {
    # case: (what happens to the scratch run's job mid-training, the exit status the matrix reports, what the
    # run's log.txt says)
    "the run fails": ("its cell names a language without data", "1", "Traceback"),
    "the run is killed on its node": ("SIGKILL to the run's process, as the OOM killer does", "-9",
                                      "the run was killed by SIGKILL"),
    "the job dies on its node": ("SIGKILL to the job's processes, as when its node fails", "1",
                                 "ended FAILED on xlnode without a result; its output: "),
    "the job is cancelled on the cluster": ("scancel, as an administrator would", "-15",
                                            "the run was killed by SIGTERM (SLURM: job CANCELLED)"),
}


def _fail(case: str, slurm, out: Path, run: Path) -> None:
    """Wait until the run paused after its first checkpoint, then do to its job what FAILURES[case] says."""
    slurm.wait_for(f"{SCRATCH} paused after its checkpoint", lambda: marks(run), WAIT_S)
    if case == "the job is cancelled on the cluster":
        slurm.run("scancel", job_ids(run)[0])
        return
    pids = _processes(out, "xlingual.worker")
    if case == "the job dies on its node":
        pids += _processes(out, "submitit.core._submit")
    assert len(pids) == (1 if case == "the run is killed on its node" else 2), pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_job_failing_on_the_node_is_reported_with_its_log_and_a_rerun_continues(case, slurm, corpus, tmp_path,
                                                                                  monkeypatch):
    _, status, logged = FAILURES[case]
    out = tmp_path / "matrix"
    cfg = config(corpus.dir, out, *ONE_SOURCE, "train.epochs=2")
    run = out / SCRATCH
    killer = None
    if case == "the run fails":
        job_env(monkeypatch)
        real = matrix_mod._prepare_cell

        def broken(out_dir, cell, *a, **k):
            path = real(out_dir, cell, *a, **k)
            if cell.name == SCRATCH:
                c = json.loads(path.read_text())
                c["spec"]["languages"] = ["xx"]  # a language with no manifests: the run fails on the node
                path.write_text(json.dumps(c))
            return path

        monkeypatch.setattr(matrix_mod, "_prepare_cell", broken)
    else:
        job_env(monkeypatch, pause=f"{SCRATCH}/")
        killer = Background(_fail, case, slurm, out, run, on_error=slurm.cancel_all)
    with pytest.raises(MatrixError) as e:
        run_matrix(cfg, jobs=2, progress=False, executor="slurm", slurm=options())
    if killer:
        killer.result()
    msg, log = str(e.value), (run / "log.txt").read_text()
    assert f"{SCRATCH}: exit status {status}, see {run / 'log.txt'}" in msg, msg
    assert f"{ADAPT}: its source {SCRATCH} failed" in msg, msg
    assert logged in log, log[-3000:]

    monkeypatch.undo()  # nothing breaks now; the hook still records a resume (a run pauses once only)
    job_env(monkeypatch, pause=None if case == "the run fails" else f"{SCRATCH}/")
    summary = run_matrix(cfg, jobs=2, progress=False, executor="slurm", slurm=options())
    assert summary["ran"] == [SCRATCH, ADAPT] and summary["failed"] == {}
    if case != "the run fails":  # stopped after its first epoch's checkpoint: the re-run went on from there
        assert [m["event"] for m in marks(run)] == ["paused", "resumed"] and marks(run)[1]["epoch"] == 1


REFUSED = {
    # case: (SlurmOptions that do not fit the test cluster, what the run's log.txt says)
    "an unknown partition": ({"partition": "gpu"}, "sbatch refused the job: sbatch: error: invalid partition"),
    "a GPU on a node without one": ({"gpus_per_node": 1}, "sbatch refused the job: sbatch: error: Invalid "
                                                          "generic resource (gres) specification"),
    "more memory than any node": ({"mem_gb": 100_000}, "Memory specification can not be satisfied"),
    "more CPUs than any node": ({"cpus_per_task": 1000}, "it can never start, its request exceeds what the "
                                                          "partition allows"),
    "a time limit beyond the partition's": ({"timeout_min": 24 * 60}, "it can never start, its "),  # either reason
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_options_the_cluster_cannot_honour_fail_the_run_with_the_reason(case, slurm, corpus, tmp_path, monkeypatch):
    overrides, logged = REFUSED[case]
    job_env(monkeypatch)
    out = tmp_path / "matrix"
    with pytest.raises(MatrixError) as e:
        run_matrix(config(corpus.dir, out, *ONE_SOURCE), jobs=2, progress=False, executor="slurm",
                   slurm=options(**overrides))
    log = (out / SCRATCH / "log.txt").read_text()
    assert f"{SCRATCH}: exit status 1, see {out / SCRATCH / 'log.txt'}" in str(e.value), str(e.value)
    assert logged in log, log
    if "can never start" in logged:  # and what the partition offers instead
        assert f"partition {PARTITION}: time limit {MAX_TIME}; nodes of {slurm.cpus} CPUs" in log, log
    assert not slurm.queue()  # nothing left waiting
