"""Per-utterance feature caches of SSL runs: the waveform as rows (every SSL run's input), and a frozen encoder's
outputs (a run that trains the head alone), kept beside the corpus's filterbanks.

A frozen encoder's outputs are keyed by the encoder file's content and the layers kept. The cache is per utterance, so
every later run adapting from the same encoder reuses whatever an earlier one computed: other methods and seeds, nested
budgets, pools that contain a target already adapted to, and decoding.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .corpus import Utterance
# _extract_all: the filterbank cache's shard writer, reused as is (its extractor protocol: n_mels + __call__)
from .features import INDEX_FILE, SHARD_MB, FeatureStore, _extract_all, cache_dir
from .fileio import read_json, write_json
from .runspec import digest
from .ssl_encoder import EncoderFile
from .ssl_model import WAVE_FRAME, SSLModel, model_from_file, waveform_rows

CACHE_VERSION = 1  # bump when what a cached encoder output means changes (stale caches are then not reused)


def _span(u: Utterance) -> str:
    return f"{u.audio}\t{u.offset}\t{u.duration}"


@contextlib.contextmanager
def _index_lock(folder: Path):
    """A blocking lock on a cache's index: parallel runs extract on their own and merge their entries one at a
    time (fileio.exclusive_lock refuses a second holder at once, which suits a run's folder, not a shared cache)."""
    try:
        import fcntl
    except ImportError:  # no flock: a single process at a time is assumed
        yield
        return
    fd = os.open(folder / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_index(folder: Path) -> dict:
    path = folder / INDEX_FILE
    return read_json(path) if path.is_file() else {"n_mels": None, "shards": [], "utts": {}, "spans": {}}


def cached_store(utts: list[Utterance], folder: Path, make_extractor: Callable[[], Callable], width: int,
                 progress: bool = False, desc: str = "features") -> FeatureStore:
    """The features of `utts` from the per-utterance cache in `folder`, extracting only the utterances it lacks.

    make_extractor() -> an object with `n_mels` (= width) and `(N,) waveform -> (T, width)` tensor; called only
    when something is missing (a frozen encoder is then loaded once). New utterances go to new shards in a
    folder of their own (features._extract_all); the index (features.INDEX_FILE, which FeatureStore reads, plus
    each utterance's audio span) is merged under a lock, so parallel runs can fill the same cache. An utterance
    whose audio span changed is extracted again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder)
    missing = list({u.id: u for u in utts if index["spans"].get(u.id) != _span(u)}.values())
    if missing:
        extract = make_extractor()
        part = f"part-{uuid.uuid4().hex[:12]}"
        shards, entries = _extract_all(missing, extract, folder / part, int(SHARD_MB * 2 ** 20), progress, desc)
        with _index_lock(folder):
            index = _read_index(folder)  # another run may have merged its own part meanwhile
            base = len(index["shards"])
            index["n_mels"] = width
            index["shards"] += [f"{part}/{s}" for s in shards]
            for u in missing:
                shard, start, n = entries[u.id]
                index["utts"][u.id] = [base + shard, start, n]
                index["spans"][u.id] = _span(u)
            write_json(folder / INDEX_FILE, index)  # last: an interrupted extraction leaves an unused part only
    return FeatureStore(folder)


class _WaveRows:
    """waveform (N,) -> (ceil(N / WAVE_FRAME), WAVE_FRAME) rows (features._extract_all's extractor protocol)."""

    n_mels = WAVE_FRAME

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(waveform_rows(np.asarray(wav, dtype=np.float32)))


class _EncoderOutputs:
    """waveform (N,) -> the frozen encoder's output (T', d_model), one utterance at a time, in eval mode."""

    def __init__(self, model: SSLModel, device: torch.device):
        self.model, self.device, self.n_mels = model.eval().to(device), device, model.dims.d_model

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(waveform_rows(np.asarray(wav, dtype=np.float32)))
        if int(self.model.output_lengths(torch.tensor(rows.shape[0]))) < 1:  # shorter than one encoder frame
            return torch.zeros(0, self.n_mels)
        with torch.no_grad():
            hidden, _ = self.model.encode(rows[None].to(self.device), torch.tensor([rows.shape[0]], device=self.device))
        return hidden[0].float().cpu()


def waveform_store(utts: list[Utterance], corpus, progress: bool = False, desc: str = "waveforms") -> FeatureStore:
    """The waveforms of `utts` as rows, cached once per corpus (corpus.dir/.features/waveform/) for every SSL run."""
    return cached_store(utts, cache_dir(corpus) / "waveform", _WaveRows, WAVE_FRAME, progress, desc)


def encoder_cache_folder(corpus, encoder_digest: str, layers: int, normalize: bool) -> Path:
    """Where a frozen encoder's outputs are cached: one folder per (encoder content, layers kept, input norm)."""
    return cache_dir(corpus) / f"ssl-{digest(CACHE_VERSION, encoder_digest, layers, normalize)}"


def encoder_store(utts: list[Utterance], corpus, enc: EncoderFile | Callable[[], EncoderFile], encoder_digest: str,
                  layers: int, normalize: bool, width: int, device: torch.device, progress: bool = False,
                  desc: str = "encoder outputs") -> FeatureStore:
    """A frozen encoder's outputs for `utts` (eval mode: no dropout, LayerDrop or masking), cached per utterance.

    enc: the encoder file, or a function that reads it (called only when some utterance is not cached yet).
    """
    def extractor():
        source = enc() if callable(enc) else enc
        with torch.random.fork_rng():  # its unused head must not move the caller's generator
            return _EncoderOutputs(model_from_file(source, layers, vocab_size=1), device)

    return cached_store(utts, encoder_cache_folder(corpus, encoder_digest, layers, normalize), extractor, width,
                        progress, desc)
