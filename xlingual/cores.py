"""What CPU a process really has, and how its OpenMP threads should wait, decided from the machine it runs on.

  - usable_cores: the cores this process may run on (its CPU affinity: taskset, a cluster's cgroup cpuset), not
    the machine's count; thread counts (the matrix's share per parallel run, a training run's default) start here.
  - openmp_wait: libgomp's threads spin for a while before sleeping (its default), which is fastest on cores they
    own but collapses when other processes want the same cores: measured on the 2-core machine
    (results/bench/optimizations.md), OMP_WAIT_POLICY=PASSIVE made the 2-thread training step 1.4x faster with one
    busy process per core (8-14x at load ~6) and 20-25% slower on the idle machine. So the CLI looks, before torch
    loads libgomp, at how busy the process's cores are right now (busy_cores: /proc/stat over 0.1 s, before this
    process does any work) and chooses PASSIVE only when others keep most of one of them busy. Not the load
    average: it follows a change only over a minute, so a job that had just ended made a bench on the idle
    machine wait passively (results/bench/peer_espnet.md, load average 2.1 at its start), and one that had just
    started went unseen. A policy the user set (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment) is never
    overridden.
"""

from __future__ import annotations

import os
import time

BUSY_CORES = 0.75  # cores other processes keep busy from which threads wait passively: most of one core (a
#   process spinning on one core reads ~1.0; the margin absorbs the sample's tick granularity)


def usable_cores() -> int:
    """The cores this process may run on (CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere): wall times quoted from
    one machine are only comparable with the same CPU (the same demo took 4.4 min on one 2-core VM, 11.5 on
    another)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def busy_cores(seconds: float = 0.1, cpus: set[int] | None = None) -> float | None:
    """How many of the cores `cpus` (default: the ones this process may use) other processes keep busy right now:
    their non-idle share of /proc/stat's CPU time over `seconds` while this process sleeps. None where /proc/stat
    cannot be read (not Linux)."""
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            cpus = None
    try:
        before = _cpu_times(cpus)
        time.sleep(seconds)
        after = _cpu_times(cpus)
    except (OSError, ValueError):
        return None
    total = sum(after[c][0] - before[c][0] for c in after if c in before)
    idle = sum(after[c][1] - before[c][1] for c in after if c in before)
    if total <= 0:
        return None
    return (1 - idle / total) * len(after)


def _cpu_times(cpus: set[int] | None, path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """{cpu: (total ticks, idle + iowait ticks)} of the per-CPU lines of /proc/stat (all CPUs when cpus is None)."""
    out = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            cpu = int(name[3:])
            if cpus is None or cpu in cpus:
                ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                out[cpu] = (sum(ticks), ticks[3] + ticks[4])
    if not out:
        raise ValueError(f"{path}: no per-CPU lines for CPUs {sorted(cpus or [])}")
    return out


def openmp_wait(environ: dict | None = None, busy: float | None = None) -> str | None:
    """The OpenMP wait policy to set before torch loads ("PASSIVE"), or None to keep libgomp's default (or the
    user's own setting). busy: cores kept busy by other processes (default: busy_cores() now; where that cannot be
    read, the 1-minute load average)."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return None
    if busy is None:
        busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    return "PASSIVE" if busy >= BUSY_CORES else None


def configure_openmp() -> str | None:
    """Set OMP_WAIT_POLICY for this process and its children where openmp_wait says so; the policy set, or None.
    Only before torch is imported (libgomp reads the variable once, when it loads): later it changes nothing."""
    import sys

    if "torch" in sys.modules:
        return None
    policy = openmp_wait()
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy
    return policy
