"""The pretrain x adapt grid: every source pre-trained once, every target adapted from each, every run cached.

A matrix is a set of *runs* ("cells"), each a folder under `out_dir` with its own configuration hash:

    scratch/<lang>-<budget>/seed<s>/                  a model trained from scratch: a source (large budget), a
                                                      target's baseline (small budget), the data-size table's
                                                      small source — the same run when the same config
    adapt/<src>-<budget>_to_<tgt>-<budget>/<label>/seed<s>/   a source adapted to a target; label "main" for the
                                                      matrix's method, a variant name, "k<k>" for the layer sweep

Each holds cell.json (what it runs, written first), the training outputs (best.pt, last.pt, train_log.jsonl,
done.json), decode_test/, log.txt (parallel runs) and results.json (written last, with the hash). A run whose
results.json carries the current hash is skipped; a changed configuration re-runs only the runs it reaches (an
adaptation run depends on its source's training hash, not on the source's decoding); a killed run resumes from
its last.pt. Runs with identical configurations are one run that plays several roles (e.g. a "full" variant
equal to the main method), so nothing is trained twice.

`--jobs N` runs independent runs in parallel, each as `python -m xlingual.matrix --cell <cell.json>` with
max(1, cores // N) torch threads and its own log.txt; adaptation runs start as soon as their source is done.
`--executor slurm` runs that same command as one cluster job per run (cluster.py, through submitit), with up to
N jobs queued or running at once; caching and resuming are the same, since the job runs the same command.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .asr import budget, feature_cache, load_language, run_key
from .config import (AdaptConfig, CorpusConfig, DecodeConfig, FeatureConfig, MatrixConfig, ModelConfig, TrainConfig,
                     UnitConfig, from_dict, merge, to_dict)
from .fileio import locked, read_json, remove_stale_tmp, write_json, write_text
from .transfer import RUNTIME_TRAIN_KEYS, check_adapt_config

CELL_FILE = "cell.json"  # what a run does; written before it starts
RESULTS_FILE = "results.json"  # its test scores; written last, so its presence (with the hash) means finished
PLAN_FILE = "cells.json"  # every run of the matrix and the table roles it plays; the report reads it
LOG_FILE = "log.txt"  # a parallel run's stdout and stderr
PARENT_ENV = "XLINGUAL_MATRIX_PID"  # set for a run's subprocess: the matrix process it must not outlive


class MatrixError(RuntimeError):
    """Runs that failed; the message lists them with their logs."""


@dataclass
class Cell:
    name: str  # folder under out_dir, e.g. "scratch/bn-30min/seed0"
    kind: str  # "scratch" or "adapt"
    language: str  # the language it is trained (adapted) on
    hours: float | None  # its training budget
    seed: int  # train.seed of the run
    spec: dict  # everything the trained model depends on (hashed into train_hash)
    decode: dict  # the test decoding (hashed, with train_hash, into hash)
    source: str | None = None  # the name of the run it adapts from
    label: str = "main"  # adapt runs: main, a variant name, k<k>, size_adaptation
    roles: list[dict] = field(default_factory=list)  # the table entries it fills (report.py)

    @property
    def train_hash(self) -> str:
        return run_key(self.spec)

    @property
    def hash(self) -> str:
        return run_key(self.train_hash, self.decode)


def hours_tag(hours: float | None) -> str:
    """A budget in folder names and labels: 'all', '36s', '10min', '1.5h'."""
    if hours is None:
        return "all"
    if hours < 1 / 60:
        return f"{hours * 3600:.4g}s"
    if hours < 1:
        return f"{hours * 60:.4g}min"
    return f"{hours:g}h"


def _train_dict(train: TrainConfig, seed: int) -> dict:
    d = to_dict(train)
    d["seed"] = seed
    for k in RUNTIME_TRAIN_KEYS:  # how a run is executed is pinned per run (cell.json), not part of its identity
        d.pop(k)
    return d


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
    common = {"corpus": to_dict(cfg.corpus), "features": to_dict(cfg.features), "units": to_dict(cfg.units)}
    decode = to_dict(cfg.decode)
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

    def scratch(lang: str, hours: float | None, seed: int, role: dict) -> Cell:
        train = cfg.train if hours == cfg.source_hours else small_train
        spec = {"kind": "scratch", "language": lang, "hours": hours, **common, "model": to_dict(cfg.model),
                "train": _train_dict(train, seed)}
        return add(Cell(f"scratch/{lang}-{hours_tag(hours)}/seed{seed}", "scratch", lang, hours, seed, spec,
                        decode), role)

    def adapted(src: Cell, tgt: str, label: str, method: AdaptConfig, seed: int, role: dict) -> Cell:
        a = to_dict(method)
        a["train"] = _train_dict(method.train, seed)
        if a["transfer_layers"] == n_layers:
            a["transfer_layers"] = None  # all layers: the same run as the default
        spec = {"kind": "adapt", "language": tgt, "hours": cfg.target_hours, **common, "source": src.train_hash,
                "adapt": a}
        name = f"adapt/{src.language}-{hours_tag(src.hours)}_to_{tgt}-{hours_tag(cfg.target_hours)}/{label}/seed{seed}"
        return add(Cell(name, "adapt", tgt, cfg.target_hours, seed, spec, decode, src.name, label), role)

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
                scratch(t, cfg.target_hours, seed, {"table": "baseline", "target": t, "budget": "small"})
                scratch(t, cfg.source_hours, seed, {"table": "baseline", "target": t, "budget": "large"})
    # scratch runs first: every adaptation run comes after its source
    return dict(sorted(cells.items(), key=lambda kv: kv[1].kind != "scratch"))


# ----------------------------------------------------------------------------------------------------------------
# One run


def cell_status(out_dir: Path, cell: Cell) -> str:
    """"done" (results with the current hash), "stale" (results of another config), "partial" or "new"."""
    folder = out_dir / cell.name
    res = folder / RESULTS_FILE
    if res.is_file():
        return "done" if read_json(res).get("hash") == cell.hash else "stale"
    return "partial" if (folder / CELL_FILE).is_file() else "new"


def _prepare_cell(out_dir: Path, cell: Cell, cfg: MatrixConfig, threads: int, progress: bool) -> Path:
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
    corpus = dict(to_dict(cfg.corpus))
    corpus["kind"] = "manifests"  # prepared by the parent process before any run starts
    write_json(path, {"name": cell.name, "kind": cell.kind, "language": cell.language, "hours": cell.hours,
                      "seed": cell.seed, "label": cell.label, "source": cell.source,
                      "source_dir": str(out_dir / cell.source) if cell.source else None,
                      "hash": cell.hash, "train_hash": cell.train_hash, "spec": cell.spec, "decode": cell.decode,
                      "runtime": {**runtime, "corpus": corpus}})
    return path


@locked(lambda args: Path(args["cell_json"]).parent)  # the run's folder: one process at a time
def run_cell(cell_json: str | Path) -> dict:
    """Train (or resume), decode the test set and score one run described by its cell.json; writes results.json."""
    import torch

    from .asr import decode_and_score, load_model, train_from_scratch
    from .features import compute_features
    from .transfer import adapt

    t0 = time.time()
    cell_json = Path(cell_json)
    c = read_json(cell_json)
    folder = cell_json.parent
    rt = c["runtime"]
    torch.set_num_threads(rt["threads"])
    spec = c["spec"]
    corpus = from_dict(CorpusConfig, rt["corpus"], "runtime.corpus")
    features = from_dict(FeatureConfig, spec["features"], "features")
    units = from_dict(UnitConfig, spec["units"], "units")
    decode = from_dict(DecodeConfig, c["decode"], "decode")
    data = load_language(corpus, c["language"], rt["progress"])
    source = None
    if c["kind"] == "scratch":
        train = from_dict(TrainConfig, {**spec["train"], "threads": rt["threads"], "progress": rt["progress"]})
        best = train_from_scratch(c["language"], data, folder, corpus, features, units,
                                  from_dict(ModelConfig, spec["model"], "model"), train, c["hours"])
    else:
        a = dict(spec["adapt"])
        a["train"] = {**a["train"], "threads": rt["threads"], "progress": rt["progress"]}
        source_ckpt = Path(c["source_dir"]) / "best.pt"
        best = adapt(source_ckpt, c["language"], data, folder, from_dict(AdaptConfig, a, "adapt"), corpus, units,
                     features, c["hours"])
        src = read_json(Path(c["source_dir"]) / CELL_FILE)
        source = {"name": c["source"], "language": src["language"], "hours": src["hours"]}
    model, tok, _ = load_model(best)
    store = compute_features(data["test"], feature_cache(corpus), features, progress=rt["progress"])
    summary = decode_and_score(model, tok, store, data["test"], folder / "decode_test", decode)
    history = read_json(folder / "done.json")["history"]
    results = {"hash": c["hash"], "train_hash": c["train_hash"], "name": c["name"], "kind": c["kind"],
               "label": c["label"], "language": c["language"], "hours": c["hours"], "seed": c["seed"],
               "source": source, "test": {"wer": summary["wer"], "cer": summary["cer"], "n_utts": summary["n_utts"]},
               "best_dev_wer": min(h["dev_wer"] for h in history), "epochs": len(history),
               "steps": history[-1]["step"] if history else 0, "wall_seconds": round(time.time() - t0, 1)}
    write_json(folder / RESULTS_FILE, results)
    return results


# ----------------------------------------------------------------------------------------------------------------
# The grid


def prepare_data(cfg: MatrixConfig, cells: list[Cell], progress: bool = True) -> None:
    """Manifests (the synthetic corpus is generated here) and cached features of every run, before any run starts.

    Parallel runs then only read: no two processes generate the same audio or compute the same features.
    """
    from .features import compute_features

    budgets: dict[str, set] = {}
    for c in cells:
        budgets.setdefault(c.language, set()).add(c.hours)
    cache = feature_cache(cfg.corpus)
    for lang in sorted(budgets):
        data = load_language(cfg.corpus, lang, progress)
        sets = [budget(data["train"], h, cfg.corpus.seed) for h in sorted(budgets[lang], key=str)]
        for utts in sets + [data["dev"], data["test"]]:
            compute_features(utts, cache, cfg.features, progress=progress, desc=f"{lang} features")


def _run_subprocess(cell_json: Path, threads: int) -> int:
    # tqdm bars refresh at most every 30 s in a log file; the per-epoch summary lines are what matter there
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_MININTERVAL": "30",
           PARENT_ENV: str(os.getpid())}
    with open(cell_json.parent / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {sys.executable} -m xlingual.matrix --cell "
                  f"{cell_json}\n")
        log.flush()
        return subprocess.run([sys.executable, "-m", "xlingual.matrix", "--cell", str(cell_json)], stdout=log,
                              stderr=subprocess.STDOUT, env=env).returncode


@locked("cfg.out_dir")  # a second matrix run on the same folder is refused (each run also locks its own folder)
def run_matrix(cfg: MatrixConfig, jobs: int = 1, progress: bool = True, executor: str = "local",
               slurm=None) -> dict:
    """Run every unfinished run of the matrix, then write the report; returns {"ran", "skipped", "failed", ...}.

    Args:
        jobs: runs at a time; 1 runs them in this process (tracebacks on the console), N > 1 as N subprocesses
            with max(1, cores // N) torch threads each (train.threads, when set, wins) and a log.txt per run.
        executor: "local" (the above) or "slurm": each run a submitit job with slurm.cpus_per_task threads,
            up to `jobs` at a time.
        slurm: cluster.SlurmOptions for executor="slurm" (default: SlurmOptions()).
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
    write_plan(out, cfg, cells)
    status = {name: cell_status(out, c) for name, c in cells.items()}
    pending = [c for c in cells.values() if status[c.name] != "done"]
    skipped = [n for n, s in status.items() if s == "done"]
    if progress:
        print(f"matrix: {len(cells)} runs, {len(skipped)} up to date, {len(pending)} to run (jobs={jobs})")
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // jobs)
    runner, cancel = _run_subprocess, lambda: None
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
            path = _prepare_cell(out, c, cfg, threads, show)
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
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while waiting or running:
                for c in list(waiting):
                    if blocked(c):
                        failed[c.name] = blocked(c)
                        waiting.remove(c)
                    elif len(running) < jobs and (c.source is None or c.source in done):
                        path = _prepare_cell(out, c, cfg, threads, progress and cfg.train.progress)
                        if progress:
                            print(f"matrix: started {c.name}")
                        running[pool.submit(runner, path, threads)] = c
                        waiting.remove(c)
                if not running:
                    break  # what is left waits on a source that will never finish
                try:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    cancel()  # cluster jobs are cancelled, not waited for (local runs get the Ctrl-C themselves)
                    raise
                for f in finished:
                    c = running.pop(f)
                    rc = f.result()
                    if rc == 0 and cell_status(out, c) == "done":
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


def write_plan(out_dir: str | Path, cfg: MatrixConfig, cells: dict[str, Cell]) -> None:
    """matrix.yaml (the resolved config) and cells.json (every run and its table roles: what report.py reads)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "matrix.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    write_json(out / PLAN_FILE, {"config": to_dict(cfg), "cells": [
        {"name": c.name, "kind": c.kind, "language": c.language, "hours": c.hours, "seed": c.seed,
         "source": c.source, "label": c.label, "hash": c.hash, "roles": c.roles} for c in cells.values()]})


def matrix_status(cfg: MatrixConfig) -> list[tuple[str, str]]:
    """(run name, status) for every run of the matrix, without running anything."""
    out = Path(cfg.out_dir)
    return [(name, cell_status(out, c)) for name, c in plan_cells(cfg).items()]


def _die_with_parent() -> None:
    """A run started by run_matrix ends when the matrix process does (Linux), so a killed matrix leaves no
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xlingual.matrix", description="run one matrix cell (internal)")
    p.add_argument("--cell", required=True, help="the run's cell.json, written by run_matrix")
    args = p.parse_args(argv)
    _die_with_parent()
    print(f"run {args.cell}", flush=True)
    try:
        results = run_cell(args.cell)
    except Exception:
        traceback.print_exc()
        return 1
    print(f"finished in {results['wall_seconds']} s: test WER {results['test']['wer']:.2f}, "
          f"CER {results['test']['cer']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
