"""Matrix runs as cluster jobs (xlingual/cluster.py through submitit), tested with submitit's LocalExecutor.

The SLURM path is the same code with cluster="slurm", tested against a real SLURM in test_cluster_slurm.py. The
sbatch script is also checked here as text, for options a one-node test cluster cannot show (GPUs, a qos); where
no real SLURM can start, a stand-in `srun` on PATH lets submitit believe it is on a cluster.
"""

from __future__ import annotations

import json
import os

import pytest

from helpers import TINY_YAML, mtimes, write_tiny_corpus
from helpers import two_by_one as config
from xlingual import cluster
from xlingual import matrix as matrix_mod
from xlingual.cli import main
from xlingual.cluster import SlurmOptions
from xlingual.matrix import cell_status, plan_cells, run_matrix

# 2 sources x 1 target; the source budget equals the target's, so bn's source is also bn's baseline: 4 runs
LOCAL_JOBS = SlurmOptions(cluster="local", cpus_per_task=1, poll_s=0.2, timeout_min=10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def jobs_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    summary = run_matrix(config(corpus.dir, out), jobs=4, progress=False, executor="slurm", slurm=LOCAL_JOBS)
    return out, summary


def test_runs_as_jobs_are_cached_like_local_runs(jobs_run, corpus):
    out, summary = jobs_run
    cells = plan_cells(config(corpus.dir, out))
    assert len(cells) == 4 and summary["failed"] == {} and sorted(summary["ran"]) == sorted(cells)
    for name, cell in cells.items():
        folder = out / name
        assert cell_status(out, cell)[0] == "done"
        assert json.loads((folder / "results.json").read_text())["hash"] == cell.hash
        log = (folder / "log.txt").read_text()
        assert "submitted local job" in log and "finished in" in log  # the same command as a local run
        assert list((folder / cluster.SUBMITIT_DIR).glob("*_result.pkl"))  # submitit's own files, beside the run
    assert (out / "report" / "wer_matrix.csv").read_text().splitlines()[0] == "adapt to \\ pretrain on,bn,tr"

    # a second run skips every run, whichever executor asks
    before = mtimes(out)
    for executor in ("slurm", "local"):
        again = run_matrix(config(corpus.dir, out), jobs=2, progress=False, executor=executor, slurm=LOCAL_JOBS)
        assert again["ran"] == [] and len(again["skipped"]) == 4 and mtimes(out) == before


def test_killed_job_resumes_from_its_checkpoint(jobs_run, corpus):
    out, _ = jobs_run
    name = "adapt/tr-3.6s_to_bn-3.6s/main/seed0"
    cell = out / name
    log_before = (cell / "train_log.jsonl").read_text()
    (cell / "done.json").unlink()  # what a job killed after its last checkpoint leaves
    (cell / "results.json").unlink()
    cfg = config(corpus.dir, out)
    assert cell_status(out, plan_cells(cfg)[name])[0] == "partial"
    summary = run_matrix(cfg, jobs=2, progress=False, executor="slurm", slurm=LOCAL_JOBS)
    assert summary["ran"] == [name]
    assert (cell / "train_log.jsonl").read_text() == log_before  # resumed from last.pt, nothing retrained
    assert (cell / "results.json").is_file()


def test_failed_job_blocks_its_adaptation_runs(jobs_run, corpus, monkeypatch):
    out, _ = jobs_run  # a new, larger tr source; bn's baseline is the one already done
    cfg = config(corpus.dir, out, "sources=[tr]", "source_hours=0.002")
    real = matrix_mod._prepare_cell

    def broken(out_dir, cell, *a, **k):  # the tr source's cell.json names a language with no manifests
        path = real(out_dir, cell, *a, **k)
        if cell.name.startswith("scratch/tr-7.2s"):
            c = json.loads(path.read_text())
            c["spec"]["languages"] = ["xx"]
            path.write_text(json.dumps(c))
        return path

    monkeypatch.setattr(matrix_mod, "_prepare_cell", broken)
    with pytest.raises(matrix_mod.MatrixError) as e:
        run_matrix(cfg, jobs=2, progress=False, executor="slurm", slurm=LOCAL_JOBS)
    msg = str(e.value)
    assert "scratch/tr-7.2s/seed0: exit status 1, see" in msg and "2 of 3 runs failed" in msg
    assert "adapt/tr-7.2s_to_bn-3.6s/main/seed0: its source scratch/tr-7.2s/seed0 failed" in msg


def test_sbatch_script_carries_the_options(tmp_path, monkeypatch, slurm_or_why):
    # the options a one-node test cluster cannot show taking effect (GPUs, a qos: ignored without accounting);
    # test_cluster_slurm.py gives the others to the real sbatch. A stand-in `srun` only where no real SLURM runs
    if isinstance(slurm_or_why, str):
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
        (fake / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    opts = SlurmOptions(partition="gpu", gpus_per_node=2, cpus_per_task=16, mem_gb=64, timeout_min=120,
                        additional={"account": "asr", "qos": "high"})
    ex = cluster.make_executor(tmp_path / "slurm", opts, "xl-test")
    text = ex._executor._make_submission_file_text("python -m xlingual.worker x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=16", "--mem=64GB", "--time=120",
                 "--account=asr", "--qos=high", "--job-name=xl-test", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in text


def test_cli_passes_the_slurm_options(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run_matrix(cfg, jobs, executor, slurm, reuse_code=False):
        seen.update(jobs=jobs, executor=executor, slurm=slurm)
        return {"ran": [], "skipped": [], "wall_seconds": 0.0, "report": "r"}

    monkeypatch.setattr(matrix_mod, "run_matrix", fake_run_matrix)
    args = ["matrix", str(TINY_YAML), "--set", f"out_dir={tmp_path}", "--jobs", "40", "--executor", "slurm",
            "--slurm-partition", "gpu", "--slurm-gpus-per-node", "1", "--slurm-param", "account=asr"]
    assert main(args) == 0
    assert seen["jobs"] == 40 and seen["executor"] == "slurm"
    assert seen["slurm"] == SlurmOptions(partition="gpu", gpus_per_node=1, additional={"account": "asr"})
    assert main(args + ["--slurm-param", "oops"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
