"""FLEURS -> manifest: the raw hub layout (tsv + extracted or tarred WAVs) and a HF Dataset (Audio(decode=False))."""

from __future__ import annotations

import json
import tarfile

import datasets
import numpy as np
import pytest
import soundfile as sf

from data_prep.fleurs import FLEURS_COLUMNS, prepare_fleurs
from xlingual.audio import AudioError
from xlingual.corpus import ManifestError, read_manifest

# (file name, raw transcription, sample rate); FLEURS records each sentence several times: ids 1 and 2 repeat
ROWS = {"train": [("1001.wav", "Hello, World!", 16000, 1), ("1002.wav", "Hello world.", 16000, 1),
                  ("1003.wav", "Second sentence.", 16000, 2)],
        "dev": [("2001.wav", "A dev sentence.", 16000, 3)],
        "test": [("3001.wav", "A test sentence!", 16000, 4), ("3002.wav", "Another one", 16000, 5)]}


def tsv_line(sentence_id, file_name, raw, num_samples=8000, gender="FEMALE") -> str:
    fields = [str(sentence_id), file_name, raw, raw.lower().strip(".!"), "", str(num_samples), gender]
    assert len(fields) == len(FLEURS_COLUMNS)
    return "\t".join(fields)


@pytest.fixture
def fleurs_raw(tmp_path, make_wav):
    """data/xx_yy/{train,dev,test}.tsv; train and dev audio extracted, test audio only as audio/test.tar.gz."""
    cdir = tmp_path / "fleurs" / "data" / "xx_yy"
    for split, rows in ROWS.items():
        lines = [tsv_line(sid, name, raw) for name, raw, _, sid in rows]
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for i, (name, _, sr, _) in enumerate(rows):
            make_wav(cdir / "audio" / split / name, seconds=1.0, sr=sr, seed=i)
    with tarfile.open(cdir / "audio" / "test.tar.gz", "w:gz") as tf:
        tf.add(cdir / "audio" / "test", arcname="test")
    for f in (cdir / "audio" / "test").iterdir():
        f.unlink()
    (cdir / "audio" / "test").rmdir()
    return cdir


def test_raw_layout(fleurs_raw, tmp_path):
    out = prepare_fleurs(fleurs_raw, tmp_path / "out", "xx")
    assert set(out) == {"train", "dev", "test"}
    train = read_manifest(out["train"])
    assert [u.id for u in train] == ["1001", "1002", "1003"]  # file stems: the sentence id repeats
    assert [u.text for u in train] == ["hello world", "hello world", "second sentence"]
    assert train[0].audio == str((fleurs_raw / "audio" / "train" / "1001.wav").resolve())  # in place
    assert {u.speaker for u in train} == {"fleurs-xx_yy-train"}
    test = read_manifest(out["test"])  # extracted from the archive into the output folder
    assert test[0].audio == str(tmp_path / "out" / "fleurs_audio" / "test" / "3001.wav")
    assert all(u.duration == 1.0 for u in train + test)


def test_repo_root_with_config_and_validation_alias(fleurs_raw, tmp_path):
    with pytest.raises(ManifestError, match="pass config="):
        prepare_fleurs(fleurs_raw.parent.parent, tmp_path / "out", "xx")
    out = prepare_fleurs(fleurs_raw.parent.parent, tmp_path / "out", "xx", ["validation"], config="xx_yy")
    assert [u.id for u in read_manifest(out["validation"])] == ["2001"]


def _fleurs_bad(cdir, make_wav):
    lines = [tsv_line(1, "1001.wav", "Hello, World!"),
             "1\t1004.wav\tonly three columns",                       # malformed: column count
             tsv_line(1, "1005.wav", "not a number", num_samples="x"),  # malformed: shifted columns
             tsv_line(2, "1006.wav", "?!"),                            # punctuation only
             tsv_line(3, "1007.wav", ""),                              # empty transcript
             tsv_line(4, "1008.wav", "no such file"),                  # missing audio
             tsv_line(5, "1001.wav", "Listed twice"),                  # duplicate
             tsv_line(6, "1009.wav", "stereo and 44.1 kHz"),           # kept, with notes
             tsv_line(7, "1010.wav", "nan inside")]                    # non-finite samples
    raw = ("\n".join(lines) + "\n").encode() + b"8\t1011.wav\tcaf\xe9\tcafe\t\t8000\tMALE\n"  # non-UTF-8
    (cdir / "train.tsv").write_bytes(raw)
    for name in ("1005.wav", "1006.wav", "1007.wav", "1011.wav"):
        make_wav(cdir / "audio" / "train" / name, seconds=1.0)
    make_wav(cdir / "audio" / "train" / "1009.wav", seconds=1.0, sr=44100, channels=2)
    x = np.zeros(8000, dtype=np.float32)
    x[5] = np.inf
    sf.write(cdir / "audio" / "train" / "1010.wav", x, 16000, subtype="FLOAT")


EXPECTED_SKIPS = {"malformed line": 2, "unnormalizable transcript": 1, "empty transcript": 1, "missing audio": 1,
                  "duplicate id": 1, "non-finite audio": 1, "non-UTF-8 transcript": 1}


def test_raw_bad_lines_skipped(fleurs_raw, tmp_path, make_wav):
    _fleurs_bad(fleurs_raw, make_wav)
    out = prepare_fleurs(fleurs_raw, tmp_path / "out", "xx", ["train"])
    assert [u.id for u in read_manifest(out["train"])] == ["1001", "1009"]
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == EXPECTED_SKIPS
    assert report["notes"] == {"downmixed 2 channels to mono": 1, "resampled 44100->16000 Hz": 1}
    skipped = (tmp_path / "out" / "train.skipped.tsv").read_text()
    assert f"{fleurs_raw / 'train.tsv'}:2" in skipped and "1008\tmissing audio" in skipped
    assert "1011\tnon-UTF-8 transcript" in skipped  # reported under its file name, not the sentence id


def test_raw_bad_lines_strict(fleurs_raw, tmp_path, make_wav):
    _fleurs_bad(fleurs_raw, make_wav)
    with pytest.raises(ManifestError, match=r"train.tsv:2: expected 7 tab-separated columns"):
        prepare_fleurs(fleurs_raw, tmp_path / "out", "xx", ["train"], strict=True)


def test_raw_missing_audio_folder_and_damaged_archive(fleurs_raw, tmp_path):
    (fleurs_raw / "audio" / "test.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ManifestError, match="damaged or incomplete"):
        prepare_fleurs(fleurs_raw, tmp_path / "out", "xx", ["test"])
    (fleurs_raw / "audio" / "test.tar.gz").unlink()
    with pytest.raises(ManifestError, match="download data/xx_yy/audio/test.tar.gz"):
        prepare_fleurs(fleurs_raw, tmp_path / "out", "xx", ["test"])
    with pytest.raises(ManifestError, match="FLEURS folder not found"):  # a typo is not a hub config name
        prepare_fleurs(str(fleurs_raw) + "_typo", tmp_path / "out", "xx")


# ------------------------------------------------------------------ HF datasets: same columns as google/fleurs
AUDIO_STORAGE = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


def fleurs_dataset(rows, decode: bool) -> datasets.Dataset:
    """An in-memory Dataset with google/fleurs' features; `rows` are (file name, raw text, wav bytes).

    The audio column is built as its Arrow storage ({bytes, path}) and then cast to Audio: encoding examples
    through Audio needs torchcodec, which (like loading a hub dataset) a cast does not.
    """
    features = datasets.Features({
        "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"), "path": datasets.Value("string"),
        "audio": AUDIO_STORAGE, "transcription": datasets.Value("string"),
        "raw_transcription": datasets.Value("string"),
        "gender": datasets.ClassLabel(names=["male", "female", "other"]),
        "lang_id": datasets.ClassLabel(names=["xx_yy"]), "language": datasets.Value("string"),
        "lang_group_id": datasets.ClassLabel(names=["south_asian_sa"])})
    return datasets.Dataset.from_dict({
        "id": list(range(len(rows))), "num_samples": [8000] * len(rows), "path": [None] * len(rows),
        "audio": [{"bytes": data, "path": f"train/{name}"} for name, _, data in rows],
        "transcription": [raw.lower() for _, raw, _ in rows], "raw_transcription": [raw for _, raw, _ in rows],
        "gender": [1] * len(rows), "lang_id": [0] * len(rows), "language": ["Xx"] * len(rows),
        "lang_group_id": [0] * len(rows)}, features=features, split="train").cast_column(
        "audio", datasets.Audio(sampling_rate=16000, decode=decode))


def _wav_bytes(make_wav, tmp_path, name, **kw) -> bytes:
    return make_wav(tmp_path / "src" / name, **kw).read_bytes()


@pytest.mark.parametrize("decode", [False, True])  # Audio(decode=True) is cast to decode=False, never decoded
def test_hf_dataset(tmp_path, make_wav, decode):
    good = _wav_bytes(make_wav, tmp_path, "a.wav")
    rows = [("1001.wav", "Hello, World!", good),
            ("1002.wav", "Resampled.", _wav_bytes(make_wav, tmp_path, "b.wav", sr=22050)),
            ("1003.wav", "Cut short", good[:len(good) // 2]),
            ("1004.wav", "...", good),
            ("1005.wav", "Not audio", b"RIFF....WAVEjunk")]
    out = prepare_fleurs(fleurs_dataset(rows, decode), tmp_path / "out", "xx")  # the Dataset names its split
    utts = read_manifest(out["train"])
    assert [(u.id, u.text) for u in utts] == [("1001", "hello world"), ("1002", "resampled")]
    assert utts[0].audio == str(tmp_path / "out" / "audio" / "train" / "1001.wav")
    assert all(abs(u.duration - 0.5) < 1e-3 for u in utts)
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"truncated audio": 1, "unnormalizable transcript": 1, "unreadable audio": 1}
    assert report["notes"] == {"resampled 22050->16000 Hz": 1}
    with pytest.raises(AudioError, match=r"fleurs:xx:train\[2\]: utterance '1003'.*truncated"):
        prepare_fleurs(fleurs_dataset(rows, decode), tmp_path / "strict", "xx", strict=True)


def test_hf_dataset_dict_and_same_ids_as_raw(fleurs_raw, tmp_path):
    rows = [(name, raw, (fleurs_raw / "audio" / "train" / name).read_bytes()) for name, raw, _, _ in ROWS["train"]]
    dev = fleurs_dataset(rows[:1], decode=False)
    dd = datasets.DatasetDict({"train": fleurs_dataset(rows, decode=False), "validation": dev})
    out = prepare_fleurs(dd, tmp_path / "hf", "xx", ["train", "dev"])
    raw = prepare_fleurs(fleurs_raw, tmp_path / "raw", "xx", ["train"])
    as_pairs = lambda p: [(u.id, u.text, u.duration) for u in read_manifest(p)]  # noqa: E731
    assert as_pairs(out["train"]) == as_pairs(raw["train"])
    assert len(read_manifest(out["dev"])) == 1
    with pytest.raises(ManifestError, match="split 'test' is not in the DatasetDict"):
        prepare_fleurs(dd, tmp_path / "hf", "xx", ["test"])
    with pytest.raises(ValueError, match="one split"):
        prepare_fleurs(dd["train"], tmp_path / "hf", "xx", ["train", "dev"])


def test_hf_audio_given_as_local_path(fleurs_raw, tmp_path):
    """Audio cells with a path and no bytes (a locally extracted dataset) are read from the file, in place."""
    wav = fleurs_raw / "audio" / "train" / "1001.wav"
    ds = datasets.Dataset.from_dict({"audio": [{"bytes": None, "path": str(wav)}], "raw_transcription": ["Hi"]},
                                    features=datasets.Features({"audio": AUDIO_STORAGE,
                                                                "raw_transcription": datasets.Value("string")}))
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    out = prepare_fleurs(ds, tmp_path / "out", "xx", ["test"])
    assert read_manifest(out["test"])[0].audio == str(wav.resolve())


# ---------------------------------------------------------------- input that used to get through (issue: bad input)

def test_empty_dev_tsv_is_refused_and_the_other_splits_prepared(fleurs_raw, tmp_path, capsys):
    from xlingual.cli import main

    (fleurs_raw / "dev.tsv").write_bytes(b"")
    assert main(["prepare", "fleurs", str(fleurs_raw), "--out", str(tmp_path / "out"), "--language", "xx"]) == 2
    err = capsys.readouterr().err
    assert f"{fleurs_raw / 'dev.tsv'}" in err and "0 bytes" in err and "--splits" in err
    assert not (tmp_path / "out" / "dev.jsonl").exists()
    # never half-way: the splits that could be prepared were, completely (a re-run reuses them)
    assert len(read_manifest(tmp_path / "out" / "train.jsonl")) == 3
    assert len(read_manifest(tmp_path / "out" / "test.jsonl")) == 2


def test_missing_test_tsv_prepares_the_splits_found(fleurs_raw, tmp_path, caplog):
    (fleurs_raw / "test.tsv").unlink()
    out = prepare_fleurs(fleurs_raw, tmp_path / "out", "xx")
    assert set(out) == {"train", "dev"}
    assert any("test" in r.message and "missing" in r.message for r in caplog.records)
    # asked for by name: refused before anything is written
    with pytest.raises(ManifestError, match=r"test.tsv not found"):
        prepare_fleurs(fleurs_raw, tmp_path / "named", "xx", ["train", "test"])
    assert not (tmp_path / "named" / "train.jsonl").exists()
