"""Matrix runs as cluster jobs through `submitit` (SLURM), beside matrix.py's local process pool.

Each run becomes one job that executes exactly what the local pool executes (`python -m xlingual.worker
<cell.json>`, its output appended to the run's log.txt), so a run's cache, resume and results are the same
whichever executor ran it: the job reads cell.json, resumes from last.pt, and writes results.json last. The
matrix process stays in charge of the order (a run is submitted when its source is done) and of how many jobs
are queued or running at once (--jobs); it waits for each job's exit status.

submitit's own files (the pickled call, the job's stdout/stderr) go to <run>/slurm/. `cluster="local"` runs the
jobs as local processes through submitit's LocalExecutor: the same code path, for tests and machines without
SLURM.

A SLURM job's state comes from `squeue` (not submitit's `sacct`): many clusters run without an accounting database,
where `sacct` fails and a job that died without a result (cancelled by someone else, killed on its node) would be
waited for forever. Each change of state (pending and why, running where, requeued) is noted in the run's log.txt.
Tested against a real single-node SLURM 22.05 (tests/slurm_cluster.py, tests/test_cluster_slurm.py).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

SUBMITIT_DIR = "slurm"  # inside the run's folder
CANCEL = threading.Event()  # set by the matrix process when it is interrupted: waiting threads cancel their jobs
# the states in which a job no longer runs and never will again (its record stays in squeue for MinJobAge);
# not PREEMPTED, which a requeue (PreemptMode=REQUEUE) follows
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "GONE"}


@dataclass
class SlurmOptions:
    """Resources of each run's job (`xlingual matrix --executor slurm --slurm-...`)."""

    partition: str | None = None  # SLURM partition (-p); None = the cluster's default
    gpus_per_node: int = 1  # GPUs per job; a run trains on one (train.device=auto picks it)
    cpus_per_task: int = 8  # CPU cores per job; also the run's torch threads (unless train.threads is set)
    mem_gb: int | None = None  # memory per job; None = the partition's default
    timeout_min: int = 24 * 60  # wall-clock limit per job; at the limit the job is requeued and resumes
    additional: dict[str, str] = field(default_factory=dict)  # other sbatch options, e.g. {"account": "xyz",
    #   "qos": "high", "constraint": "h100"}
    cluster: str = "slurm"  # submitit cluster: "slurm", or "local" (LocalExecutor: local processes)
    poll_s: float = 30.0  # how often the matrix process checks a job's state
    result_wait_s: float = 15.0  # how long an ended job's result file may take to appear (shared file systems)

    def parameters(self, name: str) -> dict:
        """submitit AutoExecutor.update_parameters() arguments for a job called `name`."""
        p = {"name": name, "timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task,
             "gpus_per_node": self.gpus_per_node, "nodes": 1, "tasks_per_node": 1,
             "slurm_signal_delay_s": signal_delay_s(self.timeout_min)}
        if self.mem_gb is not None:
            p["mem_gb"] = self.mem_gb
        if self.partition:
            p["slurm_partition"] = self.partition
        if self.additional:
            p["slurm_additional_parameters"] = dict(self.additional)
        return p


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which SLURM is asked to warn the job (SIGUSR2), which then requeues itself.

    slurmctld checks limits every 30 s and sends the warning at the first check less than delay + 30 s before
    the end. submitit's 90 s would then warn a job with a limit of 3 minutes or less at its start: every attempt
    would requeue itself before doing any work until the requeues run out. So the delay is at most half the limit
    less those 30 s (at least 1 s): the warning comes after half the limit, and still before the limit.
    """
    return max(1, min(90, timeout_min * 60 // 2 - 30))


def make_executor(folder: Path, options: SlurmOptions, name: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    executor.update_parameters(**options.parameters(name))
    return executor


class CellJob(submitit.helpers.Checkpointable):
    """The job's callable: the local pool's runner, resubmitted as it is when SLURM pre-empts the job or its time
    runs out (submitit requeues a Checkpointable), so the run then continues from its last.pt."""

    def __call__(self, cell_json: Path, threads: int) -> int:
        from .worker import run_in_subprocess

        return run_in_subprocess(cell_json, threads)


def run_as_job(cell_json: Path, threads: int, options: SlurmOptions) -> int:
    """Submit one run as a job, wait for it, return its exit status (nonzero on any failure).

    Called from one of the matrix's worker threads; returns 130 after cancelling the job when CANCEL is set.
    Returns 1, with the reason in the run's log.txt, for a job that sbatch refuses, one that can never start
    (its request exceeds the partition's nodes or limits: it is cancelled), and one that ends without a result
    (cancelled by someone else, killed on its node, out of requeues: with the tail of the job's own output).
    """
    folder = cell_json.parent
    log = folder / "log.txt"
    executor = make_executor(folder / SUBMITIT_DIR, options, f"xl-{folder.parent.parent.name}-{folder.parent.name}")
    try:
        job = executor.submit(CellJob(), cell_json, threads)
    except submitit.core.utils.FailedJobError as e:  # sbatch's own message: an unknown partition, too much memory
        _note(log, f"sbatch refused the job: {str(e).strip()[-2000:]}")
        return 1
    _note(log, f"submitted {options.cluster} job {job.job_id}; submitit logs in {folder / SUBMITIT_DIR}")
    watch = _SlurmWatch(job, log, options.result_wait_s) if options.cluster == "slurm" else None
    while not (watch.done() if watch else job.done()):
        if CANCEL.wait(options.poll_s):
            job.cancel(check=False)
            _note(log, f"cancelled job {job.job_id}: the matrix was interrupted")
            return 130
    failure = watch.failure() if watch else None
    if failure:
        _note(log, failure)
        return 1
    try:
        rc = int(job.result())
    except Exception as e:  # the job died outside the run (out of requeues after time limits, ...)
        _note(log, f"job {job.job_id} failed: {type(e).__name__}: {str(e)[-2000:]}")
        return 1
    if rc < 0:  # the run's process was killed: by SLURM (scancel, a time limit) or on its node (out of memory)
        state = _end_state(job.job_id) if watch else None
        _note(log, f"job {job.job_id}: the run was killed by {_signal_name(-rc)}"
                   + (f" (SLURM: job {state})" if state else ""))
    return rc


# pending reasons that no wait resolves: the job asks for more than its partition allows (slurm.conf's default
# EnforcePartLimits=NO accepts such a job, which then waits forever). PartitionConfig comes first for any such
# request, a time limit too; the scheduler may refine it later.
NEVER_STARTS = {
    "PartitionConfig": "its request exceeds what the partition allows (--slurm-cpus-per-task, --slurm-mem-gb, "
                       "--slurm-gpus-per-node, --slurm-time-min)",
    "PartitionTimeLimit": "its time limit exceeds the partition's (--slurm-time-min)",
    "BadConstraints": "no node satisfies its constraints",
}


class _SlurmWatch:
    """A SLURM job's state through squeue, each change noted in the run's log. done() once the job has a result,
    has ended without one for `result_wait_s`, or waits for a reason no wait resolves; failure() then says why."""

    def __init__(self, job: submitit.Job, log: Path, result_wait_s: float):
        self.job, self.log, self.result_wait_s = job, log, result_wait_s
        self.shown: str | None = None  # the last state noted in the log
        self.ended_at: float | None = None
        self.hopeless: str | None = None

    def done(self) -> bool:
        if self.job.paths.result_pickle.exists():
            return True
        state = queue_state(self.job.job_id)
        if state is None:  # squeue itself failed (the controller busy or restarting): ask again next time
            return False
        name, reason, nodes = state
        shown = f"{name} ({reason})" if name == "PENDING" else f"{name} on {nodes}" if nodes else name
        if shown != self.shown:
            self.shown = shown
            _note(self.log, f"job {self.job.job_id} {shown}")
        if name == "PENDING" and reason in NEVER_STARTS:
            self.hopeless = reason
            return True
        if name not in ENDED:
            self.ended_at = None
            return False
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return time.monotonic() - self.ended_at >= self.result_wait_s

    def failure(self) -> str | None:
        """None when the job has its result; else why not (a job that can never start is cancelled here)."""
        if self.job.paths.result_pickle.exists():
            return None
        if self.hopeless:
            limits = partition_limits(self.job.job_id)
            self.job.cancel(check=False)
            return (f"job {self.job.job_id} cancelled: it can never start, {NEVER_STARTS[self.hopeless]} "
                    f"(SLURM: PENDING ({self.hopeless}))" + (f"; {limits}" if limits else ""))
        err = self.job.paths.stderr
        tail = err.read_text(errors="replace").splitlines()[-20:] if err.is_file() else []
        return (f"job {self.job.job_id} ended {self.shown} without a result; its output: {err}"
                + "".join(f"\n    {line}" for line in tail))


def queue_state(job_id: str) -> tuple[str, str, str] | None:
    """(state, reason, nodes) of a SLURM job from squeue; ("GONE", "", "") once the controller has forgotten it
    (MinJobAge after its end); None when squeue itself fails."""
    try:
        p = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T|%r|%N"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode:
        return ("GONE", "", "") if "Invalid job id" in p.stderr else None
    line = p.stdout.strip().splitlines()
    if not line:
        return "GONE", "", ""
    name, reason, nodes = (line[0].split("|") + ["", ""])[:3]
    return name, reason, nodes


def partition_limits(job_id: str) -> str | None:
    """What the job's partition offers, from sinfo: "partition gpu: time limit 12:00:00; nodes of 64 CPUs,
    515000 MB, GRES gpu:8"; None when squeue or sinfo cannot tell."""
    try:
        part = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%P"], capture_output=True,
                              text=True, timeout=60).stdout.strip()
        rows = subprocess.run(["sinfo", "-h", "-p", part, "-o", "%l|%c|%m|%G"], capture_output=True, text=True,
                              timeout=60).stdout.splitlines() if part else []
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not rows:
        return None
    nodes = "; ".join(f"nodes of {c} CPUs, {m} MB, GRES {g}" for c, m, g in
                      sorted({tuple(r.split("|")[1:4]) for r in rows if r.count("|") == 3}))
    return f"partition {part}: time limit {rows[0].split('|')[0]}; {nodes}"


def _end_state(job_id: str, wait_s: float = 10.0) -> str | None:
    """The state a job ends in (CANCELLED, COMPLETED, TIMEOUT, ...), waiting up to `wait_s` while it still runs or
    completes; its last known state after that, None when squeue cannot tell."""
    end = time.monotonic() + wait_s
    while True:
        state = queue_state(job_id)
        if (state and state[0] in ENDED and state[0] != "GONE") or time.monotonic() > end:
            return state[0] if state and state[0] != "GONE" else None
        time.sleep(0.5)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _note(log: Path, text: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
