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


@pytest.fixture(scope="session")
def slurm_or_why():
    """A real single-node SLURM (tests/slurm_cluster.py) for the whole session, its clients pointed at it through
    SLURM_CONF; or, where it cannot start, the reason why (a string). Stopped at the session's end."""
    import shutil
    import tempfile

    from slurm_cluster import SlurmUnavailable, start

    # not under pytest's tmp folder: munge's socket path must stay short (108 bytes)
    root = Path(tempfile.mkdtemp(prefix="xl-slurm-"))
    try:
        cluster = start(root)
    except SlurmUnavailable as e:
        yield f"no real SLURM here: {e}"
        shutil.rmtree(root, ignore_errors=True)
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm(slurm_or_why):
    """The real SLURM of slurm_or_why; the test is skipped, with the reason, where it cannot start."""
    if isinstance(slurm_or_why, str):
        pytest.skip(slurm_or_why)
    return slurm_or_why
