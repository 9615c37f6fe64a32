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

from .fileio import atomic_path

SAMPLE_RATE = 16000  # every waveform inside the toolkit is 16 kHz mono float32


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and what to do.

    `reason` is a short category ("missing audio", "truncated audio", ...) that data preparation counts skips by.
    """

    def __init__(self, message: str, reason: str = "unreadable audio"):
        super().__init__(message)
        self.reason = reason


# A WAV written to a pipe cannot go back to fill in its length: sox writes 0x7ffff000, ffmpeg 0xffffffff and
# RF64 0xffffffff. Data sizes at or above this mean "read to the end", not "the file is truncated".
_STREAMED_SIZE = 0x7F000000
_HEADER_BYTES = 1 << 16  # WAV headers (with LIST/bext chunks) fit in this; the data chunk must start within it


def _wav_data_chunk(head: bytes) -> tuple[int, int] | None:
    """(offset of the samples, declared byte size) of a RIFF/WAVE data chunk found in `head`, else None."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos + 4:pos + 8], "little")
        if head[pos:pos + 4] == b"data":
            return pos + 8, size
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return None


def _check_wav_length(source, name: str):
    """Catch WAV files cut short (an interrupted copy or download); returns `source`, repaired if streamed.

    libsndfile silently reads a truncated WAV as a shorter one, which would pair a transcript with half its
    audio, so the declared data size is compared with the bytes present. Encoded bytes whose header says 0 data
    bytes come from a writer that streamed to a pipe; their size is filled in so libsndfile reads the samples.
    """
    if isinstance(source, (bytes, bytearray)):
        head, size = bytes(source[:_HEADER_BYTES]), len(source)
    else:
        with open(source, "rb") as f:
            head = f.read(_HEADER_BYTES)
        size = os.path.getsize(source)
    chunk = _wav_data_chunk(head)
    if chunk is None:
        return source
    start, declared = chunk
    if declared == 0 and size > start and isinstance(source, (bytes, bytearray)):
        patched = bytearray(source)
        patched[start - 4:start] = (size - start).to_bytes(4, "little")
        return bytes(patched)
    if declared < _STREAMED_SIZE and start + declared > size:
        raise AudioError(f"audio {name} is truncated: its header declares {declared} bytes of samples but only "
                         f"{max(size - start, 0)} are present; re-download or re-export the file",
                         reason="truncated audio")
    return source


def _describe(source) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray)) else str(source)


def _undecodable(name: str, size: int | None, error: Exception) -> AudioError:
    """The error for a file (or bytes) that exists but that libsndfile cannot decode.

    libsndfile's own words mislead here: for a damaged .mp3 it says "File does not exist or is not a regular
    file (possibly a pipe?)", although the file is there, so they are not repeated unless they add something.
    """
    detail = str(error).split(": ", 1)[-1].strip().rstrip(".")
    if "does not exist" in detail or "possibly a pipe" in detail:
        detail = "format not recognised"
    what = name if size is None else f"{name} ({size} bytes)"
    return AudioError(f"audio {what} cannot be decoded ({detail[:1].lower() + detail[1:]}): it is damaged, or not "
                      f"WAV, FLAC, OGG or MP3; re-download it, or convert it to WAV or FLAC")


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
        AudioError: missing, unreadable, truncated, empty or non-finite audio, or a segment past the end of the
        file; its `reason` names the category.
    """
    name = _describe(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {name} (check the path in the manifest/wav.scp)",
                         reason="missing audio")
    size = len(source) if isinstance(source, (bytes, bytearray)) else os.path.getsize(source)
    if size == 0:
        raise AudioError(f"audio {name} is empty (0 bytes); remove the utterance or re-export the file",
                         reason="empty audio")
    try:
        source = _check_wav_length(source, name)
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with sf.SoundFile(handle) as f:
            orig_sr, total = f.samplerate, f.frames
            start = int(round(offset * orig_sr))
            if start > total or (start == total and total > 0):
                raise AudioError(f"{name}: segment starts at {offset:.2f}s, past the end of the audio "
                                 f"({total / orig_sr:.2f}s); fix the segments file", reason="segment past end")
            f.seek(start)
            n = -1 if duration is None else int(round(duration * orig_sr))
            if duration is not None and start + n > total + orig_sr * 0.05:  # allow 50 ms rounding slack
                raise AudioError(f"{name}: segment {offset:.2f}-{offset + duration:.2f}s runs past the end "
                                 f"of the audio ({total / orig_sr:.2f}s); fix the segments file",
                                 reason="segment past end")
            wav = f.read(frames=n, dtype="float32", always_2d=True)
        # The header's frame count against what decoded: a cut-off MP3 decodes "successfully" but short.
        expected = total - start if duration is None else min(n, total - start)
        if total > 0 and expected - wav.shape[0] > max(0.1 * orig_sr, 0.02 * expected):
            raise AudioError(f"audio {name} is truncated: {wav.shape[0] / orig_sr:.2f}s decoded of the "
                             f"{expected / orig_sr:.2f}s its header declares; re-download or re-export the file",
                             reason="truncated audio")
    except AudioError:
        raise
    except Exception as e:  # libsndfile's errors are terse; say which file and what to do
        raise _undecodable(name, None if isinstance(source, (bytes, bytearray)) else size, e) from None
    if wav.shape[0] == 0:
        raise AudioError(f"audio {name} is empty (0 samples); remove the utterance or re-export the file",
                         reason="empty audio")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"audio {name} contains NaN or infinite samples; re-export the file",
                         reason="non-finite audio")
    return resample(np.ascontiguousarray(wav), orig_sr, sr)


def audio_info(source: str | os.PathLike | bytes) -> tuple[int, int, int]:
    """(sample_rate, frames, channels) of an audio file, or of encoded bytes, without decoding it."""
    name = _describe(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {name} (check the path in the manifest/wav.scp)",
                         reason="missing audio")
    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))
    except Exception as e:
        raise _undecodable(name, None if isinstance(source, (bytes, bytearray)) else os.path.getsize(source),
                           e) from None
    return info.samplerate, info.frames, info.channels


def save_audio(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically (temporary name, then rename): a kill never leaves half a file.

    Raises:
        fileio.WriteError (an OSError) naming `path` when the write fails; no temporary file is left.
    """
    # encode in memory, then one write: 1.35x faster than sf.write to the path (results/bench/optimizations.md)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
