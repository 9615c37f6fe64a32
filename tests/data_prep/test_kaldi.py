"""Kaldi data dirs -> manifest: plain paths, pipe commands, segments, and every inconsistency (skip vs strict)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from data_prep.kaldi import prepare_kaldi
from xlingual.audio import AudioError
from xlingual.corpus import ManifestError, read_manifest


def write_kaldi(data_dir, files: dict[str, list]) -> None:
    """Write Kaldi files from lists of lines (bytes lines are written as they are: non-UTF-8 cases)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (data_dir / name).write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))


def segmented(tmp_path, make_wav) -> dict[str, list]:
    """Two 2 s recordings: a 16 kHz WAV referenced by path, an 8 kHz one behind a pipe command; 4 segments."""
    long = make_wav(tmp_path / "audio" / "long.wav", seconds=2.0)
    phone = make_wav(tmp_path / "audio" / "phone.wav", seconds=2.0, sr=8000)
    return {"wav.scp": [f"long {long}", f"phone cat {phone} |"],
            "segments": ["u1 long 0.00 0.80", "u2 long 1.00 1.90", "u3 phone 0.20 1.00", "u4 phone 1.10 1.80"],
            "text": ["u1 Hello, World!", "u2 good morning", "u3 the phone call", "u4 ends here"],
            "utt2spk": ["u1 spk1", "u2 spk1", "u3 spk2", "u4 spk2"]}


def plain(tmp_path, make_wav) -> dict[str, list]:
    """Three whole-file utterances of 1 s: 16 kHz WAV, 8 kHz WAV through `cat |`, 44.1 kHz stereo FLAC."""
    long = make_wav(tmp_path / "audio" / "long.wav", seconds=1.0)
    phone = make_wav(tmp_path / "audio" / "phone.wav", seconds=1.0, sr=8000)
    stereo = make_wav(tmp_path / "audio" / "stereo.flac", seconds=1.0, sr=44100, channels=2)
    return {"wav.scp": [f"long {long}", f"phone cat {phone} |", f"stereo {stereo}"],
            "text": ["long a long one", "phone over the phone", "stereo two channels"]}


def test_segments_and_pipes(tmp_path, make_wav):
    write_kaldi(tmp_path / "data" / "train", segmented(tmp_path, make_wav))
    out = prepare_kaldi(tmp_path / "data" / "train", tmp_path / "out", "en")
    assert out == {"train": tmp_path / "out" / "train.jsonl"}
    utts = {u.id: u for u in read_manifest(out["train"])}
    assert list(utts) == ["u1", "u2", "u3", "u4"]
    # 16 kHz recording: referenced in place, cut by offset; the 8 kHz pipe output: written per segment
    assert utts["u2"].audio == str((tmp_path / "audio" / "long.wav").resolve())
    assert (utts["u2"].offset, utts["u2"].duration) == (1.0, 0.9)
    assert utts["u3"].audio == str(tmp_path / "out" / "audio" / "train" / "u3.wav")
    assert (utts["u3"].offset, utts["u3"].duration) == (0.0, 0.8)
    assert sf.info(utts["u3"].audio).samplerate == 16000
    assert utts["u1"].text == "hello world" and utts["u4"].speaker == "spk2"
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["kept"] == 4 and report["skipped_total"] == 0
    assert report["notes"] == {"resampled 8000->16000 Hz": 2}
    assert (tmp_path / "out" / "train.skipped.tsv").read_text() == "id\treason\tmessage\n"


def test_plain_paths_downmix_and_resample(tmp_path, make_wav):
    write_kaldi(tmp_path / "d", plain(tmp_path, make_wav))
    utts = {u.id: u for u in read_manifest(prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["dev"])["dev"])}
    assert utts["stereo"].audio.endswith("out/audio/dev/stereo.wav")
    assert sf.info(utts["stereo"].audio).channels == 1
    assert all(abs(u.duration - 1.0) < 1e-3 for u in utts.values())
    assert utts["stereo"].speaker == "stereo"  # no utt2spk: each utterance its own speaker, as in Kaldi
    notes = json.loads((tmp_path / "out" / "dev.report.json").read_text())["notes"]
    assert notes == {"resampled 8000->16000 Hz": 1, "resampled 44100->16000 Hz": 1,
                     "downmixed 2 channels to mono": 1}


def test_pipe_runs_once_per_recording(tmp_path, make_wav):
    files = segmented(tmp_path, make_wav)
    counter = tmp_path / "runs.txt"
    files["wav.scp"][1] = f"phone echo run >> {counter}; cat {tmp_path / 'audio' / 'phone.wav'} |"
    write_kaldi(tmp_path / "d", files)
    prepare_kaldi(tmp_path / "d", tmp_path / "out", "en")
    assert counter.read_text().splitlines() == ["run"]


def _nan_wav(tmp_path, make_wav):
    x = np.zeros(8000, dtype=np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "audio" / "nan.wav", x, 16000, subtype="FLOAT")
    return tmp_path / "audio" / "nan.wav"


def _truncated_wav(tmp_path, make_wav):
    data = make_wav(tmp_path / "audio" / "full.wav", seconds=0.5).read_bytes()
    (tmp_path / "audio" / "cut.wav").write_bytes(data[:len(data) // 2])
    return tmp_path / "audio" / "cut.wav"


def _empty_wav(tmp_path, make_wav):
    sf.write(tmp_path / "audio" / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    return tmp_path / "audio" / "empty.wav"


def _garbage(tmp_path, make_wav):
    (tmp_path / "audio" / "garbage.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    return tmp_path / "audio" / "garbage.wav"


def _set(key, i, value):
    def mutate(files, tmp_path, make_wav):
        files[key][i] = value
    return mutate


def _add(key, value):
    def mutate(files, tmp_path, make_wav):
        files[key].append(value)
    return mutate


def _stereo_file(build):
    def mutate(files, tmp_path, make_wav):
        files["wav.scp"][2] = f"stereo {build(tmp_path, make_wav)}"
    return mutate


CASES = [
    # (case, layout, mutate(files, tmp_path, make_wav), bad ids, reason, strict error, words in the strict message)
    ("text without audio", segmented, _add("text", "u5 orphan text"), ["u5"], "no audio", ManifestError, "text:5"),
    ("segment without text", segmented, _add("segments", "u6 long 0.1 0.2"), ["u6"], "no transcript",
     ManifestError, "segments:5"),
    ("segment past end", segmented, _set("segments", 1, "u2 long 1.00 2.50"), ["u2"], "segment past end",
     AudioError, "segments:2"),
    ("segment starts past end", segmented, _set("segments", 1, "u2 long 3.0 3.5"), ["u2"], "segment past end",
     AudioError, "starts at 3.00s"),
    ("segment end <= start", segmented, _set("segments", 1, "u2 long 1.5 1.0"), ["u2"], "bad segment",
     ManifestError, "segments:2"),
    ("unknown recording", segmented, _set("segments", 1, "u2 nosuch 0 1"), ["u2"], "unknown recording",
     ManifestError, "segments:2"),
    ("malformed segment", segmented, _set("segments", 1, "u2 long 1.0"), ["u2"], "malformed line",
     ManifestError, "segments:2"),
    ("non-numeric segment", segmented, _set("segments", 1, "u2 long a b"), ["u2"], "malformed line",
     ManifestError, "segments:2"),
    ("failing pipe", segmented, _set("wav.scp", 1, "phone false |"), ["u3", "u4"], "pipe command failed",
     AudioError, "wav.scp:2"),
    ("pipe of a missing file", segmented, _set("wav.scp", 1, "phone cat /no/such.sph |"), ["u3", "u4"],
     "pipe command failed", AudioError, "/no/such.sph"),
    ("missing file", segmented, _set("wav.scp", 0, "long /no/such/long.wav"), ["u1", "u2"], "missing audio",
     AudioError, "/no/such/long.wav"),
    ("punctuation-only text", segmented, _set("text", 1, "u2 ?! ... --"), ["u2"], "unnormalizable transcript",
     ManifestError, "text:2"),
    ("empty text", segmented, _set("text", 1, "u2"), ["u2"], "empty transcript", ManifestError, "text:2"),
    ("non-UTF-8 text", segmented, _set("text", 1, b"u2 caf\xe9"), ["u2"], "non-UTF-8 transcript",
     ManifestError, "text:2"),
    ("duplicate text id", segmented, _add("text", "u1 again"), ["u1"], "duplicate id", ManifestError, "text:5"),
    ("wav.scp without text", plain, lambda f, t, m: f["text"].pop(), ["stereo"], "no transcript",
     ManifestError, "wav.scp:3"),
    ("text without wav.scp", plain, _add("text", "ghost hello"), ["ghost"], "no audio", ManifestError, "text:4"),
    ("malformed wav.scp line", plain, _add("wav.scp", "lonely"), ["lonely"], "malformed line", ManifestError,
     "wav.scp:4"),
    ("duplicate recording", plain, _add("wav.scp", "long /other.wav"), ["long"], "duplicate id", ManifestError,
     "wav.scp:4"),
    ("NaN samples", plain, _stereo_file(_nan_wav), ["stereo"], "non-finite audio", AudioError, "NaN"),
    ("truncated audio", plain, _stereo_file(_truncated_wav), ["stereo"], "truncated audio", AudioError, "cut.wav"),
    ("empty audio", plain, _stereo_file(_empty_wav), ["stereo"], "empty audio", AudioError, "empty.wav"),
    ("unreadable audio", plain, _stereo_file(_garbage), ["stereo"], "unreadable audio", AudioError, "garbage.wav"),
]
TOTAL = {segmented: 4, plain: 3}
BASE_IDS = {"u1", "u2", "u3", "u4", "long", "phone", "stereo"}


@pytest.mark.parametrize("case, layout, mutate, bad, reason, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_skipped_and_counted(tmp_path, make_wav, case, layout, mutate, bad, reason, error, words):
    files = layout(tmp_path, make_wav)
    mutate(files, tmp_path, make_wav)
    write_kaldi(tmp_path / "d", files)
    manifest = prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])["train"]
    kept = {u.id for u in read_manifest(manifest)}
    assert not kept & set(bad)
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {reason: len(bad)}
    assert report["kept"] == len(kept) == TOTAL[layout] - len(set(bad) & BASE_IDS)  # only the bad ones went
    rows = [r.split("\t") for r in (tmp_path / "out" / "train.skipped.tsv").read_text().splitlines()[1:]]
    assert sorted((r[0], r[1]) for r in rows) == sorted((b, reason) for b in bad)


@pytest.mark.parametrize("case, layout, mutate, bad, reason, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_strict_raises(tmp_path, make_wav, case, layout, mutate, bad, reason, error, words):
    files = layout(tmp_path, make_wav)
    mutate(files, tmp_path, make_wav)
    write_kaldi(tmp_path / "d", files)
    with pytest.raises(error) as e:
        prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"], strict=True)
    assert words in str(e.value)
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written


def test_pipes_refused_when_not_allowed(tmp_path, make_wav):
    write_kaldi(tmp_path / "d", plain(tmp_path, make_wav))
    prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"], allow_pipes=False)
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"pipe not allowed": 1} and report["kept"] == 2


def test_idempotent_and_redone_when_input_changes(tmp_path, make_wav):
    write_kaldi(tmp_path / "d", plain(tmp_path, make_wav))
    manifest = prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])["train"]
    first = manifest.stat().st_mtime_ns
    os.utime(manifest, ns=(first - 10**9, first - 10**9))  # back-date: a rewrite would show
    prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])
    assert manifest.stat().st_mtime_ns == first - 10**9
    (tmp_path / "d" / "text").write_text("long a long one\nphone over the phone\n")
    prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])
    assert [u.id for u in read_manifest(manifest)] == ["long", "phone"]
    prepare_kaldi(tmp_path / "d", tmp_path / "out", "bn", ["train"])  # another option: redone too
    assert read_manifest(manifest)[0].language == "bn"


def test_relative_paths_use_root(tmp_path, make_wav, monkeypatch):
    make_wav(tmp_path / "recipe" / "wavs" / "a.wav")
    write_kaldi(tmp_path / "recipe" / "data" / "train", {"wav.scp": ["a wavs/a.wav"], "text": ["a hello"]})
    out = prepare_kaldi(tmp_path / "recipe" / "data", tmp_path / "out", "en", root=tmp_path / "recipe")
    assert read_manifest(out["train"])[0].audio == str(tmp_path / "recipe" / "wavs" / "a.wav")
    monkeypatch.chdir(tmp_path / "recipe")  # Kaldi's default: paths relative to where the recipe runs
    out = prepare_kaldi(tmp_path / "recipe" / "data", tmp_path / "out2", "en")
    assert read_manifest(out["train"])[0].duration == 0.5


def test_folder_of_data_dirs_and_audio_only(tmp_path, make_wav):
    files = plain(tmp_path, make_wav)
    write_kaldi(tmp_path / "data" / "train", files)
    write_kaldi(tmp_path / "data" / "test", {"wav.scp": files["wav.scp"]})  # no text: audio only
    with pytest.raises(ManifestError, match="no text file"):
        prepare_kaldi(tmp_path / "data", tmp_path / "out", "en")
    out = prepare_kaldi(tmp_path / "data", tmp_path / "out", "en", require_text=False)
    assert set(out) == {"test", "train"}
    assert [u.text for u in read_manifest(out["test"], require_text=False)] == ["", "", ""]
    with pytest.raises(ManifestError, match="no wav.scp"):
        prepare_kaldi(tmp_path / "data", tmp_path / "out", "en", ["dev"])


def test_summary_logged(tmp_path, make_wav, caplog):
    files = plain(tmp_path, make_wav)
    files["text"].append("ghost hello")
    write_kaldi(tmp_path / "d", files)
    with caplog.at_level(logging.INFO, logger="xlingual.corpus"):
        prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])
    [record] = [r for r in caplog.records if "kept" in r.message]
    assert record.levelno == logging.WARNING
    assert "train: kept 3 (0.00 h), skipped 1: no audio x1" in record.message


# ---------------------------------------------------------------- input that used to get through (issue: bad input)

def test_empty_text_file_is_refused_naming_it(tmp_path, make_wav, capsys):
    files = plain(tmp_path, make_wav)
    files["text"] = []
    write_kaldi(tmp_path / "d", files)
    from xlingual.cli import main

    assert main(["prepare", "kaldi", str(tmp_path / "d"), "--out", str(tmp_path / "out"), "--language", "en",
                 "--splits", "train"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'd' / 'text'}" in err and "empty" in err
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_split_whose_every_utterance_was_skipped_is_refused(tmp_path, make_wav):
    files = plain(tmp_path, make_wav)
    files["text"] = ["long ?!", "phone ...", "stereo --"]
    write_kaldi(tmp_path / "d", files)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.jsonl").write_text("")  # a stale manifest must not stand in for the refused one
    with pytest.raises(ManifestError) as e:  # EmptyManifestError
        prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])
    msg = str(e.value)
    assert "all 3 utterances" in msg and "unnormalizable transcript x3" in msg and "train.skipped.tsv" in msg
    assert not (tmp_path / "out" / "train.jsonl").exists()
    assert len((tmp_path / "out" / "train.skipped.tsv").read_text().splitlines()) == 4  # the reasons, one each


def test_clips_shorter_than_the_minimum_are_skipped_and_counted(tmp_path, make_wav):
    files = plain(tmp_path, make_wav)
    tiny = make_wav(tmp_path / "audio" / "tiny.wav", seconds=0.01)  # 160 samples: the STFT cannot pad it
    short = make_wav(tmp_path / "audio" / "short.wav", seconds=0.05)
    files["wav.scp"] += [f"tiny {tiny}", f"short {short}"]
    files["text"] += ["tiny a", "short b"]
    write_kaldi(tmp_path / "d", files)
    manifest = prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])["train"]
    assert {u.id for u in read_manifest(manifest)} == {"long", "phone", "stereo"}
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"too short": 2}
    skipped = (tmp_path / "out" / "train.skipped.tsv").read_text()
    assert "tiny\ttoo short" in skipped and "10 ms" in skipped and "100 ms minimum" in skipped
    with pytest.raises(ManifestError, match=r"text:4 .*utterance 'tiny' is 10 ms long"):
        prepare_kaldi(tmp_path / "d", tmp_path / "strict", "en", ["train"], strict=True)


def test_transcript_too_long_for_its_audio_is_skipped_at_preparation(tmp_path, make_wav):
    files = plain(tmp_path, make_wav)
    clip = make_wav(tmp_path / "audio" / "clip.wav", seconds=0.1)
    files["wav.scp"].append(f"clip {clip}")
    files["text"].append("clip the transcript is long")  # 22 labels (spaces too) on 3 output frames
    write_kaldi(tmp_path / "d", files)
    manifest = prepare_kaldi(tmp_path / "d", tmp_path / "out", "en", ["train"])["train"]
    assert "clip" not in {u.id for u in read_manifest(manifest)}
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"transcript too long": 1}
    row = [r for r in (tmp_path / "out" / "train.skipped.tsv").read_text().splitlines() if r.startswith("clip")][0]
    assert "'clip'" in row and "22 characters" in row and "3 output frames" in row


def test_no_pipes_through_the_cli_runs_no_command(tmp_path, make_wav, capsys):
    files = plain(tmp_path, make_wav)
    ran = tmp_path / "ran"
    files["wav.scp"][1] = f"phone touch {ran}; cat {tmp_path / 'audio' / 'phone.wav'} |"
    write_kaldi(tmp_path / "d", files)
    from xlingual.cli import main

    args = ["prepare", "kaldi", str(tmp_path / "d"), "--language", "en", "--splits", "train", "--no-pipes"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    assert not ran.exists()
    report = json.loads((tmp_path / "out" / "train.report.json").read_text())
    assert report["skipped"] == {"pipe not allowed": 1} and report["kept"] == 2
    assert main(args + ["--out", str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "wav.scp:2" in err and "--no-pipes" in err
    assert not ran.exists()


def test_missing_split_is_refused_before_any_is_written(tmp_path, make_wav):
    write_kaldi(tmp_path / "data" / "train", plain(tmp_path, make_wav))
    with pytest.raises(ManifestError, match=r"dev.*no wav.scp"):
        prepare_kaldi(tmp_path / "data", tmp_path / "out", "en", ["train", "dev"])
    assert not (tmp_path / "out" / "train.jsonl").exists()
