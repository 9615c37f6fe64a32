"""The pretrain x adapt grid: every source pre-trained once, every target adapted from each, every run cached.

A matrix is a set of *runs* ("cells"), each a folder under `out_dir` with its own configuration hash:

    scratch/<lang>-<budget>/seed<s>/                  a model trained from scratch: a source (large budget), a
                                                      target's baseline (small budget), the data-size table's
                                                      small source — the same run when the same config
    adapt/<src>-<budget>_to_<tgt>-<budget>/<label>/seed<s>/   a source adapted to a target; label "main" for the
                                                      matrix's method, a variant name, "k<k>" for the layer sweep

Each run is one runs.execute() (cell.json holds its RunSpec; then run.json, the training outputs, decode_test/,
log.txt for parallel runs, and results.json, written last). A run's hash covers its configuration, its source
run's hash and the code version (runspec.code_version); a run whose results.json carries the current hash is skipped,
a changed configuration or code re-runs only the runs it reaches (an adaptation run depends on its source's
training hash, not on the source's decoding; `--dry-run` says why each run is stale; `--reuse-stale-code` keeps
results that differ only in the code version, and the report says so), and a killed run resumes from its last.pt.
Runs with identical configurations are one run that plays several roles (e.g. a "full" variant equal to the main
method), so nothing is trained twice. A run that did not learn (runs.learning_verdict) is kept, and flagged.

`--jobs N` runs independent runs in parallel, each as `python -m xlingual.worker <cell.json>` with
max(1, cores // N) torch threads and its own log.txt; adaptation runs start as soon as their source is done.
`--executor slurm` runs that same command as one cluster job per run (cluster.py, through submitit), with up to
N jobs queued or running at once; caching and resuming are the same, since the job runs the same command.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .config import AdaptConfig, MatrixConfig, TrainConfig, UnitConfig, from_dict, merge, pool_column, to_dict
from .features import cache_dir, compute_features
from .fileio import locked, read_json, remove_stale_tmp, write_json, write_text
from .runspec import (RESULTS_FILE, RunSpec, budget, code_version, config_dict, digest, load_language,
                      prepare_corpus)
from .transfer import check_adapt_config
from .cores import usable_cores
from .worker import CELL_FILE, LOG_FILE, WorkerPool, run_cell

PLAN_FILE = "cells.json"  # every run of the matrix and the table roles it plays; the report reads it


class MatrixError(RuntimeError):
    """Runs that failed; the message lists them with their logs."""


@dataclass
class Cell:
    name: str  # folder under out_dir, e.g. "scratch/bn-30min/seed0"
    kind: str  # "scratch" or "adapt"
    language: str  # the language it is trained (adapted) on
    hours: float | None  # its training budget
    seed: int  # train.seed of the run
    spec: RunSpec  # what the run trains (runs.execute); an adapt run's source is <source run>/best.pt
    source_cell: "Cell | None" = None  # the run it adapts from
    label: str = "main"  # adapt runs: main, a variant name, k<k>, size_adaptation
    roles: list[dict] = field(default_factory=list)  # the table entries it fills (report.py)

    @property
    def source(self) -> str | None:
        return self.source_cell.name if self.source_cell else None

    @functools.cached_property
    def config_hash(self) -> str:
        """The run's configuration and its source's, decoding included, without the code version."""
        src = self.source_cell.config_hash if self.source_cell else None
        return digest(config_dict(self.spec, src), to_dict(self.spec.decode))

    @functools.cached_property
    def train_hash(self) -> str:
        """What the trained model depends on: configuration, source run, code version (not decoding)."""
        src = self.source_cell.train_hash if self.source_cell else None
        return digest(config_dict(self.spec, src), code_version(self.kind))

    @property
    def hash(self) -> str:
        return digest(self.train_hash, to_dict(self.spec.decode))


def hours_tag(hours: float | None) -> str:
    """A budget in folder names and labels: 'all', '36s', '10min', '1.5h'."""
    if hours is None:
        return "all"
    if hours < 1 / 60:
        return f"{hours * 3600:.4g}s"
    if hours < 1:
        return f"{hours * 60:.4g}min"
    return f"{hours:g}h"


def _seeded(train: TrainConfig, seed: int, threads: int = 0, progress: bool = False) -> TrainConfig:
    """The run's training config at `seed`; how it executes (threads, progress) is pinned per run in cell.json."""
    return replace(train, seed=seed, threads=threads, progress=progress)


def variant_config(cfg: MatrixConfig, delta: dict, where: str) -> AdaptConfig:
    """The matrix's `adapt` section with a variant's delta applied (strict: unknown keys are errors)."""
    if not isinstance(delta, dict):
        raise ValueError(f"{where}: expected a mapping of adapt fields, got {delta!r}")
    return from_dict(AdaptConfig, merge(to_dict(cfg.adapt), delta), where)


def plan_cells(cfg: MatrixConfig) -> dict[str, Cell]:
    """Every run of the matrix, scratch runs first, deduplicated by configuration; validates the config.

    Raises:
        ValueError: an empty language list, a bad budget, an adapt setting that cannot work with the model
            (e.g. chain-thaw with too few epochs), or a layer-sweep k outside 0..n_layers.
    """
    from .model import dims_from_config

    if not cfg.sources or not cfg.targets:
        raise ValueError("matrix needs at least one source and one target language")
    for name, langs in cfg.pools.items():
        if name in cfg.sources or not re.fullmatch(r"[\w.-]+", name) or len(langs) < 2:
            raise ValueError(f"pools.{name}: a pool needs a name that is no source language (letters, digits, "
                             f"'_', '.', '-') and at least 2 languages, got {langs}")
    if not cfg.seeds:
        raise ValueError("matrix.seeds is empty; give at least one seed, e.g. [0]")
    for name, h in (("target_hours", cfg.target_hours), ("source_hours", cfg.source_hours),
                    ("small_source_hours", cfg.small_source_hours)):
        if h is not None and h <= 0:
            raise ValueError(f"matrix.{name} must be > 0 (or null where allowed), got {h}")
    n_layers = dims_from_config(cfg.model, cfg.features.n_mels, 2).n_layers
    for k in cfg.layer_sweep:
        if not 0 <= k <= n_layers:
            raise ValueError(f"layer_sweep k={k}: the model has {n_layers} conformer layers (k in 0..{n_layers})")

    bad = [n for n in cfg.variants if n in ("main", "size_adaptation") or re.fullmatch(r"k\d+", n)
           or not re.fullmatch(r"[\w.+-]+", n)]
    if bad:
        raise ValueError(f"variant name(s) {bad} cannot be folder labels: main, size_adaptation and k<number> are "
                         f"taken, and names may hold only letters, digits, '_', '.', '+' and '-'")
    methods: dict[str, AdaptConfig] = {"main": cfg.adapt}
    for name, delta in cfg.variants.items():
        methods[name] = variant_config(cfg, delta, f"variants.{name}")
    if cfg.size_pairs:
        methods["size_adaptation"] = variant_config(cfg, cfg.size_adaptation, "size_adaptation")
    sweep = {k: variant_config(cfg, {"transfer_layers": k}, "layer_sweep") for k in cfg.layer_sweep}
    for label, m in [*methods.items(), *((f"layer_sweep k={k}", m) for k, m in sweep.items())]:
        try:
            check_adapt_config(m, n_layers)
        except ValueError as e:
            raise ValueError(f"{'adapt' if label == 'main' else label}: {e}") from None

    if not isinstance(cfg.small_train, dict):
        raise ValueError(f"small_train: expected a mapping of train fields, got {cfg.small_train!r}")
    small_train = from_dict(TrainConfig, merge(to_dict(cfg.train), cfg.small_train), "small_train")
    common = dict(corpus=cfg.corpus, features=cfg.features, units=cfg.units, decode=cfg.decode, dev_hours=cfg.dev_hours)
    cells: dict[str, Cell] = {}
    by_hash: dict[str, str] = {}

    def add(cell: Cell, role: dict) -> Cell:
        if not re.fullmatch(r"[\w+-][\w.+-]*", cell.language):  # it names folders under out_dir
            raise ValueError(f"language code {cell.language!r} cannot be a folder name: use letters, digits, "
                             f"'_', '.', '+' and '-' (not starting with '.')")
        existing = cells.get(by_hash.get(cell.train_hash, ""))
        if existing is None and cell.name in cells:
            raise ValueError(f"two different runs would share the folder {cell.name}; rename the variant "
                             f"(main, size_adaptation and k<number> are taken)")
        if existing is None:
            cells[cell.name] = existing = cell
            by_hash[cell.train_hash] = cell.name
        if role not in existing.roles:
            existing.roles.append(role)
        return existing

    def scratch(lang: str, hours: float | None, seed: int, role: dict, train: TrainConfig | None = None,
                languages: list[str] | None = None, units: UnitConfig | None = None) -> Cell:
        train = train or (cfg.train if hours == cfg.source_hours else small_train)
        spec = RunSpec(kind="scratch", languages=languages or [lang], hours=hours, model=cfg.model,
                       train=_seeded(train, seed), **{**common, "units": units or cfg.units})
        return add(Cell(f"scratch/{lang}-{hours_tag(hours)}/seed{seed}", "scratch", lang, hours, seed, spec), role)

    def pooled(name: str, langs: list[str], budget: str, seed: int) -> Cell:
        """A multilingual source: langs pre-trained together (the pool minus the target it is for)."""
        hours = cfg.source_hours if budget == "sum" or cfg.source_hours is None else cfg.source_hours / len(langs)
        return scratch("+".join(langs), hours, seed, {"table": "source", "source": pool_column(name, budget),
                                                      "budget": "large"}, train=cfg.train, languages=langs,
                       units=cfg.pool_units)

    def adapted(src: Cell, tgt: str, label: str, method: AdaptConfig, seed: int, role: dict) -> Cell:
        if method.transfer_layers == n_layers:
            method = replace(method, transfer_layers=None)  # all layers: the same run as the default
        method = replace(method, train=_seeded(method.train, seed))
        spec = RunSpec(kind="adapt", languages=[tgt], hours=cfg.target_hours, train=method.train, adapt=method,
                       source=str(Path(cfg.out_dir) / src.name / "best.pt"), **common)
        name = f"adapt/{src.language}-{hours_tag(src.hours)}_to_{tgt}-{hours_tag(cfg.target_hours)}/{label}/seed{seed}"
        return add(Cell(name, "adapt", tgt, cfg.target_hours, seed, spec, src, label), role)

    small_source = cfg.small_source_hours if cfg.small_source_hours is not None else cfg.target_hours
    all_pairs = [(s, t) for t in cfg.targets for s in cfg.sources]
    for seed in cfg.seeds:
        large = {s: scratch(s, cfg.source_hours, seed, {"table": "source", "source": s, "budget": "large"})
                 for s in cfg.sources}

        def source(lang: str) -> Cell:
            return large.get(lang) or scratch(lang, cfg.source_hours, seed,
                                              {"table": "source", "source": lang, "budget": "large"})

        for t in cfg.targets:
            scratch(t, cfg.target_hours, seed, {"table": "baseline", "target": t, "budget": "small"})
        for s, t in cfg.size_pairs:
            scratch(t, cfg.target_hours, seed, {"table": "baseline", "target": t, "budget": "small"})
            scratch(t, cfg.source_hours, seed, {"table": "baseline", "target": t, "budget": "large"})
            small = scratch(s, small_source, seed, {"table": "source", "source": s, "budget": "small"})
            size = {"table": "size", "source": s, "target": t}
            adapted(small, t, "main", cfg.adapt, seed, {**size, "row": "transfer_small"})
            adapted(source(s), t, "main", cfg.adapt, seed, {**size, "row": "transfer_large"})
            adapted(source(s), t, "size_adaptation", methods["size_adaptation"], seed, {**size, "row": "adaptation"})
            adapted(source(t), t, "main", cfg.adapt, seed, {**size, "row": "same_language"})
        for s, t in all_pairs:
            adapted(source(s), t, "main", cfg.adapt, seed, {"table": "matrix", "source": s, "target": t})
        for name, langs in cfg.pools.items():
            for pool_budget in cfg.pool_budgets:
                for t in cfg.targets:
                    src = pooled(name, [x for x in langs if x != t], pool_budget, seed)
                    adapted(src, t, "main", cfg.adapt, seed,
                            {"table": "matrix", "source": pool_column(name, pool_budget), "target": t})
        variant_pairs = all_pairs if cfg.variant_pairs is None else cfg.variant_pairs
        for s, t in variant_pairs:
            for name in cfg.variants:
                adapted(source(s), t, name, methods[name], seed,
                        {"table": "variants", "variant": name, "source": s, "target": t})
        sweep_pairs = all_pairs if cfg.sweep_pairs is None else cfg.sweep_pairs
        for s, t in sweep_pairs:
            for k in cfg.layer_sweep:
                adapted(source(s), t, f"k{k}", sweep[k], seed, {"table": "sweep", "k": k, "source": s, "target": t})
    if cfg.baseline_seeds:
        # the baselines of every target at both budgets, at every seed: the report's spread table (a baseline at a
        # seed of `seeds` is the run made above, or the target's pre-training run, now playing one more role)
        for seed in dict.fromkeys([*cfg.seeds, *cfg.baseline_seeds]):
            for t in cfg.targets:
                if "small" in cfg.spread_budgets:
                    scratch(t, cfg.target_hours, seed, {"table": "baseline", "target": t, "budget": "small"})
                if "large" in cfg.spread_budgets:
                    scratch(t, cfg.source_hours, seed, {"table": "baseline", "target": t, "budget": "large"})
    # scratch runs first: every adaptation run comes after its source
    return dict(sorted(cells.items(), key=lambda kv: kv[1].kind != "scratch"))


# ----------------------------------------------------------------------------------------------------------------
# One run


def cell_status(out_dir: Path, cell: Cell, reuse_code: bool = False) -> tuple[str, str]:
    """(status, why): "done" (results with the current hash), "stale" (results of another configuration or code
    version), "partial" (started, not finished) or "new".

    reuse_code: results that differ only in the code version that made them count as done (the report says so).
    """
    folder = out_dir / cell.name
    res = folder / RESULTS_FILE
    if res.is_file():
        r = read_json(res)
        if r.get("hash") == cell.hash:
            return "done", ""
        if r.get("config_hash") == cell.config_hash:
            why = f"made by code {r.get('code_version')}, now {code_version(cell.kind)}"
            return ("done", f"reused: {why}") if reuse_code else ("stale", f"code changed: {why}")
        return "stale", "its configuration changed"
    if (folder / "last.pt").is_file():
        return "partial", "interrupted: resumes from last.pt"
    return ("partial", "started") if (folder / CELL_FILE).is_file() else ("new", "")


def _prepare_cell(out_dir: Path, cell: Cell, threads: int, progress: bool) -> Path:
    """Write cell.json; a run whose training config changed starts from an empty folder.

    The execution settings (torch threads, progress) are pinned at a run's first start and reused when it
    resumes, so a resumed run continues under the same run key and computes what the uninterrupted one would.
    """
    folder = out_dir / cell.name
    path = folder / CELL_FILE
    runtime = {"threads": threads, "progress": progress}
    if path.is_file():
        old = read_json(path)
        if old.get("train_hash") == cell.train_hash:
            runtime = old["runtime"]
        else:
            shutil.rmtree(folder)  # a different model: nothing in the folder is reusable
    (folder / RESULTS_FILE).unlink(missing_ok=True)
    write_json(path, {"name": cell.name, "kind": cell.kind, "language": cell.language, "hours": cell.hours,
                      "seed": cell.seed, "label": cell.label, "source": cell.source, "hash": cell.hash,
                      "config_hash": cell.config_hash, "train_hash": cell.train_hash,
                      "code_version": code_version(cell.kind),
                      "spec": to_dict(cell.spec), "runtime": runtime})
    return path


# ----------------------------------------------------------------------------------------------------------------
# The grid


def prepare_data(cfg: MatrixConfig, cells: list[Cell], progress: bool = True) -> None:
    """Manifests (the synthetic corpus is generated here) and cached features of every run, before any run starts.

    Parallel runs then only read: no two processes generate the same audio or compute the same features.
    """
    budgets: dict[str, set] = {}
    for c in cells:  # a pooled source's run reads each of its languages (its cell is named after all of them)
        for lang in c.spec.languages:
            budgets.setdefault(lang, set()).add(c.spec.hours)
    prepare_corpus(cfg.corpus, sorted(budgets), progress)
    cache = cache_dir(cfg.corpus)
    for lang in sorted(budgets):
        data = load_language(cfg.corpus, lang)
        sets = [budget(data["train"], h, cfg.corpus.seed) for h in sorted(budgets[lang], key=str)]
        for utts in sets + [data["dev"], data["test"]]:
            compute_features(utts, cache, cfg.features, progress=progress, desc=f"{lang} features")


@locked("cfg.out_dir")  # a second matrix run on the same folder is refused (each run also locks its own folder)
def run_matrix(cfg: MatrixConfig, jobs: int = 1, progress: bool = True, executor: str = "local",
               slurm=None, reuse_code: bool = False) -> dict:
    """Run every unfinished run of the matrix, then write the report; returns {"ran", "skipped", "failed", ...}.

    Args:
        jobs: runs at a time; 1 runs them in this process (tracebacks on the console), N > 1 in N worker
            processes (worker.WorkerPool: each runs one cell after another, so torch is imported once per worker)
            with max(1, cores // N) torch threads each (train.threads, when set, wins) and a log.txt per run.
        executor: "local" (the above) or "slurm": each run a submitit job with slurm.cpus_per_task threads,
            up to `jobs` at a time.
        slurm: cluster.SlurmOptions for executor="slurm" (default: SlurmOptions()).
        reuse_code: runs whose results differ only in the code version that made them are not re-run; the report
            lists them (by default a code change re-runs every run it reaches).
    Raises:
        MatrixError after all runnable runs finished, naming each failed run (and those it blocked) and its log.
    """
    from .report import write_report

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    t0 = time.time()
    out = Path(cfg.out_dir)
    cells = plan_cells(cfg)
    write_plan(out, cfg, cells, reuse_code)
    status = {name: cell_status(out, c, reuse_code)[0] for name, c in cells.items()}
    # a finished source whose checkpoint is gone (results restored on another machine: checkpoints are not
    # archived) is trained again for the adaptation runs still to do; training is deterministic, so its results
    # stay what they were
    for c in cells.values():
        src = c.source_cell
        if status[c.name] != "done" and src and status[src.name] == "done" and \
                not (out / src.name / "best.pt").is_file():
            (out / src.name / RESULTS_FILE).unlink(missing_ok=True)
            status[src.name] = "partial"
    pending = [c for c in cells.values() if status[c.name] != "done"]
    skipped = [n for n, s in status.items() if s == "done"]
    if progress:
        print(f"matrix: {len(cells)} runs, {len(skipped)} up to date, {len(pending)} to run (jobs={jobs})")
    threads = cfg.train.threads or max(1, usable_cores() // jobs)
    workers = WorkerPool() if executor == "local" and jobs > 1 else None
    runner, cancel = (workers.run if workers else None), lambda: None
    if executor == "slurm":
        from . import cluster

        slurm = slurm or cluster.SlurmOptions()
        threads = cfg.train.threads or slurm.cpus_per_task
        runner, cancel = functools.partial(cluster.run_as_job, options=slurm), cluster.CANCEL.set
        cluster.CANCEL.clear()
    show = progress and jobs == 1 and executor == "local" and cfg.train.progress
    if pending:
        prepare_data(cfg, pending, progress)
    done = set(skipped)
    failed: dict[str, str] = {}
    ran: list[str] = []

    def blocked(c: Cell) -> str | None:
        return f"its source {c.source} failed" if c.source in failed else None

    if jobs == 1 and executor == "local":
        for c in pending:
            if blocked(c):
                failed[c.name] = blocked(c)
                continue
            path = _prepare_cell(out, c, threads, show)
            if progress:
                print(f"matrix: running {c.name}")
            try:
                run_cell(path)
                ran.append(c.name)
                done.add(c.name)
            except Exception as e:  # one failed run must not stop the others; KeyboardInterrupt still does
                traceback.print_exc()
                failed[c.name] = f"{type(e).__name__}: {e}"
    else:
        waiting = list(pending)
        running = {}
        with workers or contextlib.nullcontext(), ThreadPoolExecutor(max_workers=jobs) as pool:
            while waiting or running:
                for c in list(waiting):
                    if blocked(c):
                        failed[c.name] = blocked(c)
                        waiting.remove(c)
                    elif len(running) < jobs and (c.source is None or c.source in done):
                        path = _prepare_cell(out, c, threads, progress and cfg.train.progress)
                        if progress:
                            print(f"matrix: started {c.name}")
                        running[pool.submit(runner, path, threads)] = c
                        waiting.remove(c)
                if not running:
                    break  # what is left waits on a source that will never finish
                try:
                    finished = set()
                    while not finished:  # timed: an untimed wait can miss a Ctrl-C that the kernel delivered to
                        # another thread (the main thread would sleep on its lock until a run ends)
                        finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    cancel()  # cluster jobs are cancelled, not waited for (local runs get the Ctrl-C themselves)
                    raise
                for f in finished:
                    c = running.pop(f)
                    rc = f.result()
                    if rc == 0 and cell_status(out, c)[0] == "done":
                        done.add(c.name)
                        ran.append(c.name)
                        if progress:
                            print(f"matrix: finished {c.name}")
                    else:
                        failed[c.name] = f"exit status {rc}, see {out / c.name / LOG_FILE}"
                        if progress:
                            print(f"matrix: FAILED {c.name} ({failed[c.name]})")
        for c in waiting:
            failed.setdefault(c.name, "not started")
    report = write_report(out)
    # the lock's cleanup at start can miss the temporary file of a run killed a moment before (still exiting):
    # every run of this matrix has ended now, so sweep again
    remove_stale_tmp(out)
    summary = {"runs": len(cells), "ran": ran, "skipped": skipped, "failed": failed, "report": str(report),
               "wall_seconds": round(time.time() - t0, 1)}
    write_json(out / "last_run.json", summary)
    if failed:
        lines = "\n".join(f"  {n}: {why}" for n, why in failed.items())
        raise MatrixError(f"{len(failed)} of {len(cells)} runs failed (the report covers the rest):\n{lines}")
    return summary


def write_plan(out_dir: str | Path, cfg: MatrixConfig, cells: dict[str, Cell], reuse_code: bool = False) -> None:
    """matrix.yaml (the resolved config) and cells.json (every run and its table roles: what report.py reads)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "matrix.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    write_json(out / PLAN_FILE, {"config": to_dict(cfg), "code_version": {k: code_version(k) for k in ("scratch", "adapt")},
                                 "reuse_code": reuse_code,
                                 "cells": [{"name": c.name, "kind": c.kind, "language": c.language, "hours": c.hours,
                                            "seed": c.seed, "source": c.source, "label": c.label, "hash": c.hash,
                                            "config_hash": c.config_hash, "roles": c.roles}
                                           for c in cells.values()]})


def matrix_status(cfg: MatrixConfig, reuse_code: bool = False) -> list[tuple[str, str, str]]:
    """(run name, status, why) for every run of the matrix, without running anything."""
    out = Path(cfg.out_dir)
    return [(name, *cell_status(out, c, reuse_code)) for name, c in plan_cells(cfg).items()]
