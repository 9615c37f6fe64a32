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


# Transcripts are optional here (ranking needs only audio): a transcript that cannot be used leaves the audio in,
# without text, and is counted and named in the report.
UNUSABLE_SIDECARS = [
    # (case, sidecar bytes, what is noted; the skip reason when a transcript is required)
    ("zero bytes", b"", "empty transcript", "empty transcript"),
    ("non-UTF-8", b"caf\xe9", "non-UTF-8 transcript", "non-UTF-8 transcript"),
    ("punctuation only", b"...", "unnormalizable transcript", "unnormalizable transcript"),
]


@pytest.mark.parametrize("case, data, note, reason", UNUSABLE_SIDECARS, ids=[c[0] for c in UNUSABLE_SIDECARS])
def test_unusable_transcript_keeps_the_audio(audio_dir, tmp_path, case, data, note, reason):
    (audio_dir / "spk1" / "b.txt").write_bytes(data)
    out = prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    utts = {u.id: u for u in read_manifest(out["test"], require_text=False)}
    assert set(utts) == {"flat", "spk1/a", "spk1/b", "spk2/c"} and utts["spk1/b"].text == ""
    report = json.loads((tmp_path / "out" / "test.report.json").read_text())
    assert report["skipped"] == {}
    assert report["notes"][f"{note} (audio kept without text)"] == 1
    [row] = report["noted"]
    assert row["id"] == "spk1/b" and str(audio_dir / "spk1" / "b.txt") in row["message"]
    # a transcript required: skipped as before
    prepare_audiodir(audio_dir, tmp_path / "req", "lo", require_text=True)
    skipped = json.loads((tmp_path / "req" / "test.report.json").read_text())["skipped"]
    assert skipped == {reason: 1, "missing transcript": 2}


def test_clip_too_short_for_features_is_skipped(audio_dir, tmp_path, make_wav):
    make_wav(audio_dir / "click.wav", seconds=0.012)  # shorter than the 25 ms window: rank used to crash in torch
    out = prepare_audiodir(audio_dir, tmp_path / "out", "lo")
    assert "click" not in {u.id for u in read_manifest(out["test"], require_text=False)}
    assert json.loads((tmp_path / "out" / "test.report.json").read_text())["skipped"] == {"too short": 1}
