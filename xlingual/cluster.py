"""Matrix runs as cluster jobs through `submitit` (SLURM), beside matrix.py's local process pool.

Each run becomes one job that executes exactly what the local pool executes (`python -m xlingual.worker
<cell.json>`, its output appended to the run's log.txt), so a run's cache, resume and results are the same
whichever executor ran it: the job reads cell.json, resumes from last.pt, and writes results.json last. The
matrix process stays in charge of the order (a run is submitted when its source is done) and of how many jobs
are queued or running at once (--jobs); it waits for each job's exit status.

submitit's own files (the pickled call, the job's stdout/stderr) go to <run>/slurm/. `cluster="local"` runs the
jobs as local processes through submitit's LocalExecutor: the same code path, for tests and machines without
SLURM.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

SUBMITIT_DIR = "slurm"  # inside the run's folder
CANCEL = threading.Event()  # set by the matrix process when it is interrupted: waiting threads cancel their jobs


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

    def parameters(self, name: str) -> dict:
        """submitit AutoExecutor.update_parameters() arguments for a job called `name`."""
        p = {"name": name, "timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task,
             "gpus_per_node": self.gpus_per_node, "nodes": 1, "tasks_per_node": 1}
        if self.mem_gb is not None:
            p["mem_gb"] = self.mem_gb
        if self.partition:
            p["slurm_partition"] = self.partition
        if self.additional:
            p["slurm_additional_parameters"] = dict(self.additional)
        return p


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
    """
    folder = cell_json.parent
    log = folder / "log.txt"
    executor = make_executor(folder / SUBMITIT_DIR, options, f"xl-{folder.parent.parent.name}-{folder.parent.name}")
    job = executor.submit(CellJob(), cell_json, threads)
    _note(log, f"submitted {options.cluster} job {job.job_id}; submitit logs in {folder / SUBMITIT_DIR}")
    while not job.done():
        if CANCEL.wait(options.poll_s):
            job.cancel(check=False)
            _note(log, f"cancelled job {job.job_id}: the matrix was interrupted")
            return 130
    try:
        return int(job.result())
    except Exception as e:  # the job died outside the run (time limit after the requeues, node failure)
        _note(log, f"job {job.job_id} failed: {type(e).__name__}: {str(e)[-2000:]}")
        return 1


def _note(log: Path, text: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
