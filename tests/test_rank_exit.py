"""rank_exit.leave: a rank in a process group ends through os._exit after the atexit handlers; others return."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from xlingual.rank_exit import leave

# one process, a gloo group of world size 1 (a HashStore: no network), an atexit handler that must still run
SCRIPT = textwrap.dedent("""
    import atexit, sys
    import torch.distributed as dist
    from xlingual.rank_exit import leave
    if {join}:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    atexit.register(lambda: print("atexit ran"))  # unflushed too
    print("buffered line", end="")  # no newline, no flush: leave() must flush it
    leave({code})
    print(" returned")
    sys.exit(5)
""")


@pytest.mark.parametrize("join, code, rc, out", [
    (True, 0, 0, "buffered lineatexit ran\n"),  # in a group: atexit handlers, flush, exit with the code
    (True, 2, 2, "buffered lineatexit ran\n"),
    (False, 0, 5, "buffered line returned\natexit ran\n"),  # no group: leave() returns, a normal exit follows
])
def test_leave_exits_a_rank_after_its_atexit_handlers(join, code, rc, out):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as on a pipe
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(join=join, code=code)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert (proc.returncode, proc.stdout) == (rc, out), proc.stderr[-2000:]


def test_leave_returns_in_a_process_without_a_group():
    leave(3)  # the test process has no process group: nothing happens
