"""Data-parallel training under `torchrun`: the few helpers train.fit needs, and nothing when not launched so.

`torchrun --nproc_per_node N -m xlingual.cli recipe ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK in
their environment. fit() then joins them into one process group (NCCL on CUDA, gloo on CPU), wraps the model in
DistributedDataParallel and gives each rank its share of every epoch's batches (shard_batches). Without those
variables (or with WORLD_SIZE=1) every helper here is a no-op and training is the plain single-process loop.

Sharding rule: an epoch's length-bucketed batches (the same list on every rank: it depends only on the seed and
the epoch) are dealt round-robin, batch i to rank i % N, so step s of the epoch is batches s*N .. s*N+N-1 on
ranks 0..N-1: every utterance is used exactly once per epoch, and every rank takes ceil(batches / N) steps. In
the last step a rank may have no batch left; it then runs a zero-weight step (it must join the gradient
all-reduce) on a copy of the epoch's first batch. Each rank's loss is weighted by its share of the step's
utterances, so the averaged gradient is that of the mean loss over all utterances of the step: the update a
single process would make on the union of the step's batches.
"""

from __future__ import annotations

import atexit
import datetime
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

# Ranks other than 0 wait for rank 0 to evaluate the dev set at every epoch end; NCCL's default 10-minute
# timeout would kill a run with a large dev set, so collectives may wait this long.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("XLINGUAL_DIST_TIMEOUT_MIN", "120")))


def launched() -> bool:
    """True when started by torchrun (or SLURM-style env) with more than one process."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True when a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched() else 1


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns the device this rank trains on.

    Idempotent (a second fit() in the same process reuses the group); the group is destroyed at exit. On CUDA
    each rank takes GPU LOCAL_RANK. Not launched: returns `device` unchanged.
    """
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT, **kwargs)
        atexit.register(cleanup)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cpu_threads() -> int:
    """Torch threads per process on CPU: the cores this process may use, shared among the processes of this
    node."""
    from .cores import usable_cores

    return max(1, usable_cores() // local_world_size())


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """Rank `rank`'s batches of an epoch: batches[rank], batches[rank + world], ... and [] where none is left.

    Every rank gets ceil(len(batches) / world) entries (the same number of steps); the non-empty ones of all
    ranks together are `batches`, each exactly once.
    """
    steps = -(-len(batches) // world)
    return [batches[i] if i < len(batches) else [] for i in range(rank, steps * world, world)]


def step_sizes(batches: list[list[int]], world: int) -> list[int]:
    """Utterances per global step (the sum over ranks), for weighting each rank's share of the loss."""
    return [sum(len(b) for b in batches[s:s + world]) for s in range(0, len(batches), world)]


def wrap(model: torch.nn.Module, device: torch.device, previous=None):
    """`model` in DistributedDataParallel (`previous` again while the same parameters train).

    DDP all-reduces the gradients of the parameters that required grad when it was built, so a freezing plan
    that changes requires_grad between epochs (chain-thaw, gradual unfreezing) needs a new wrapper then; building
    one also broadcasts rank 0's weights, which the ranks already share.
    """
    trainable = tuple(p.requires_grad for p in model.parameters())
    if previous is not None and getattr(previous, "xlingual_trainable", None) == trainable:
        return previous
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp.xlingual_trainable = trainable
    return ddp


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, device: torch.device):
    """Rank 0's `obj` on every rank; the others block here until rank 0 sends it."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def barrier(device: torch.device) -> None:
    if is_distributed():
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def wait_for_file(path: Path, what: str, poll_s: float = 1.0,
                  timeout_s: float = float(os.environ.get("XLINGUAL_DIST_WAIT_S", "86400"))) -> None:
    """Block until `path` exists: ranks that let local rank 0 write something (features) wait for it here.

    torchrun stops every rank when one fails, so a failed writer does not leave the others waiting for ever;
    the timeout is the backstop.
    """
    t0 = time.monotonic()
    while not Path(path).is_file():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"rank {rank()}: waited {timeout_s:.0f} s for local rank 0 to write {what} ({path})")
        time.sleep(poll_s)
