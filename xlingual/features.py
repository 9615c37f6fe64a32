"""Log-mel features, global CMVN statistics, SpecAugment, and an on-disk feature cache.

Features are computed once per manifest and stored in shards: float32 matrices of about SHARD_MB each (the frames
of consecutive utterances concatenated), plus an index naming each utterance's shard and rows. Later epochs,
decoding and other experiments that use the same utterances read them instead of decoding audio again.

Memory stays flat in the corpus size: writing holds one shard at a time, and reading memory-maps at most
MAX_OPEN_SHARDS shards (the pages of a mapped file count in the process's resident memory, so the least recently
used map is closed when another is needed). Caches written before sharding (one feats.npy + index.json) are
read as one shard.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torchaudio

from . import distributed
from .audio import SAMPLE_RATE, load_audio
from .config import FeatureConfig
from .corpus import Utterance
from .fileio import atomic_path, read_json, write_json
from .progress import progress as progress_display

_CACHE_VERSION = 1  # bump when the feature computation changes, so stale caches are not reused
# (not when only the layout does: a folder says which layout it holds, and the reader takes both)
SHARD_MB = 64.0  # features per shard file: ~35 min of audio at 80 mels
MAX_OPEN_SHARDS = 2  # shards memory-mapped at a time per FeatureStore: bounds what reading adds to resident memory
INDEX_FILE = "shards.json"  # {"n_mels", "shards": [file names], "utts": {id: [shard, start row, frames]}}; last
LEGACY_INDEX, LEGACY_DATA = "index.json", "feats.npy"  # the single-file layout: {"n_mels", "utts": {id: [start, n]}}


def cache_dir(corpus) -> Path:
    """Where a corpus's features are cached: beside its manifests (corpus.dir/.features), keyed by content, so
    every experiment on the corpus shares them. `corpus` is a config.CorpusConfig or the corpus folder."""
    return Path(getattr(corpus, "dir", corpus)) / ".features"


def cache_for_manifest(manifest: str | Path) -> Path:
    """The feature cache of the corpus a manifest belongs to (<corpus>/<language>/<split>.jsonl)."""
    return cache_dir(Path(manifest).resolve().parent.parent)


class LogMel:
    """waveform (N,) float32 at 16 kHz -> log-mel features (T, n_mels), T = 1 + N // hop."""

    def __init__(self, cfg: FeatureConfig):
        self.n_mels = cfg.n_mels
        win = int(round(cfg.win_ms * SAMPLE_RATE / 1000))
        self.hop = int(round(cfg.hop_ms * SAMPLE_RATE / 1000))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=1 << (win - 1).bit_length(), win_length=win, hop_length=self.hop,
            n_mels=cfg.n_mels, power=2.0)

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            spec = self.mel(torch.from_numpy(np.asarray(wav, dtype=np.float32)))
        return torch.log(spec + 1e-6).T.contiguous()


def cache_key(utts: list[Utterance], cfg: FeatureConfig) -> str:
    """Hash of everything the features depend on: the feature config and each utterance's audio span."""
    # SpecAugment settings are excluded: they act on batches, not on the cached features
    h = hashlib.sha1(json.dumps([_CACHE_VERSION, cfg.n_mels, cfg.win_ms, cfg.hop_ms]).encode())
    for u in utts:
        h.update(f"{u.id}\t{u.audio}\t{u.offset}\t{u.duration}\n".encode())
    return h.hexdigest()[:16]


class FeatureStore:
    """Read-only view of cached features: `store[id]` -> (T, n_mels) float32 tensor (a copy, not a view)."""

    def __init__(self, folder: Path, max_open: int = MAX_OPEN_SHARDS):
        self.folder = Path(folder)
        if (self.folder / INDEX_FILE).is_file():
            index = read_json(self.folder / INDEX_FILE)
            self.shards: list[str] = index["shards"]
            self.offsets: dict[str, tuple[int, int, int]] = {k: tuple(v) for k, v in index["utts"].items()}
        else:
            index = read_json(self.folder / LEGACY_INDEX)
            self.shards = [LEGACY_DATA]
            self.offsets = {k: (0, *v) for k, v in index["utts"].items()}
        self.n_mels: int = index["n_mels"]
        self.max_open = max(1, max_open)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()  # shard -> memory map, least recently used first

    def _shard(self, i: int) -> np.ndarray:
        data = self._maps.pop(i, None)
        if data is None:
            while len(self._maps) >= self.max_open:
                self._maps.popitem(last=False)  # its mapping is released with the last reference to it
            data = np.load(self.folder / self.shards[i], mmap_mode="r")
        self._maps[i] = data
        return data

    def __getitem__(self, utt_id: str) -> torch.Tensor:
        shard, start, n = self.offsets[utt_id]
        return torch.from_numpy(np.array(self._shard(shard)[start:start + n]))

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def num_frames(self, utt_id: str) -> int:
        return self.offsets[utt_id][2]

    @property
    def nbytes(self) -> int:
        """Size of the cached features (float32), in bytes."""
        return sum(n for _, _, n in self.offsets.values()) * self.n_mels * 4


def compute_features(utts: list[Utterance], cache_dir: str | Path, cfg: FeatureConfig,
                     progress: bool = True, desc: str = "features", shard_mb: float = SHARD_MB) -> FeatureStore:
    """Features for `utts`, computed once and cached under cache_dir/<key>/ (reused when the key matches).

    Written shard by shard (`shard_mb` MB each), so memory does not grow with the number of utterances. Under
    torchrun, local rank 0 computes and the node's other ranks wait for its index.

    Raises:
        AudioError naming the utterance when its audio cannot be used.
    """
    folder = Path(cache_dir) / cache_key(utts, cfg)
    if (folder / INDEX_FILE).is_file() or (folder / LEGACY_INDEX).is_file():
        return FeatureStore(folder)
    if distributed.local_rank() != 0:
        distributed.wait_for_file(folder / INDEX_FILE, f"the features of {len(utts)} utterances")
        return FeatureStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extract = LogMel(cfg)
    # One thread: a single utterance's STFT is too small to split well, and with the cores busy (parallel matrix
    # cells) intra-op threads wait on each other: 2.4x faster (up to 19x) with one busy process per core, 1.5x
    # slower on an idle machine (results/bench/optimizations.md), where extraction is seconds against training.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shards, index = _extract_all(utts, extract, folder, int(shard_mb * 2 ** 20), progress, desc)
    finally:
        torch.set_num_threads(threads)
    # the index last: its presence marks a complete cache entry
    write_json(folder / INDEX_FILE, {"n_mels": cfg.n_mels, "shards": shards, "utts": index})
    return FeatureStore(folder)


def _extract_all(utts: list[Utterance], extract: LogMel, folder: Path, shard_bytes: int, progress: bool,
                 desc: str) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """Extract and write shard by shard; only the current shard's features are held in memory."""
    shards: list[str] = []
    chunks: list[np.ndarray] = []
    index: dict[str, tuple[int, int, int]] = {}
    start = 0

    def flush() -> None:
        nonlocal chunks, start
        name = f"feats-{len(shards):05d}.npy"
        _write_npy(folder / name, chunks, extract.n_mels)
        shards.append(name)
        chunks, start = [], 0

    for u in progress_display(utts, desc=desc, unit="utt", enabled=progress):
        try:
            wav = load_audio(u.audio, offset=u.offset, duration=u.duration if u.offset else None)
        except ValueError as e:
            raise type(e)(f"utterance {u.id!r}: {e}") from None
        feats = extract(wav).numpy()
        chunks.append(feats)
        index[u.id] = (len(shards), start, feats.shape[0])
        start += feats.shape[0]
        if start * extract.n_mels * 4 >= shard_bytes:
            flush()
    if chunks or not shards:
        flush()
    return shards, index


def _write_npy(path: Path, chunks: list[np.ndarray], n_mels: int) -> None:
    """One .npy of the chunks stacked along time, written piece by piece (no concatenated copy in memory)."""
    rows = sum(c.shape[0] for c in chunks)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": (rows, n_mels)})
        for c in chunks:
            f.write(np.ascontiguousarray(c, dtype=np.float32).data)


def cmvn_stats(store: FeatureStore, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean and standard deviation per mel bin over all frames of `ids`: ((n_mels,), (n_mels,))."""
    total = torch.zeros(store.n_mels, dtype=torch.float64)
    sq = torch.zeros(store.n_mels, dtype=torch.float64)
    n = 0
    for i in ids:
        x = store[i].double()
        total += x.sum(0)
        sq += (x * x).sum(0)
        n += x.shape[0]
    mean = total / max(n, 1)
    var = (sq / max(n, 1) - mean * mean).clamp_min(1e-8)
    return mean.float(), var.sqrt().float()


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: FeatureConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) frequency and time masks, per utterance, filled with the utterance mean.

    feats (B, T, F), lengths (B,) -> (B, T, F). Masks are drawn from `generator`, so a resumed run repeats them.
    Features are still un-normalized here, so the fill value is the utterance's own mean, not zero.
    """
    out = feats.clone()
    b, _, f = feats.shape
    for i in range(b):
        t = int(lengths[i])
        fill = out[i, :t].mean()
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, f - w), (1,), generator=generator))
            out[i, :t, f0:f0 + w] = fill
        max_w = min(cfg.time_width, int(0.2 * t))
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, t - w), (1,), generator=generator))
            out[i, t0:t0 + w] = fill
    return out
