"""Dropout with cheap masks on the CPU.

torch's CPU dropout draws its keep-mask with `bernoulli_`, one double-precision uniform per element: on the small
conformers of the demo and the benchmark (one thread per run) that was about a fifth of a training step's time
(profile of the 64-d model on 16-second batches; bench/optimizations.py, fast_dropout). Here the mask comes from
numpy's PCG64 as 16-bit integers compared with a threshold, several times cheaper per element; the drop rate is p
rounded to 1/65536, and kept values are scaled by the inverse of the rate actually used, so the expectation is
unchanged. Masks are drawn from a seed taken from torch's global generator, so `torch.manual_seed` makes them
reproducible exactly as it does torch's own dropout (the training loop reseeds every step).

On other devices (CUDA) a host-drawn mask would have to be copied over every call: there torch's own dropout runs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # mask resolution: 16-bit draws


def keep_mask(shape: tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """A (shape) tensor of 0 (dropped, rate p to 1/65536) and 1/(1 - rate) (kept), seeded from torch's RNG."""
    threshold = round(p * _LEVELS)
    seed = int(torch.randint(0, 2**62, ()))  # consumes torch's generator: manual_seed reproduces the mask
    n = math.prod(shape)
    # PCG64's raw 64-bit words read as four 16-bit draws each: the very numbers (and order) that
    # Generator.integers(0, 2**16, dtype=uint16) returns (on little-endian CPUs: x86, ARM), at half its cost
    bits = np.random.PCG64(seed).random_raw((n + 3) // 4).view(np.uint16)[:n].reshape(shape)
    keep, scale = bits >= threshold, _LEVELS / (_LEVELS - threshold)
    if dtype == torch.float32:  # 0 or the scale in one numpy pass: torch's bool -> float costs 8x as much
        return torch.from_numpy(np.multiply(keep, np.float32(scale), dtype=np.float32))
    return torch.from_numpy(keep).to(dtype).mul_(scale)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training) with a cheap mask for CPU tensors; any shape."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * keep_mask(tuple(x.shape), p, x.dtype)


class FastDropout(nn.Module):
    """nn.Dropout with cheap CPU masks (see the module docstring). No parameters or buffers: checkpoints of a
    model with nn.Dropout load unchanged."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every nn.Dropout inside `module` (in place) by a FastDropout of the same p; returns `module`."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    return module
