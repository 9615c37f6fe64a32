"""A folder of audio -> manifest (transcripts optional): audio-only manifests for language-ID ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.audiodir import prepare_audiodir
from xlingual.corpus import ManifestError, read_manifest


@pytest.fixture
def audio_dir(tmp_path, make_wav):
    d = tmp_path / "recordings"
    make_wav(d / "spk1" / "a.wav")
    (d / "spk1" / "a.txt").write_text("Sabaidee!\n", encoding="utf-8")
    make_wav(d / "spk1" / "b.flac", sr=8000)
    make_wav(d / "spk2" / "c.ogg", channels=2)
    make_wav(d / "flat.wav", sr=44100)
    (d / "notes.md").write_text("not audio")
    return d


def test_audio_only(audio_dir, tmp_path):
    out = prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    with pytest.raises(ManifestError, match="empty transcript"):
        read_manifest(out["test"])
    utts = read_manifest(out["test"], require_text=False)
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        ("flat", "unknown", ""), ("spk1/a", "spk1", "sabaidee"), ("spk1/b", "spk1", ""), ("spk2/c", "spk2", "")]
    assert utts[1].audio == str(audio_dir / "spk1" / "a.wav")  # 16 kHz mono WAV: in place
    assert utts[2].audio.startswith(str(tmp_path / "out" / "audio" / "test" / "spk1_b-"))  # '/' in the id
    notes = json.loads((tmp_path / "out" / "test.report.json").read_text())["notes"]
    assert notes == {"resampled 8000->16000 Hz": 1, "resampled 44100->16000 Hz": 1,
                     "downmixed 2 channels to mono": 1}


def test_require_text(audio_dir, tmp_path):
    out = prepare_audiodir(audio_dir, tmp_path / "out", "lo", "train", require_text=True)
    assert [u.id for u in read_manifest(out["train"])] == ["spk1/a"]
    assert json.loads((tmp_path / "out" / "train.report.json").read_text())["skipped"] == {"missing transcript": 3}
    with pytest.raises(ManifestError, match=r"flat.wav: utterance 'flat' has no transcript"):
        prepare_audiodir(audio_dir, tmp_path / "strict", "lo", "train", require_text=True, strict=True)


BAD = [
    # (case, build(dir, make_wav), reason, kept of the 4 good files)
    ("duplicate id", lambda d, mk: mk(d / "spk1" / "a.flac"), "duplicate id", 4),
    ("non-UTF-8 sidecar", lambda d, mk: (d / "spk1" / "b.txt").write_bytes(b"caf\xe9"), "non-UTF-8 transcript", 3),
    ("punctuation sidecar", lambda d, mk: (d / "spk1" / "b.txt").write_text("..."), "unnormalizable transcript", 3),
    ("zero bytes", lambda d, mk: (d / "zero.wav").write_bytes(b""), "empty audio", 4),
    ("garbage", lambda d, mk: (d / "junk.mp3").write_bytes(np.random.default_rng(0).bytes(4000)),
     "unreadable audio", 4),
    ("NaN", lambda d, mk: sf.write(d / "nan.wav", np.full(800, np.nan, dtype=np.float32), 16000, subtype="FLOAT"),
     "non-finite audio", 4),
]


@pytest.mark.parametrize("case, build, reason, kept", BAD, ids=[c[0] for c in BAD])
def test_bad_files(audio_dir, tmp_path, make_wav, case, build, reason, kept):
    build(audio_dir, make_wav)
    out = prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    report = json.loads((tmp_path / "out" / "test.report.json").read_text())
    assert report["skipped"] == {reason: 1}
    assert report["kept"] == len(read_manifest(out["test"], require_text=False)) == kept
    with pytest.raises(ValueError):  # ManifestError or AudioError
        prepare_audiodir(audio_dir, tmp_path / "strict", "lo", strict=True)


def test_idempotent_until_a_file_is_added(audio_dir, tmp_path, make_wav):
    manifest = prepare_audiodir(audio_dir, tmp_path / "out", "lo")["test"]
    stamp = manifest.stat().st_mtime_ns
    prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    assert manifest.stat().st_mtime_ns == stamp
    make_wav(audio_dir / "spk3" / "d.wav")
    prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    assert len(read_manifest(manifest, require_text=False)) == 5


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        prepare_audiodir(tmp_path / "nope", tmp_path / "out", "lo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        prepare_audiodir(tmp_path / "empty", tmp_path / "out", "lo")
