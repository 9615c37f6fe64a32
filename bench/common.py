"""What every benchmark shares: the machine/versions/command header, timing with medians, result files, corpora.

Benchmarks run on a shared, noisy machine, so the rules are: repeat, report the median (and min/max so the
spread is visible), interleave the things being compared (A B A B ..., never A A A B B B) and report their
*ratio* measured in the same run, and record the load average and the CPU share the process actually got.

Results go to results/bench/<name>.json (every figure, plus the header) and results/bench/<name>.md (a short
human-readable table with the same header).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from xlingual.cores import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results" / "bench"
# caches and scratch (git-ignored): generated corpora, feature caches, temporary training folders
WORK_DIR = Path(os.environ.get("XLINGUAL_BENCH_WORK", REPO / "exp" / "bench"))
SHARED_CORPUS = REPO / "data" / "synthetic"  # the recipes' corpus: read, never (re)generated from here
BENCH_LANGUAGES = ("bn", "as", "th", "tr")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")  # the default four; pooled corpora take an equal share of each


# ---------------------------------------------------------------------------------------------------------------
# The header: which machine, which versions, which command


def _cpu_flags() -> list[str]:
    """The instruction-set flags that decide which kernels run (AVX-512, bf16, AMX)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [f for f in wanted if f in flags]


def _git() -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "--short", "HEAD"),
            "dirty_files": len(run("status", "--porcelain").splitlines())}


def machine() -> dict:
    """CPU, cores, memory, and the load when asked (other work on the machine skews every figure)."""
    import torch

    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        mem_gb = float("nan")
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "flags": _cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gb": round(mem_gb, 1), "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        # OpenMP settings change multi-thread speed a lot when other processes compete for the cores
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }


def versions() -> dict:
    import numpy
    import torch
    import torchaudio

    return {"python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "numpy": numpy.__version__, "xlingual_git": _git()}


def command(argv: list[str] | None, module: str) -> str:
    """The command line that reproduces this run."""
    argv = sys.argv[1:] if argv is None else argv
    return f"python -m {module} {shlex.join(argv)}".strip()


def header(module: str, argv: list[str] | None = None) -> dict:
    return {"command": command(argv, module), "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions()}


# ---------------------------------------------------------------------------------------------------------------
# Timing


class Clock:
    """Wall and process-CPU time of a block: `with Clock() as c: ...; c.wall, c.cpu_share`.

    cpu_share = process CPU seconds / (wall seconds x threads): near 1 when the process had its cores to itself,
    well below 1 when other work on the machine took them (then the figure is a lower bound of the speed).
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False

    @property
    def cpu_share(self) -> float:
        import torch

        threads = self.threads or torch.get_num_threads()
        return self.cpu / max(self.wall * threads, 1e-9)


def stats(values: list[float]) -> dict:
    """{"median", "min", "max", "n"} of a list of measurements (rounded for the reports)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def interleaved(fns: dict[str, Callable[[], float | None]], repeats: int, warmup: int = 1,
                cpu_share: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Call each fn in turn, round-robin, `warmup` + `repeats` times; returns {name: [seconds, ...]}.

    A fn may return its own measured seconds as a number (e.g. an inner loop without its set-up); otherwise
    (None or any other value) its wall time is used. Round-robin spreads the machine's load changes over all of
    them, so their ratio stays meaningful.
    `cpu_share`, if given, receives each call's Clock.cpu_share (how much of its cores the process got).
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            with Clock() as c:
                inner = fn()
            if r >= warmup:
                own = isinstance(inner, (int, float)) and not isinstance(inner, bool)
                out[name].append(float(inner) if own else c.wall)
                if cpu_share is not None:
                    cpu_share.setdefault(name, []).append(c.cpu_share)
    return out


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Pairwise num[i] / den[i] of measurements taken side by side (same round of interleaved())."""
    return [a / b for a, b in zip(num, den) if b]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def set_threads(n: int | None) -> int:
    """torch intra-op threads (None/0: all cores); returns the number in effect."""
    import torch

    torch.set_num_threads(n or os.cpu_count() or 1)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------------------------
# Result files


def fmt(x, digits: int = 3) -> str:
    """A number for a Markdown table: 3 significant digits by default, '-' for missing."""
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:
            return "nan"
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"
    return str(x)


def md_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 6) if obj == obj else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def results_dir(out: str | Path | None, quick: bool) -> Path:
    """Where a run's files go: --out if given; results/bench for real runs; smoke runs (--quick) go to
    exp/bench/quick, so that their meaningless figures never overwrite the committed ones."""
    if out is not None:
        return Path(out)
    return WORK_DIR / "quick" if quick else RESULTS_DIR


def write_results(name: str, head: dict, results: dict, markdown: str, out_dir: str | Path | None = None,
                  title: str | None = None) -> tuple[Path, Path]:
    """Write <out_dir>/<name>.json ({"header", "results"}) and <name>.md (title, header lines, `markdown`)."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    head = {**head, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "peak_rss_mb": round(peak_rss_mb(), 1)}
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(_jsonable({"header": head, "results": results}), indent=2) + "\n", encoding="utf-8")
    m, v = head["machine"], head["versions"]
    text = (f"# {title or name}\n\n"
            f"`{head['command']}`  \n"
            f"{head['started']} .. {head['finished']}; {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}); "
            f"load average {m['loadavg'][0]} at start, {head['loadavg_end'][0]} at end"
            f"{''.join(f'; {k}={v}' for k, v in m.get('env', {}).items())}  \n"
            f"python {v['python']}, torch {v['torch']}, torchaudio {v['torchaudio']}, numpy {v['numpy']}; "
            f"xlingual {v['xlingual_git']['commit']} ({v['xlingual_git']['dirty_files']} uncommitted files)\n\n"
            f"{markdown.strip()}\n")
    md.write_text(text, encoding="utf-8")
    print(f"wrote {md} and {js.name}")
    return js, md


# ---------------------------------------------------------------------------------------------------------------
# Corpora


def train_utterances(hours: float, languages: tuple[str, ...] = BENCH_LANGUAGES, corpus: str | Path | None = None,
                     seed: int = 0, progress: bool = False, split: str = "train"):
    """About `hours` of utterances of `split`, an equal share from each language (nested subsets: the same seed
    gives the 1 h set inside the 4 h set).

    Reads <corpus>/<lang>/<split>.jsonl. Without `corpus`: the recipes' data/synthetic when it holds enough of
    every language (it is only read: asking prepare_synthetic for another size there would regenerate it under
    other runs' feet), else a synthetic corpus generated once under exp/bench/synthetic.
    """
    from xlingual.corpus import read_manifest, subset_hours, total_hours

    share = hours / len(languages)
    if corpus is None:
        corpus = SHARED_CORPUS if _has_hours(SHARED_CORPUS, languages, share, split) else WORK_DIR / "synthetic"
    corpus = Path(corpus)
    if not _has_hours(corpus, languages, share, split):
        from data_prep.synthetic import prepare_synthetic

        if corpus.resolve() == SHARED_CORPUS.resolve():
            raise ValueError(f"{corpus} holds less than {share:.3g} h of {split} audio for one of {languages}; "
                             f"pass another --corpus (benchmarks never regenerate the recipes' corpus)")
        # round the generated size up, so that nearby budgets reuse the same corpus
        gen = 0.05
        while gen < share * 1.02:
            gen *= 2
        prepare_synthetic(corpus, languages=languages, hours={split: gen}, progress=progress)
    utts = []
    for lang in languages:
        pool = read_manifest(corpus / lang / f"{split}.jsonl")
        if total_hours(pool) < share * 0.98:
            raise ValueError(f"{corpus / lang / f'{split}.jsonl'} holds {total_hours(pool):.3f} h, less than the "
                             f"{share:.3f} h asked for")
        utts += subset_hours(pool, share, seed)
    return utts


def _has_hours(corpus: Path, languages, share: float, split: str = "train") -> bool:
    from xlingual.corpus import read_manifest, total_hours

    for lang in languages:
        manifest = corpus / lang / f"{split}.jsonl"
        if not manifest.is_file():
            return False
        try:
            if total_hours(read_manifest(manifest)) < share * 0.98:
                return False
        except ValueError:
            return False
    return True
