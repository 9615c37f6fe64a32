"""Cores a process may use, and the OpenMP wait policy chosen from how busy they are."""

import os
import subprocess
import sys

import pytest

from xlingual import cores


@pytest.mark.parametrize("env, load, expected", [
    ({}, 0.0, None),                                   # idle: libgomp's spinning default is fastest
    ({}, 0.9, None),                                   # less than one other core's worth of work
    ({}, 1.0, "PASSIVE"),                              # one busy process: spinning threads would fight it
    ({}, 6.0, "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, 6.0, None),        # the user's own choice is kept
    ({"GOMP_SPINCOUNT": "10000"}, 6.0, None),
])
def test_openmp_wait_policy_follows_the_load(env, load, expected):
    assert cores.openmp_wait(env, load) == expected


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
    code = ("import os, sys; from xlingual import cores; os.getloadavg = lambda: (7.0, 7.0, 7.0); "
            "print(cores.configure_openmp(), os.environ.get('OMP_WAIT_POLICY')); import torch; "
            "os.environ.pop('OMP_WAIT_POLICY'); print(cores.configure_openmp(), os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split("\n")[:2] == ["PASSIVE PASSIVE", "None None"]
