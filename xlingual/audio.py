"""Audio I/O: the only place audio is decoded, downmixed and resampled.

Decoding goes through soundfile (libsndfile ships in its wheel: WAV, FLAC, OGG, MP3), never through
torchaudio.load, which needs torchcodec and FFmpeg.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # every waveform inside the toolkit is 16 kHz mono float32


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and what to do."""


def _describe(source) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray)) else str(source)


def resample(wav: np.ndarray, orig_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 waveform (polyphase, via scipy)."""
    if orig_sr == sr:
        return wav
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(sr))
    return resample_poly(wav, sr // g, orig_sr // g).astype(np.float32)


def load_audio(source: str | os.PathLike | bytes, sr: int = SAMPLE_RATE, offset: float = 0.0,
               duration: float | None = None) -> np.ndarray:
    """Read audio as float32 mono at `sr`.

    Args:
        source: a file path or the encoded bytes of a file.
        offset: seconds to skip at the start (Kaldi `segments`).
        duration: seconds to read after `offset`; None reads to the end.
    Returns:
        (num_samples,) float32 in [-1, 1]. Multi-channel audio is averaged to mono, other rates resampled.
    Raises:
        AudioError: missing, unreadable, empty or non-finite audio, or a segment past the end of the file.
    """
    name = _describe(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {name} (check the path in the manifest/wav.scp)")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with sf.SoundFile(handle) as f:
            orig_sr, total = f.samplerate, f.frames
            start = int(round(offset * orig_sr))
            if start > total or (start == total and total > 0):
                raise AudioError(f"{name}: segment starts at {offset:.2f}s, past the end of the audio "
                                 f"({total / orig_sr:.2f}s); fix the segments file")
            f.seek(start)
            n = -1 if duration is None else int(round(duration * orig_sr))
            if duration is not None and start + n > total + orig_sr * 0.05:  # allow 50 ms rounding slack
                raise AudioError(f"{name}: segment {offset:.2f}-{offset + duration:.2f}s runs past the end "
                                 f"of the audio ({total / orig_sr:.2f}s); fix the segments file")
            wav = f.read(frames=n, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile's errors are terse; say which file and what to do
        raise AudioError(f"cannot decode audio {name}: {e} (is it a WAV/FLAC/OGG/MP3 file, and complete?)") from None
    if wav.shape[0] == 0:
        raise AudioError(f"audio {name} is empty (0 samples); remove the utterance or re-export the file")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"audio {name} contains NaN or infinite samples; re-export the file")
    return resample(np.ascontiguousarray(wav), orig_sr, sr)


def audio_info(source: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, frames, channels) of an audio file without decoding it."""
    try:
        info = sf.info(str(source))
    except Exception as e:
        raise AudioError(f"cannot read audio header of {source}: {e}") from None
    return info.samplerate, info.frames, info.channels


def save_audio(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically (temporary name, then rename): a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    sf.write(str(tmp), np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
