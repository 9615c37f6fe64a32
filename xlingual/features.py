"""Log-mel features, global CMVN statistics, SpecAugment, and an on-disk feature cache.

Features are computed once per manifest and stored as one float32 matrix (all frames of all utterances
concatenated) plus an index, memory-mapped on read: later epochs, decoding and other experiments that use the
same utterances read them instead of decoding audio again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from .audio import SAMPLE_RATE, load_audio
from .config import FeatureConfig
from .corpus import Utterance
from .fileio import atomic_path, read_json, write_json

_CACHE_VERSION = 1  # bump when the feature computation changes, so stale caches are not reused


class LogMel:
    """waveform (N,) float32 at 16 kHz -> log-mel features (T, n_mels), T = 1 + N // hop."""

    def __init__(self, cfg: FeatureConfig):
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
    """Read-only view of cached features: `store[id]` -> (T, n_mels) float32 tensor."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = read_json(self.folder / "index.json")
        self.n_mels: int = index["n_mels"]
        self.offsets: dict[str, tuple[int, int]] = {k: tuple(v) for k, v in index["utts"].items()}
        self.data = np.load(self.folder / "feats.npy", mmap_mode="r")

    def __getitem__(self, utt_id: str) -> torch.Tensor:
        start, n = self.offsets[utt_id]
        return torch.from_numpy(np.array(self.data[start:start + n]))

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.offsets

    def num_frames(self, utt_id: str) -> int:
        return self.offsets[utt_id][1]


def compute_features(utts: list[Utterance], cache_dir: str | Path, cfg: FeatureConfig,
                     progress: bool = True, desc: str = "features") -> FeatureStore:
    """Features for `utts`, computed once and cached under cache_dir/<key>/ (reused when the key matches).

    Raises:
        AudioError naming the utterance when its audio cannot be used.
    """
    folder = Path(cache_dir) / cache_key(utts, cfg)
    if (folder / "index.json").is_file():
        return FeatureStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extract = LogMel(cfg)
    # One thread: a single utterance's STFT is too small to split, and with the cores busy (parallel matrix
    # cells) intra-op threads spin-wait: measured 2 ms vs 99 ms per 2.5 s utterance on this 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chunks, index = _extract_all(utts, extract, progress, desc)
    finally:
        torch.set_num_threads(threads)
    data = np.concatenate(chunks) if chunks else np.zeros((0, cfg.n_mels), np.float32)
    with atomic_path(folder / "feats.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, data)
    # index.json last: its presence marks a complete cache entry
    write_json(folder / "index.json", {"n_mels": cfg.n_mels, "utts": index})
    return FeatureStore(folder)


def _extract_all(utts: list[Utterance], extract: LogMel, progress: bool, desc: str):
    # Frame counts are known from durations only approximately, so write chunks then concatenate once.
    chunks, index, start = [], {}, 0
    for u in tqdm(utts, desc=desc, disable=not progress, leave=False):
        try:
            wav = load_audio(u.audio, offset=u.offset, duration=u.duration if u.offset else None)
        except ValueError as e:
            raise type(e)(f"utterance {u.id!r}: {e}") from None
        feats = extract(wav).numpy()
        chunks.append(feats)
        index[u.id] = (start, feats.shape[0])
        start += feats.shape[0]
    return chunks, index


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
