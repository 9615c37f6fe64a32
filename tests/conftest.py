"""Shared fixture builders: tiny synthetic audio files in the layouts the tests need."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from helpers import signal


@pytest.fixture
def make_wav():
    """make_wav(path, seconds=0.5, sr=16000, channels=1, subtype=None, format=None) -> path: write a test signal.

    The format follows the suffix (.wav, .flac, .ogg, .mp3) unless given; subtype e.g. "FLOAT" for NaN tests.
    """
    def make(path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, *, subtype: str | None = None,
             format: str | None = None, freq: float = 220.0, seed: int = 0) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), signal(seconds, sr, channels, freq, seed), sr, subtype=subtype, format=format)
        return path
    return make


@pytest.fixture(scope="session")
def learning_corpus(tmp_path_factory) -> Path:
    """A small-vocabulary eSpeak corpus (number words in tr, bn, th; disjoint train/test voices), built once."""
    from helpers import build_learning_corpus

    return build_learning_corpus(tmp_path_factory.getbasetemp() / "learning_corpus")
