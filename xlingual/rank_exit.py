"""How a rank launched by torchrun ends: without interpreter finalization (not hashed into run keys: it computes
nothing).

gloo's worker threads outlive destroy_process_group (torch 2.14 does not join them), and one may drop its last
reference to a finished collective's tensors just after the main thread has begun finalizing the interpreter. That
decref needs the GIL, which a finalizing interpreter refuses, and the thread aborts the process ("terminate called
without an active exception", SIGABRT): torchrun then reports a run that had finished and written everything as
failed. Seen on about 1 in 15 two-rank runs of tests/ddp_worker.py on a loaded 2-core machine; the core dump's
backtrace is ProcessGroupGloo::runLoop -> ~AsyncWork -> TensorImpl::decref_pyobject -> take_gil -> pthread_exit.
So a rank runs the atexit handlers (distributed.cleanup destroys the group there), flushes its output and leaves
with os._exit, never reaching finalization.
"""

from __future__ import annotations

import atexit
import os
import sys


def leave(code: int) -> None:
    """End this process now with exit status `code` if it has joined a torch.distributed process group; otherwise
    return (single-process runs and in-process callers such as the tests exit as usual)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(code)
