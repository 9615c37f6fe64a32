"""xlingual: cross-lingual transfer for low-resource speech recognition."""

__version__ = "0.1.0"
