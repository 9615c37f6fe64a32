"""load_audio: formats, bytes, resampling, downmix, segments, and every kind of bad file -> AudioError."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from xlingual.audio import SAMPLE_RATE, AudioError, audio_info, load_audio, save_audio

HAS_MP3 = "MP3" in sf.available_formats()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", pytest.param(".mp3", marks=pytest.mark.skipif(
    not HAS_MP3, reason="this libsndfile cannot write MP3"))])
def test_formats_decode_to_16k_mono(tmp_path, make_wav, suffix):
    path = make_wav(tmp_path / f"a{suffix}", seconds=0.5)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 8000) <= 1
    assert np.abs(wav).max() > 0.1  # the sine survived (lossy codecs included)


def test_bytes_equal_file(tmp_path, make_wav):
    path = make_wav(tmp_path / "a.flac")
    np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))
    assert audio_info(path.read_bytes()) == audio_info(path) == (16000, 8000, 1)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampled_length(tmp_path, make_wav, sr):
    wav = load_audio(make_wav(tmp_path / "a.wav", seconds=0.5, sr=sr))
    assert abs(len(wav) - SAMPLE_RATE // 2) <= 1


def test_stereo_is_averaged(tmp_path):
    left = np.full(1600, 0.5, dtype=np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), 0.25)


def test_offset_and_duration(tmp_path, make_wav):
    path = make_wav(tmp_path / "a.wav", seconds=1.0)
    full = load_audio(path)
    np.testing.assert_array_equal(load_audio(path, offset=0.25, duration=0.5), full[4000:12000])
    assert len(load_audio(path, offset=0.5)) == 8000


@pytest.mark.parametrize("offset, duration", [(1.5, None), (0.8, 0.5), (1.0, 0.1)])
def test_segment_past_end(tmp_path, make_wav, offset, duration):
    path = make_wav(tmp_path / "a.wav", seconds=1.0)
    with pytest.raises(AudioError, match="past the end") as e:
        load_audio(path, offset=offset, duration=duration)
    assert e.value.reason == "segment past end" and str(path) in str(e.value)


def _float_wav(path, value):
    x = np.zeros(1600, dtype=np.float32)
    x[100] = value
    sf.write(path, x, 16000, subtype="FLOAT")


def _truncated(path, make_wav, keep):
    good = make_wav(path.with_name("good_" + path.name), seconds=0.5)
    data = good.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:len(data) // 2])


BAD_FILES = [
    # (name, build(path, make_wav), reason)
    ("missing", lambda p, mk: None, "missing audio"),
    ("zero-bytes", lambda p, mk: p.write_bytes(b""), "empty audio"),
    ("garbage", lambda p, mk: p.write_bytes(np.random.default_rng(0).bytes(3000)), "unreadable audio"),
    ("text", lambda p, mk: p.write_text("this is not audio\n" * 50), "unreadable audio"),
    ("no-samples", lambda p, mk: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty audio"),
    ("truncated-data", lambda p, mk: _truncated(p, mk, 0), "truncated audio"),
    ("truncated-header", lambda p, mk: _truncated(p, mk, 30), "unreadable audio"),
    ("nan", lambda p, mk: _float_wav(p, np.nan), "non-finite audio"),
    ("inf", lambda p, mk: _float_wav(p, -np.inf), "non-finite audio"),
]


@pytest.mark.parametrize("name, build, reason", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_with_path(tmp_path, make_wav, name, build, reason):
    path = tmp_path / f"{name}.wav"
    build(path, make_wav)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(path) in str(e.value)
    assert e.value.reason == reason


@pytest.mark.parametrize("suffix", [".flac", ".ogg", pytest.param(".mp3", marks=pytest.mark.skipif(
    not HAS_MP3, reason="no MP3"))])
def test_truncated_compressed_files(tmp_path, make_wav, suffix):
    data = make_wav(tmp_path / f"a{suffix}", seconds=1.0).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(AudioError) as e:
        load_audio(cut)
    assert str(cut) in str(e.value)


def test_truncated_bytes(make_wav, tmp_path):
    data = make_wav(tmp_path / "a.wav").read_bytes()
    with pytest.raises(AudioError, match="truncated"):
        load_audio(data[:len(data) // 2])


@pytest.mark.parametrize("size", [0, 0x7FFFF000, 0xFFFFFFFF])
def test_streamed_wav_header_reads_to_the_end(make_wav, tmp_path, size):
    """A WAV written to a pipe (sox, ffmpeg, Kaldi wav.scp commands) cannot fill in its length."""
    data = bytearray(make_wav(tmp_path / "a.wav").read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", size)
    data[4:8] = struct.pack("<I", size)
    assert len(load_audio(bytes(data))) == 8000


def test_save_audio_round_trip(tmp_path):
    x = (0.5 * np.sin(np.arange(4000) / 7)).astype(np.float32)
    save_audio(tmp_path / "sub" / "x.wav", x)
    np.testing.assert_allclose(load_audio(tmp_path / "sub" / "x.wav"), x, atol=1e-4)
    assert not list((tmp_path / "sub").glob(".*tmp*"))


@pytest.mark.parametrize("stage", ["write", "rename"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, stage):
    import errno
    import os
    from pathlib import Path

    from xlingual import fileio
    from xlingual.fileio import WriteError

    path = tmp_path / "a.wav"
    save_audio(path, np.zeros(1600, dtype=np.float32))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if stage == "write":
        monkeypatch.setattr(Path, "write_bytes", fail)
    else:
        monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(WriteError, match="a.wav.*disk is full"):
        save_audio(path, np.ones(1600, dtype=np.float32) * 0.1)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.wav"]
