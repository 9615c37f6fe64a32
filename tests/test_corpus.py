"""The manifest: validation of bad lines (file:line in every message), round trip, hours-budget subsets."""

from __future__ import annotations

import json

import pytest

from xlingual.corpus import (ManifestError, PrepReport, Utterance, read_manifest, subset_hours, total_hours,
                             write_manifest)

GOOD = {"id": "u1", "audio": "a.wav", "text": "hello world", "language": "en", "speaker": "s1", "duration": 1.5}


def line(**changes) -> str:
    rec = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}  # `...` deletes a field
    return json.dumps(rec)


BAD_LINES = [
    # (case, line, words the message must contain)
    ("bad JSON", '{"id": "u2", "audio": ', "invalid JSON"),
    ("not an object", "[1, 2, 3]", "expected a JSON object"),
    ("missing field", line(id="u2", speaker=...), "missing field(s) ['speaker']"),
    ("extra field", line(id="u2", gender="f"), "unknown field(s) ['gender']"),
    ("id not a string", line(id=2), "field 'id' must be a string"),
    ("text not a string", line(id="u2", text=None), "field 'text' must be a string"),
    ("duration a string", line(id="u2", duration="1.5"), "field 'duration' must be a number"),
    ("duration a bool", line(id="u2", duration=True), "field 'duration' must be a number"),
    ("offset a string", line(id="u2", offset="0"), "field 'offset' must be a number"),
    ("zero duration", line(id="u2", duration=0), "duration > 0"),
    ("NaN duration", line(id="u2", duration=float("nan")), "finite duration"),
    ("infinite duration", line(id="u2", duration=float("inf")), "finite duration"),
    ("negative offset", line(id="u2", offset=-1.0), "offset >= 0"),
    ("NaN offset", line(id="u2", offset=float("nan")), "offset >= 0"),
    ("empty text", line(id="u2", text="  "), "empty transcript"),
    ("duplicate id", line(), "duplicate utterance id 'u1' (first on line 1)"),
]


@pytest.mark.parametrize("case, bad, words", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_line_names_file_and_line(tmp_path, case, bad, words):
    path = tmp_path / "m.jsonl"
    path.write_text(line() + "\n\n" + bad + "\n", encoding="utf-8")  # blank line 2 is skipped, bad is line 3
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:3" in str(e.value)
    assert words in str(e.value)


def test_missing_and_non_utf8_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(line().replace("hello", "caf\xe9").encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(tmp_path / "latin1.jsonl")


def test_audio_only_manifest_needs_require_text_false(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(line(text="") + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="empty transcript"):
        read_manifest(path)
    assert read_manifest(path, require_text=False)[0].text == ""


def test_round_trip(tmp_path):
    utts = [Utterance("a", str(tmp_path / "audio" / "a.wav"), "ক খ", "bn", "s1", 1.25),
            Utterance("b", "/elsewhere/b.wav", "x", "bn", "s2", 2.0, offset=3.5)]
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    recs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert recs[0]["audio"] == "audio/a.wav" and "offset" not in recs[0]  # portable, and no default noise
    assert recs[1]["audio"] == "/elsewhere/b.wav" and recs[1]["offset"] == 3.5
    assert "ক খ" in path.read_text(encoding="utf-8")  # not \\u-escaped
    assert read_manifest(path) == utts


def test_write_rejects_duplicates(tmp_path):
    u = Utterance("a", "/x.wav", "t", "en", "s", 1.0)
    with pytest.raises(ManifestError, match="duplicate"):
        write_manifest(tmp_path / "m.jsonl", [u, u])
    assert not (tmp_path / "m.jsonl").exists()


def _corpus(n=1200):
    # durations 1..10 s, cycling: about 1.8 hours in all
    return [Utterance(f"utt{i:04d}", f"/a/{i}.wav", "t", "bn", f"s{i % 7}", 1.0 + (i * 7) % 10) for i in range(n)]


def test_subset_hours_deterministic_nested_and_meets_budget():
    utts = _corpus()
    ten_min, one_hour = subset_hours(utts, 10 / 60), subset_hours(utts, 1.0)
    assert ten_min == subset_hours(list(reversed(utts)), 10 / 60)[::-1]  # order of the input does not matter
    assert {u.id for u in ten_min} <= {u.id for u in one_hour}
    for subset, hours in ((ten_min, 10 / 60), (one_hour, 1.0)):
        assert total_hours(subset) >= hours  # budget met...
        assert total_hours(subset) - max(u.duration for u in subset) / 3600 < hours  # ...by the last one taken
    assert subset_hours(utts, 1.0, seed=1) != one_hour
    assert subset_hours(utts, 100.0) == utts  # more than there is: everything, in manifest order
    with pytest.raises(ValueError):
        subset_hours(utts, 0)


def test_prep_report_summary_and_strict():
    report = PrepReport("train")
    report.kept = 5
    report.skip("a", "missing audio", "x.wav missing")
    report.skip("b", "missing audio", "y.wav missing")
    report.skip("c", "empty transcript", "c empty")
    report.note("resampled 8000->16000 Hz")
    assert report.summary() == ("train: kept 5 (0.00 h), skipped 3: missing audio x2, empty transcript x1; "
                                "notes: resampled 8000->16000 Hz x1")
    assert report.was_skipped("b") and not report.was_skipped("d")
    assert report.to_dict()["skipped"] == {"missing audio": 2, "empty transcript": 1}
    with pytest.raises(ManifestError, match="x.wav missing"):
        PrepReport("train", strict=True).skip("a", "missing audio", "x.wav missing")


# ------------------------------------------------------------------ too short for the features, CTC feasibility

def test_duration_below_the_minimum_names_the_line_and_utterance(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(line() + "\n" + line(id="click", duration=0.01) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:2" in str(e.value) and "'click'" in str(e.value) and "too short" in str(e.value)


def test_empty_manifest_refused_when_asked(tmp_path):
    from xlingual.corpus import EmptyManifestError

    path = tmp_path / "dev.jsonl"
    path.write_text("")
    assert read_manifest(path) == []  # callers that accept nothing (audio-only queries) still can
    with pytest.raises(EmptyManifestError, match=r"dev.jsonl: no utterances"):
        read_manifest(path, allow_empty=False)
    (tmp_path / "dev.report.json").write_text(json.dumps({"split": "dev", "kept": 0, "hours": 0, "skipped_total": 3,
                                                          "skipped": {"too short": 3}, "notes": {}}))
    with pytest.raises(EmptyManifestError, match=r"skipped 3.*too short x3"):  # the preparation's own account
        read_manifest(path, allow_empty=False)


def test_output_frames_match_the_features_and_the_model():
    import numpy as np
    import torch

    from xlingual.config import FeatureConfig
    from xlingual.corpus import MIN_DURATION_S, output_frames
    from xlingual.features import LogMel
    from xlingual.model import subsampled_lengths

    logmel = LogMel(FeatureConfig())
    for samples in (int(MIN_DURATION_S * 16000), 1601, 2399, 16000, 16123):
        frames = logmel(np.zeros(samples, dtype=np.float32)).shape[0]
        expected = int(subsampled_lengths(torch.tensor([frames]))[0])
        assert output_frames(samples / 16000) == expected
    assert output_frames(MIN_DURATION_S) >= 3  # the minimum leaves a few output frames


def test_ctc_feasible_agrees_with_torch_ctc_loss():
    import torch

    from xlingual.corpus import ctc_feasible

    rng = torch.Generator().manual_seed(0)
    for _ in range(200):
        n_labels = int(torch.randint(1, 7, (1,), generator=rng))
        labels = torch.randint(1, 3, (n_labels,), generator=rng)  # 2 symbols: plenty of repeats
        frames = int(torch.randint(1, 12, (1,), generator=rng))
        logp = torch.randn(frames, 1, 3, generator=rng).log_softmax(-1)
        loss = torch.nn.functional.ctc_loss(logp, labels[None], torch.tensor([frames]), torch.tensor([n_labels]),
                                            reduction="sum", zero_infinity=False)
        assert ctc_feasible(frames, labels.tolist()) == bool(torch.isfinite(loss)), (frames, labels.tolist())
    assert ctc_feasible(3, "ab") and not ctc_feasible(3, "aab") and ctc_feasible(4, "aab")
