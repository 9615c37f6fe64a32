"""Concurrency: two runs writing the same experiment folder are refused clearly (fileio.exclusive_lock).

The holder is always a real second process: flock locks belong to open files, so only another process shows
what a user starting a second run would see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ENV, FEATS, RECIPE, save_source, sets, start, write_tiny_corpus
from xlingual.cli import main
from xlingual.config import (AdaptConfig, AdaptRecipeConfig, CorpusConfig, LIDConfig, MatrixConfig, RecipeConfig,
                             TrainConfig, UnitConfig)
from xlingual.fileio import LockError, exclusive_lock, remove_stale_tmp

HOLD = """
import sys, time
from xlingual.fileio import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """holder(folder) -> a process holding the folder's lock (killed at the end of the test)."""
    procs = []

    def hold(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, env=ENV, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_second_process_is_refused_naming_folder_and_pid(holder, tmp_path):
    proc = holder(tmp_path / "exp")
    with pytest.raises(LockError) as e:
        with exclusive_lock(tmp_path / "exp"):
            pass
    assert str(tmp_path / "exp") in str(e.value) and f"PID {proc.pid}" in str(e.value)
    # the kernel drops the lock when its holder dies, even by SIGKILL: no stale lock to clean up by hand
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with exclusive_lock(tmp_path / "exp"):
        assert (tmp_path / "exp" / ".lock").read_text().strip() == str(os.getpid())


def test_reentrant_within_a_process_and_released_after(tmp_path):
    with exclusive_lock(tmp_path / "x"):
        with exclusive_lock(tmp_path / "x"):  # nested entry points (run_adapt -> adapt)
            pass
        with exclusive_lock(tmp_path / "x" / "cell"):  # a matrix and its runs lock different folders
            pass
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path / "x")],
                           capture_output=True, text=True, env=ENV)
    assert probe.returncode == 0 and probe.stdout.strip() == "locked"


def test_other_ranks_of_a_distributed_run_do_not_lock(holder, tmp_path, monkeypatch):
    holder(tmp_path / "exp")
    monkeypatch.setenv("RANK", "1")
    with exclusive_lock(tmp_path / "exp"):
        pass


def test_stale_temporary_files_of_dead_writers_are_removed_under_the_lock(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "exp"
    (folder / "decode_test").mkdir(parents=True)
    stale = [folder / f".last.pt.tmp{dead.pid}", folder / "decode_test" / f".hyp.txt.tmp{dead.pid}"]
    kept = [folder / f".results.json.tmp{os.getppid()}",  # a live process may still be writing it
            folder / "notes.tmp1", folder / "results.json"]
    for p in stale + kept:
        p.write_text("x")
    with exclusive_lock(folder):
        assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert remove_stale_tmp(folder) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc")
def test_temporary_files_of_a_killed_unreaped_writer_are_removed(tmp_path):
    # a run killed with its parent stays a zombie for good where PID 1 does not reap orphans (CI containers):
    # os.kill(pid, 0) still succeeds on it, but it can write nothing more
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        zombie.kill()
        deadline = time.time() + 10
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline, "the killed process never became a zombie"
            time.sleep(0.02)
        stale = tmp_path / f".last.pt.tmp{zombie.pid}"
        stale.write_text("x")
        assert remove_stale_tmp(tmp_path) == [stale] and not stale.exists()
    finally:
        zombie.wait()


@pytest.fixture(scope="module")
def adapt_setup(tmp_path_factory):
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("corpus"))
    source = save_source(tmp_path_factory.mktemp("src") / "bn.pt", corpus, "bn", UnitConfig(kind="char"))
    return corpus, source


def _entry_points(corpus: CorpusConfig, source: Path, out: Path):
    """Every entry point that writes an experiment folder, called on `out`."""
    from xlingual.recipe import adapt_spec, run_adapt, train_lid
    from xlingual.matrix import run_matrix
    from xlingual.recipe import run_recipe
    from xlingual.runs import execute
    from xlingual.worker import run_cell

    train = TrainConfig(epochs=1, progress=False, threads=1, device="cpu")
    return {
        "recipe": lambda: run_recipe(RecipeConfig(language="tr", out_dir=str(out), corpus=corpus)),
        "adapt (API)": lambda: execute(adapt_spec(source, "tr", AdaptConfig(mode="head", train=train), corpus,
                                                  UnitConfig(), FEATS), out),
        "adapt (xlingual adapt)": lambda: run_adapt(AdaptRecipeConfig(language="tr", out_dir=str(out), corpus=corpus,
                                                                      features=FEATS), source),
        "matrix": lambda: run_matrix(MatrixConfig(out_dir=str(out), corpus=corpus, sources=["tr"], targets=["bn"]),
                                     progress=False),
        "matrix run (cell)": lambda: run_cell(out / "cell.json"),
        "lid": lambda: train_lid(LIDConfig(languages=["bn", "tr"], out_dir=str(out), corpus=corpus)),
    }


@pytest.mark.parametrize("entry", ["recipe", "adapt (API)", "adapt (xlingual adapt)", "matrix", "matrix run (cell)",
                                   "lid"])
def test_every_entry_point_refuses_a_folder_in_use(adapt_setup, holder, tmp_path, entry):
    corpus, source = adapt_setup
    out = tmp_path / "exp"
    proc = holder(out)
    with pytest.raises(LockError, match=f"in use by another xlingual run \\(PID {proc.pid}\\)"):
        _entry_points(corpus, source, out)[entry]()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # refused before writing anything


def test_two_real_recipe_runs_on_one_folder(tmp_path, capsys):
    """A second `xlingual recipe` on the folder of one that is running stops at once with one clear line; the
    first finishes undisturbed."""
    from data_prep.synthetic import prepare_synthetic

    prepare_synthetic(tmp_path / "syn", languages=("tr",), hours={"train": 0.01, "dev": 0.003, "test": 0.003},
                      progress=False)
    out = tmp_path / "exp"
    args = ["recipe"] + sets(RECIPE + [f"corpus.dir={tmp_path / 'syn'}", f"out_dir={out}", "train.epochs=6"])
    first = start(args, tmp_path / "first.log")
    deadline = time.time() + 60
    while not (out / ".lock").is_file() or not (out / ".lock").read_text().strip():
        assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.005)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out} is in use by another xlingual run (PID {first.pid})" in err
    assert first.poll() is None, "the first run had already finished: the refusal was not tested against it"
    assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()
    assert json.loads((out / "results.json").read_text())["test"]["n_utts"] > 0
