"""xlingual: cross-lingual transfer for low-resource speech recognition."""

import os

# Idle OpenMP threads sleep instead of spin-waiting. On a machine whose cores are shared (parallel matrix cells,
# other jobs) spinning threads slowed 2-thread training 8-14x in bench/train_throughput.py; on an idle machine
# it costs nothing measurable. Set before torch is imported; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
