"""xlingual: cross-lingual transfer for low-resource speech recognition."""

# OpenMP waiting is left to libgomp's default (threads spin a while before sleeping). Measured on the 2-core machine
# (results/bench/optimizations.md, results/bench/omp_passive/): OMP_WAIT_POLICY=PASSIVE makes the 2-thread
# training step 1.4x faster when one other busy process runs per core (8-14x at load ~6), but costs 20-25% of
# training and 13-60% of decoding speed on an idle machine. Runs here usually own their cores (the matrix gives each
# parallel run its share of threads), so the default stays; on a machine shared with other jobs, export
# OMP_WAIT_POLICY=PASSIVE before starting xlingual (README, "Performance").

__version__ = "0.2.0"
