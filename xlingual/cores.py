"""What CPU a process really has, and how its OpenMP threads should wait, decided from the machine it runs on.

  - usable_cores: the cores this process may run on (its CPU affinity: taskset, a cluster's cgroup cpuset), not
    the machine's count; thread counts (the matrix's share per parallel run, a training run's default) start here.
  - openmp_wait: libgomp's threads spin for a while before sleeping (its default), which is fastest on cores they
    own but collapses when other processes want the same cores: measured on the 2-core machine
    (results/bench/optimizations.md), OMP_WAIT_POLICY=PASSIVE made the 2-thread training step 1.4x faster with one
    busy process per core (8-14x at load ~6) and 20-25% slower on the idle machine. So the CLI looks, before torch
    loads libgomp, at how busy the process's cores already are (the 1-minute load average: other processes, since
    this one has not started) and chooses PASSIVE only when others keep at least one of them busy. A policy the
    user set (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment) is never overridden.
"""

from __future__ import annotations

import os

BUSY_LOAD = 1.0  # others' load average from which threads wait passively: at least one core's worth of work


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


def openmp_wait(environ: dict | None = None, load: float | None = None) -> str | None:
    """The OpenMP wait policy to set before torch loads ("PASSIVE"), or None to keep libgomp's default (or the
    user's own setting). load: the others' 1-minute load average (default: the machine's, now)."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    return "PASSIVE" if load >= BUSY_LOAD else None


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
