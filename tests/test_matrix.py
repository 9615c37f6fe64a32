"""The pretrain x adapt grid (xlingual/matrix.py): planning, a tiny 2 x 2 run end to end, caching, resume, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import TINY_YAML, mtimes, settings, write_tiny_corpus
from xlingual import matrix as matrix_mod
from xlingual.cli import main
from xlingual.config import MatrixConfig, load_config
from xlingual.cores import usable_cores
from xlingual.matrix import MatrixError, cell_status, hours_tag, plan_cells, run_matrix

TARGET = "adapt/tr-all_to_bn-3.6s"  # the cells of the variants table and the layer sweep


def config(corpus_dir, out_dir, *extra) -> MatrixConfig:
    return load_config(MatrixConfig, TINY_YAML, settings(corpus_dir, out_dir, *extra))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    """The tiny matrix run once, in this process."""
    out = tmp_path_factory.mktemp("matrix")
    summary = run_matrix(config(corpus.dir, out), jobs=1, progress=False)
    return out, summary


def test_plan_dedups_runs_and_roles(corpus, tmp_path):
    cells = plan_cells(config(corpus.dir, tmp_path))
    names = list(cells)
    assert names[:4] == ["scratch/bn-all/seed0", "scratch/tr-all/seed0", "scratch/bn-3.6s/seed0",
                         "scratch/tr-3.6s/seed0"]  # sources and baselines first
    assert len(cells) == 12 and all(c.kind == "adapt" for c in list(cells.values())[4:])
    main_cell = cells[f"{TARGET}/main/seed0"]
    roles = {(r["table"], r.get("row") or r.get("variant") or r.get("k")) for r in main_cell.roles}
    # one run: the matrix cell, the data-size table's large-source row, and the sweep's k=2 (= all layers)
    assert roles == {("matrix", None), ("size", "transfer_large"), ("sweep", 2)}
    adapters = cells[f"{TARGET}/size_adaptation/seed0"]
    assert {(r["table"], r.get("variant")) for r in adapters.roles} == {("size", None), ("variants", "full+adapters")}
    same = cells["adapt/bn-all_to_bn-3.6s/main/seed0"]
    assert {r["table"] for r in same.roles} == {"matrix", "size"}
    assert cells["scratch/tr-3.6s/seed0"].roles[0] == {"table": "baseline", "target": "tr", "budget": "small"}
    assert cells[f"{TARGET}/main/seed0"].source == "scratch/tr-all/seed0"
    assert cells["adapt/tr-3.6s_to_bn-3.6s/main/seed0"].source == "scratch/tr-3.6s/seed0"


def test_plan_two_seeds_doubles_every_run(corpus, tmp_path):
    cells = plan_cells(config(corpus.dir, tmp_path, "seeds=[0, 1]"))
    assert len(cells) == 24 and sum(n.endswith("/seed1") for n in cells) == 12


def test_plan_baseline_seeds_add_only_from_scratch_baselines(corpus, tmp_path):
    cells = plan_cells(config(corpus.dir, tmp_path, "baseline_seeds=[1, 2]"))
    extra = sorted(n for n in cells if not n.endswith("/seed0"))
    # every target at both budgets, at each further seed; nothing is adapted at those seeds
    assert extra == sorted(f"scratch/{t}-{b}/seed{s}" for s in (1, 2) for t in ("bn", "tr") for b in ("3.6s", "all"))
    assert len(cells) == 12 + 8
    # the seed-0 baselines are the runs the matrix already had: the target's pre-training run plays one more role
    assert {"table": "baseline", "target": "bn", "budget": "large"} in cells["scratch/bn-all/seed0"].roles
    assert cells["scratch/tr-all/seed2"].roles == [{"table": "baseline", "target": "tr", "budget": "large"}]
    assert plan_cells(config(corpus.dir, tmp_path, "baseline_seeds=[0]")).keys() == cells.keys() - set(extra)
    # caching is by configuration: the seed-0 runs keep their hashes, so finished runs stay finished
    plain = plan_cells(config(corpus.dir, tmp_path))
    assert all(cells[n].hash == c.hash for n, c in plain.items())


@pytest.mark.parametrize("extra, match", [
    (["variants.slow={mode: chain_thaw}"], "slow: .*needs at least 5 epochs"),
    (["variants.bad={mode: full, epochs: 3}"], r"variants.bad: unknown key\(s\) \['epochs'\]"),
    (["variants.main={mode: head}"], r"variant name\(s\) \['main'\] cannot be folder labels"),
    (["variants={k1: {mode: head}, a/b: {mode: head}}"], r"\['k1', 'a/b'\]"),
    (["layer_sweep=[3]"], "k in 0..2"),
    (["sources=[]"], "at least one source"),
    (["adapt.mode=adaptation"], "adapt: .*adapt.adaptation is empty"),
    (["small_train={epochs: x}"], "small_train.epochs: expected int"),
])
def test_plan_rejects_bad_configs(corpus, tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        plan_cells(config(corpus.dir, tmp_path, *extra))


@pytest.mark.parametrize("hours, tag", [(None, "all"), (0.001, "3.6s"), (0.1667, "10min"), (0.5, "30min"),
                                       (1.0, "1h"), (60, "60h")])
def test_hours_tag(hours, tag):
    assert hours_tag(hours) == tag


def test_end_to_end_outputs(first_run):
    out, summary = first_run
    assert summary["failed"] == {} and len(summary["ran"]) == 12 and summary["skipped"] == []
    for name in summary["ran"]:
        cell = out / name
        for f in ("cell.json", "best.pt", "train_log.jsonl", "decode_test/hyp.txt", "results.json"):
            assert (cell / f).is_file(), cell / f
        res = json.loads((cell / "results.json").read_text())
        cell_json = json.loads((cell / "cell.json").read_text())
        assert res["name"] == name and res["hash"] == cell_json["hash"] and res["test"]["n_utts"] == 2
        assert res["code_version"] == cell_json["code_version"] and isinstance(res["learned"], bool)
    res = json.loads((out / f"{TARGET}/main/seed0/results.json").read_text())
    assert res["source_run"] == "scratch/tr-all/seed0"
    assert res["source"]["checkpoint"] == str(out / "scratch/tr-all/seed0/best.pt")
    assert (res["source"]["language"], res["source"]["hours"]) == ("tr", None)
    report = out / "report"
    for stem in ("wer_matrix", "cer_matrix", "gain_matrix", "data_size", "variants", "layer_sweep"):
        assert (report / f"{stem}.csv").is_file() and (report / f"{stem}.md").is_file()
    for png in ("wer_matrix", "cer_matrix", "gain_matrix", "layer_sweep", "curves_bn", "curves_tr"):
        assert (report / f"{png}.png").stat().st_size > 1000
    text = (report / "report.md").read_text()
    assert "12 of 12 runs finished" in text
    assert all(cell.strip() != "—" for line in (report / "wer_matrix.md").read_text().splitlines()
               for cell in line.split("|"))


CHANGED = ("variants.head.train.lr=0.0005", "layer_sweep=[1, 2]")  # one changed run, one new run


def test_rerun_skips_every_run_then_changes_rerun_only_their_runs_in_parallel(first_run, corpus):
    out, _ = first_run
    before = mtimes(out)
    summary = run_matrix(config(corpus.dir, out), jobs=1, progress=False)
    assert summary["ran"] == [] and len(summary["skipped"]) == 12 and mtimes(out) == before

    # train.threads=0 (not part of any run's identity): each worker gets max(1, cores // jobs) threads
    summary = run_matrix(config(corpus.dir, out, *CHANGED, "train.threads=0"), jobs=2, progress=False)
    head, k1 = f"{TARGET}/head/seed0", f"{TARGET}/k1/seed0"
    assert sorted(summary["ran"]) == sorted([head, k1]) and len(summary["skipped"]) == 10
    after = mtimes(out)
    assert after[head] > before[head] and k1 in after
    assert {k: v for k, v in after.items() if k not in (head, k1)} == {k: v for k, v in before.items() if k != head}
    assert json.loads((out / head / "cell.json").read_text())["spec"]["adapt"]["train"]["lr"] == 0.0005
    for name in (head, k1):  # separate processes: each has its own log and cores // jobs torch threads
        assert "finished in" in (out / name / "log.txt").read_text()
        threads = json.loads((out / name / "cell.json").read_text())["runtime"]["threads"]
        assert threads == max(1, usable_cores() // 2)
    # every cell has its run: a value, or (these 2-epoch runs on tones) the ✗ of a run that did not learn
    assert all(cell.strip() != "—" for line in (out / "report" / "layer_sweep.md").read_text().splitlines()
               for cell in line.split("|"))


def test_killed_run_resumes_from_its_checkpoint(first_run, corpus):
    out, _ = first_run
    cfg = config(corpus.dir, out, *CHANGED)
    name = "adapt/bn-all_to_tr-3.6s/main/seed0"
    cell = out / name
    log_before = (cell / "train_log.jsonl").read_text()
    best_before = cell.joinpath("best.pt").stat().st_mtime_ns
    # what a kill after the last epoch's checkpoint leaves: last.pt, but no done.json and no results.json
    (cell / "done.json").unlink()
    (cell / "results.json").unlink()
    assert cell_status(out, plan_cells(cfg)[name]) == ("partial", "interrupted: resumes from last.pt")
    summary = run_matrix(cfg, jobs=1, progress=False)
    assert name in summary["ran"]  # (with the changed runs too when this test runs alone)
    assert (cell / "train_log.jsonl").read_text() == log_before  # resumed from last.pt: no epoch trained again
    assert cell.joinpath("best.pt").stat().st_mtime_ns == best_before and (cell / "done.json").is_file()


def test_cli_dry_run_and_report(first_run, corpus, capsys):
    out, _ = first_run
    sets = sum((["--set", s] for s in settings(corpus.dir, out)), [])
    assert main(["matrix", str(TINY_YAML), "--dry-run", *sets]) == 0
    status = {line.split()[1]: line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert len(status) == 12 and status[f"{TARGET}/k0/seed0"] in ("done", "new")
    assert all(v == "done" for k, v in status.items() if "/head/" not in k and "/k0/" not in k)
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report" / "report.md")
    assert main(["report", str(out / "nowhere")]) == 2
    assert "not a matrix folder" in capsys.readouterr().err


def test_failed_source_blocks_its_cells_and_the_rest_still_reports(corpus, tmp_path, monkeypatch):
    real = matrix_mod.run_cell

    def flaky(path):
        if "scratch/tr-all" in str(path):
            raise RuntimeError("simulated failure")
        return real(path)

    monkeypatch.setattr(matrix_mod, "run_cell", flaky)
    cfg = config(corpus.dir, tmp_path / "m", "variant_pairs=[]", "layer_sweep=[]", "size_pairs=[]", "sources=[tr]",
                 "targets=[bn]")
    with pytest.raises(MatrixError) as e:
        run_matrix(cfg, jobs=1, progress=False)
    msg = str(e.value)
    assert "scratch/tr-all/seed0: RuntimeError: simulated failure" in msg
    assert "adapt/tr-all_to_bn-3.6s/main/seed0: its source scratch/tr-all/seed0 failed" in msg
    assert "2 of 3 runs failed" in msg
    wer = (tmp_path / "m" / "report" / "wer_matrix.csv").read_text().splitlines()
    assert wer == ["adapt to \\ pretrain on,tr", "bn,"]  # the failed cell is empty
    assert (tmp_path / "m" / "scratch/bn-3.6s/seed0/results.json").is_file()  # the independent run finished


def test_a_code_change_makes_runs_stale_unless_reuse_is_asked(first_run, corpus, monkeypatch, capsys):
    """The code version is part of every run's key: after a change to the compute modules every run is stale, the
    dry run says why, and --reuse-stale-code keeps the old results with the report saying so."""
    out, _ = first_run
    cfg = config(corpus.dir, out, *CHANGED)
    assert all(s == "done" for _, s, _ in matrix_mod.matrix_status(cfg))
    monkeypatch.setattr(matrix_mod, "code_version", lambda kind="scratch": "9.9.9+changed")
    status = matrix_mod.matrix_status(cfg)
    assert all(s == "stale" and "code changed" in why and "9.9.9+changed" in why for _, s, why in status)
    sets = sum((["--set", s] for s in settings(corpus.dir, out, *CHANGED)), [])
    assert main(["matrix", str(TINY_YAML), "--dry-run", *sets]) == 0
    assert "stale" in capsys.readouterr().out
    before = mtimes(out)
    summary = run_matrix(cfg, jobs=1, progress=False, reuse_code=True)
    assert summary["ran"] == [] and mtimes(out) == before
    assert "12 runs were made by an earlier code version" in (out / "report" / "report.md").read_text()


def test_results_restored_on_a_fresh_machine_are_not_redone(first_run, corpus, tmp_path):
    """recipes/synthetic/collect.py saves what a matrix measured without its checkpoints; restored into another
    folder, every finished run counts as done, and a new run that needs a source's checkpoint retrains only that
    source (deterministically: its results stay the same)."""
    import subprocess
    import sys

    from helpers import ROOT

    out, _ = first_run
    # the shared folder holds the default runs, plus CHANGED's when the tests before this one ran: take a
    # configuration every run of which is done there, so this test holds alone and in any order
    extra = next(e for e in ((), CHANGED) if all(s == "done" for _, s, _ in
                                                 matrix_mod.matrix_status(config(corpus.dir, out, *e))))
    collect = [sys.executable, str(ROOT / "recipes" / "synthetic" / "collect.py")]
    subprocess.run([*collect, "save", str(out), str(tmp_path / "saved")], check=True, capture_output=True)
    assert not list((tmp_path / "saved").rglob("*.pt"))
    subprocess.run([*collect, "restore", str(tmp_path / "saved"), str(tmp_path / "fresh")], check=True,
                   capture_output=True)
    fresh = tmp_path / "fresh"
    summary = run_matrix(config(corpus.dir, fresh, *extra), jobs=1, progress=False)
    assert summary["ran"] == [] and len(summary["skipped"]) == len(plan_cells(config(corpus.dir, fresh, *extra)))
    source = "scratch/tr-all/seed0"
    before = json.loads((fresh / source / "results.json").read_text())
    # a learning rate no other test uses: one new adapt run, which needs the source's checkpoint
    summary = run_matrix(config(corpus.dir, fresh, *extra, "variants.head.train.lr=0.0007"), jobs=1,
                         progress=False)
    assert sorted(summary["ran"]) == sorted([source, f"{TARGET}/head/seed0"])
    after = json.loads((fresh / source / "results.json").read_text())
    assert after["test"] == before["test"] and after["key"] == before["key"]


def test_a_pool_of_several_languages_runs_end_to_end(tmp_path):
    """The pooled source's run reads every language of its pool (its cell is named after all of them, a name no
    corpus folder has); the target adapts from it and the pool gets its column."""
    three = write_tiny_corpus(tmp_path / "corpus", ("bn", "tr", "th"))
    cfg = config(three.dir, tmp_path / "m", "sources=[bn, tr, th]", "targets=[bn]", "pools={all: [bn, tr, th]}",
                 "size_pairs=[]", "variant_pairs=[]", "layer_sweep=[]", "train.epochs=1", "adapt.train.epochs=1")
    summary = run_matrix(cfg, jobs=1, progress=False)
    pool = [n for n in summary["ran"] if n.startswith("scratch/tr+th-")]
    assert len(pool) == 1 and not summary["failed"]
    assert json.loads((tmp_path / "m" / pool[0] / "results.json").read_text())["languages"] == ["tr", "th"]
    header = (tmp_path / "m" / "report" / "wer_matrix.csv").read_text().splitlines()[0]
    assert header.split(",")[1:] == ["bn", "tr", "th", "all"]


def test_pool_units_change_only_the_pooled_runs(corpus, tmp_path):
    """pool_units gives the pooled sources their own unit set (IPA shares phones across scripts); every other run
    keeps its units and its key, so finished runs stay finished."""
    base = ("sources=[bn, tr, th]", "targets=[bn]", "pools={all: [bn, tr, th]}", "size_pairs=[]",
            "variant_pairs=[]", "layer_sweep=[]")
    plain = plan_cells(config(corpus.dir, tmp_path, *base))
    ipa = plan_cells(config(corpus.dir, tmp_path, *base, "pool_units={kind: ipa}"))
    pooled = {n for n, c in ipa.items() if c.kind == "scratch" and len(c.spec.languages) > 1}
    assert pooled == {"scratch/tr+th-all/seed0"} and ipa["scratch/tr+th-all/seed0"].spec.units.kind == "ipa"
    assert plain["scratch/tr+th-all/seed0"].spec.units.kind == "char"
    others = [n for n, c in ipa.items() if n not in pooled and (c.source_cell is None
                                                                 or c.source_cell.name not in pooled)]
    assert len(others) == len(ipa) - 2 and all(n in plain and ipa[n].hash == plain[n].hash for n in others)
    adapted = next(c for c in ipa.values() if c.kind == "adapt" and c.source_cell.name in pooled)
    assert adapted.spec.units.kind == "char"  # the target keeps its own units: a new output layer over IPA


def test_pooled_sources_leave_the_target_out_and_become_columns(corpus, tmp_path):
    """A pool is pre-trained on its languages together; the run a target adapts from never holds the target's
    own language; at the "equal" budget the pool has the audio of one source, at "sum" that of all."""
    cfg = config(corpus.dir, tmp_path, "pools={pool: [bn, tr]}", "pool_budgets=[equal, sum]", "source_hours=0.002",
                 "size_pairs=[]", "variant_pairs=[]", "layer_sweep=[]")
    cells = plan_cells(cfg)
    pooled = {n: c for n, c in cells.items() if any(r.get("source", "").startswith("pool") for r in c.roles)
              and c.kind == "scratch"}
    # for target bn the pool is [tr]; for target tr it is [bn]: single-language runs (at equal budget: the same
    # runs as the sources themselves, so nothing is trained twice)
    assert {tuple(c.spec.languages) for c in pooled.values()} == {("bn",), ("tr",)}
    to_bn = [c for c in cells.values() if c.kind == "adapt" and c.language == "bn"
             and any(r.get("source") == "pool-sum" for r in c.roles)]
    assert len(to_bn) == 1 and to_bn[0].source_cell.spec.languages == ["tr"]
    three = plan_cells(config(corpus.dir, tmp_path / "3", "sources=[bn, tr, th]", "targets=[bn]",
                              "pools={all: [bn, tr, th]}", "source_hours=0.003", "size_pairs=[]",
                              "variant_pairs=[]", "layer_sweep=[]"))
    pool = next(c for c in three.values() if c.kind == "scratch" and len(c.spec.languages) > 1)
    assert pool.spec.languages == ["tr", "th"] and pool.spec.hours == pytest.approx(0.003 / 2)
    from xlingual.config import matrix_sources, to_dict

    assert matrix_sources(to_dict(cfg)) == ["bn", "tr", "pool", "pool-sum"]
    with pytest.raises(ValueError, match="pools.bn: a pool needs a name that is no source language"):
        plan_cells(config(corpus.dir, tmp_path, "pools={bn: [bn, tr]}"))


def _weights(folder) -> dict:
    import torch

    return torch.load(folder / "best.pt", map_location="cpu", weights_only=False)["model"]


def test_a_serving_worker_runs_cell_after_cell_as_fresh_processes_do(first_run, tmp_path):
    """The local executor's workers run many cells each (torch imported once): a run that follows another in the
    same worker gives what it gives in a fresh process, bit for bit; a failing run leaves the worker serving, and a
    dead worker is replaced."""
    import shutil

    import torch

    from xlingual.worker import WorkerPool, run_in_subprocess

    out, _ = first_run
    cells = sorted(out.glob("adapt/*/main/seed0/cell.json"))[:2]
    assert len(cells) == 2

    def copy(cell, name):
        (tmp_path / name).mkdir()
        return Path(shutil.copy(cell, tmp_path / name / "cell.json"))

    first, second, fresh = copy(cells[0], "first"), copy(cells[1], "second"), copy(cells[1], "fresh")
    broken = copy(cells[1], "broken")
    spec = json.loads(broken.read_text())
    spec["spec"]["source"] = str(tmp_path / "no_such_source.pt")
    broken.write_text(json.dumps(spec))
    with WorkerPool() as pool:
        assert pool.run(first, 1) == 0 and pool.run(broken, 1) == 1 and pool.run(second, 1) == 0
        pids = {line.split("(pid ")[1].split(")")[0] for name in ("first", "broken", "second")
                for line in (tmp_path / name / "log.txt").read_text().splitlines() if "--serve (pid" in line}
        assert len(pids) == 1  # one worker ran all three
        assert "finished in" in (tmp_path / "second" / "log.txt").read_text()
        assert "Traceback" in (tmp_path / "broken" / "log.txt").read_text()
        pool.all[0].kill()
        pool.all[0].wait()
        again = copy(cells[0], "again")
        assert pool.run(again, 1) == 0 and len(pool.all) == 2  # a new worker took over
        workers = list(pool.all)
    assert all(p.poll() is not None for p in workers)  # closed: no worker left running
    assert run_in_subprocess(fresh, 1) == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("second", "fresh"))
    assert (a["test"]["cer"], a["test"]["wer"], a["training"]["best_epoch"]) == \
        (b["test"]["cer"], b["test"]["wer"], b["training"]["best_epoch"])
    wa, wb = _weights(tmp_path / "second"), _weights(tmp_path / "fresh")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_collect_keeps_every_ranking_folder_whole_and_no_checkpoint(tmp_path):
    """collect.py keeps report/ and every ranking*/ folder (rank-eval --out) whole, a run's small files, never a
    checkpoint; a run folder inside a kept folder is not listed twice."""
    import importlib.util

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("collect", ROOT / "recipes" / "synthetic" / "collect.py")
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)
    files = ["cells.json", "report/report.md", "ranking/ranking_eval.md", "ranking_phones/oracle.json",
             "ranking_phones/sub/run.json", "scratch/bn/seed0/run.json", "scratch/bn/seed0/results.json",
             "scratch/bn/seed0/best.pt", "scratch/bn/seed0/decode_test/errors.jsonl", "notes/other.txt"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    kept = [str(p) for p in collect.wanted(tmp_path)]
    assert kept == sorted(f for f in files if not f.endswith(".pt") and not f.startswith("notes/"))
    # --only: just the matching runs' files (the noise matrix takes the matrix's baselines at seeds 1-2 this way)
    assert collect.copy(tmp_path, tmp_path / "dst", "scratch/*/seed0") == 3
    assert sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*") if p.is_file()) == \
        ["scratch/bn/seed0/decode_test/errors.jsonl", "scratch/bn/seed0/results.json", "scratch/bn/seed0/run.json"]
