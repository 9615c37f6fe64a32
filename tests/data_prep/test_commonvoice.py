"""Common Voice -> manifest: header columns by name across releases, MP3 clips decoded to 16 kHz WAV."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from data_prep.commonvoice import prepare_commonvoice
from xlingual.corpus import ManifestError, read_manifest

# Column sets of two releases: old (v1-v7 style, "accent") and recent (v17 style: sentence_id, accents, ...).
OLD = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent", "locale", "segment"]
NEW = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
       "gender", "accents", "variant", "locale", "segment"]
CLIP = "mp3" if "MP3" in sf.available_formats() else "ogg"  # libsndfile >= 1.1 writes MP3; else stand in OGG


def row(header, client, path, sentence) -> str:
    values = {"client_id": client, "path": path, "sentence": sentence, "sentence_id": "abc", "locale": "xx",
              "up_votes": "2", "down_votes": "0"}
    return "\t".join(values.get(c, "") for c in header)


@pytest.fixture(params=[OLD, NEW], ids=["old-release", "new-release"])
def cv_dir(request, tmp_path, make_wav):
    header = request.param
    cv = tmp_path / "cv-corpus" / "xx"
    for i, sr in enumerate((48000, 32000, 48000)):
        make_wav(cv / "clips" / f"common_voice_xx_{i}.{CLIP}", seconds=1.0, sr=sr, seed=i)
    lines = ["\t".join(header),
             row(header, "spk_a", f"common_voice_xx_0.{CLIP}", 'He said "hello", then left.'),
             row(header, "spk_b", f"common_voice_xx_1.{CLIP}", "Second clip")]
    (cv / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (cv / "dev.tsv").write_text("\n".join([lines[0], row(header, "spk_c", f"common_voice_xx_2.{CLIP}", "Dev.")])
                                + "\n", encoding="utf-8")
    return cv


def test_prepare(cv_dir, tmp_path):
    out = prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["train", "dev"])
    train = read_manifest(out["train"])
    assert [(u.id, u.text, u.speaker) for u in train] == [
        ("common_voice_xx_0", "he said hello then left", "spk_a"), ("common_voice_xx_1", "second clip", "spk_b")]
    for u in train:  # decoded and saved as plain 16 kHz WAV next to the manifest
        assert u.audio == str(tmp_path / "out" / "audio" / "train" / f"{u.id}.wav")
        assert sf.info(u.audio).samplerate == 16000 and abs(u.duration - 1.0) < 0.01
    notes = json.loads((tmp_path / "out" / "train.report.json").read_text())["notes"]
    assert notes == {"resampled 48000->16000 Hz": 1, "resampled 32000->16000 Hz": 1}
    assert len(read_manifest(out["dev"])) == 1


def _bad_tsv(cv_dir, make_wav):
    header = (cv_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    make_wav(cv_dir / "clips" / "empty_text.mp3", format="WAV")  # a WAV named .mp3: decoded by content
    lines = [row(header, "a", f"common_voice_xx_0.{CLIP}", "Good one"),
             row(header, "a", "missing_clip.mp3", "No file"),
             row(header, "a", "empty_text.mp3", ""),
             row(header, "a", f"common_voice_xx_1.{CLIP}", "« … »"),
             row(header, "a", f"common_voice_xx_0.{CLIP}", "Duplicate"),
             "a\tshort_row.mp3\tToo few columns"]
    data = ("\t".join(header) + "\n" + "\n".join(lines) + "\n").encode()
    data += row(header, "a", "latin1.mp3", "caf\xe9").encode("latin-1") + b"\n"
    (cv_dir / "train.tsv").write_bytes(data)


def test_bad_rows_skipped(cv_dir, tmp_path, make_wav):
    _bad_tsv(cv_dir, make_wav)
    out = prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["train"])
    assert [u.id for u in read_manifest(out["train"])] == ["common_voice_xx_0"]
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"missing audio": 1, "empty transcript": 1, "unnormalizable transcript": 1,
                                 "duplicate id": 1, "malformed line": 1, "non-UTF-8 transcript": 1}
    assert report["kept"] == 1
    skipped = (tmp_path / "out" / "train.skipped.tsv").read_text()
    assert "latin1\tnon-UTF-8 transcript" in skipped and "missing_clip\tmissing audio" in skipped


def test_bad_rows_strict(cv_dir, tmp_path, make_wav):
    _bad_tsv(cv_dir, make_wav)
    # The listing is checked before any audio is decoded, so the short row (line 7) is the first error raised.
    with pytest.raises(ManifestError, match=r"train.tsv:7: expected \d+ tab-separated columns as in the header"):
        prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["train"], strict=True)


def test_header_and_layout_errors(cv_dir, tmp_path):
    (cv_dir / "test.tsv").write_text("client_id\tpath\ttext\nx\ty.mp3\tz\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"test.tsv:1: header lacks column\(s\) \['sentence'\]"):
        prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["test"])
    with pytest.raises(ManifestError, match=r"other.tsv not found; splits in .*\['dev', 'test', 'train'\]"):
        prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["other"])
    with pytest.raises(ManifestError, match="no clips/ folder"):
        prepare_commonvoice(cv_dir.parent, tmp_path / "out", "xx")


def test_undecodable_clip_is_reported_as_such(cv_dir, tmp_path):
    (cv_dir / "clips" / "common_voice_xx_1.mp3").write_bytes(b"not an mp3 at all " * 100)  # exists, undecodable
    header = (cv_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    (cv_dir / "train.tsv").write_text("\t".join(header) + "\n" + row(header, "a", f"common_voice_xx_0.{CLIP}", "Good")
                                      + "\n" + row(header, "b", "common_voice_xx_1.mp3", "Bad clip") + "\n")
    prepare_commonvoice(cv_dir, tmp_path / "out", "xx", ["train"])
    [bad] = [r for r in (tmp_path / "out" / "train.skipped.tsv").read_text().splitlines() if "xx_1" in r]
    assert "does not exist" not in bad and "possibly a pipe" not in bad
    assert "common_voice_xx_1.mp3" in bad and "cannot be decoded" in bad


def test_missing_split_file_prepares_the_ones_found(cv_dir, tmp_path, caplog):
    out = prepare_commonvoice(cv_dir, tmp_path / "out", "xx")  # no test.tsv in the fixture
    assert set(out) == {"train", "dev"}
    assert any("test.tsv" in r.message for r in caplog.records)
