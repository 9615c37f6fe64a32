"""xlingual: cross-lingual transfer for low-resource speech recognition."""

# OpenMP waiting: cores.py decides it per process, before torch loads (libgomp's spinning default on cores nobody
# else uses; OMP_WAIT_POLICY=PASSIVE when other processes already keep a core busy; never over the user's setting).

__version__ = "0.2.0"
