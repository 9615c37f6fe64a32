"""xlingual: cross-lingual transfer for low-resource speech recognition."""

import os
import sys

# Idle OpenMP threads sleep instead of spin-waiting (OMP_WAIT_POLICY=PASSIVE). Measured on the 2-core machine
# (results/bench/optimizations.md), the tiny model's 2-thread training step: with the cores busy (parallel runs,
# other jobs) spinning threads wait for descheduled ones, and PASSIVE is 1.4x faster with one busy process per
# core (8-14x at load ~6); on an idle machine PASSIVE costs ~20%. A bounded loss against a collapse: PASSIVE is
# the default. For the idle-machine speed set GOMP_SPINCOUNT=300000 (libgomp's own default) or OMP_WAIT_POLICY
# yourself: any setting of either wins. It must be in place before torch loads libgomp, so it is set here.
OMP_SET_TOO_LATE = False  # True: xlingual set PASSIVE after torch was imported, so libgomp kept its own defaults
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    OMP_SET_TOO_LATE = "torch" in sys.modules

__version__ = "0.1.0"
