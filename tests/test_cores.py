"""Cores a process may use, and the OpenMP wait policy chosen from how busy they are."""

import os
import subprocess
import sys
import time

import pytest

from xlingual import cores


@pytest.mark.parametrize("env, busy, expected", [
    ({}, 0.0, None),                                   # idle: libgomp's spinning default is fastest
    ({}, 0.5, None),                                   # half a core's worth of other work
    ({}, 0.75, "PASSIVE"),                             # one busy process (reads ~1.0 over a short sample)
    ({}, 6.0, "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, 6.0, None),        # the user's own choice is kept
    ({"GOMP_SPINCOUNT": "10000"}, 6.0, None),
])
def test_openmp_wait_policy_follows_how_busy_the_cores_are(env, busy, expected):
    assert cores.openmp_wait(env, busy) == expected


STAT = """cpu  {u} 0 {s} {i} 0 0 0 0 0 0
cpu0 {u0} 0 10 {i0} 5 0 0 0 0 0
cpu1 {u1} 0 10 {i1} 0 0 0 0 0 0
intr 12345
"""


@pytest.mark.parametrize("cpus, expected", [(None, {0: (115, 105), 1: (120, 110)}), ({1}, {1: (120, 110)})])
def test_cpu_times_read_the_per_cpu_lines(tmp_path, cpus, expected):
    (tmp_path / "stat").write_text(STAT.format(u=3, s=20, i=210, u0=0, i0=100, u1=0, i1=110))
    assert cores._cpu_times(cpus, str(tmp_path / "stat")) == expected


def test_busy_cores_sees_a_process_spinning_now():
    """A process started a moment ago (invisible to the 1-minute load average) reads as about one busy core of the
    cores it shares with this one."""
    spin = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(spin.pid, {cpu})
        time.sleep(0.3)
        assert cores.busy_cores(0.3, cpus={cpu}) >= cores.BUSY_CORES
    finally:
        spin.kill()
        spin.wait()


def test_usable_cores_follow_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert cores.usable_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set())
    assert cores.usable_cores() == 1


@pytest.mark.parametrize("cpuinfo, expected", [
    ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t: avx2\n", "AMD EPYC 9B14"),
    ("processor\t: 0\nflags\t: neon\n", None),  # no model line (some ARM kernels): the platform's string
])
def test_cpu_model_reads_cpuinfo(tmp_path, monkeypatch, cpuinfo, expected):
    import builtins
    import platform

    (tmp_path / "cpuinfo").write_text(cpuinfo)
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(tmp_path / "cpuinfo" if f == "/proc/cpuinfo"
                                                                         else f, *a, **k))
    monkeypatch.setattr(platform, "processor", lambda: "aarch64")
    assert cores.cpu_model() == (expected or "aarch64")


def test_the_cli_sets_the_policy_before_torch_loads():
    """In a fresh process (torch not loaded), a busy machine gets PASSIVE in the environment its runs inherit;
    once torch is loaded, nothing changes (libgomp has read the variable)."""
    code = ("import os, sys; from xlingual import cores; cores.busy_cores = lambda: 2.0; "
            "print(cores.configure_openmp(), os.environ.get('OMP_WAIT_POLICY')); import torch; "
            "os.environ.pop('OMP_WAIT_POLICY'); print(cores.configure_openmp(), os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split("\n")[:2] == ["PASSIVE PASSIVE", "None None"]
