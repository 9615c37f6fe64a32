"""The embedded synthetic corpus: a tiny two-language corpus, checked for layout, disjointness, determinism,
resumability, channel options and budgets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import synthetic
from data_prep.synthetic import (LANGUAGES, SPLITS, prepare_synthetic, resolve_language, speakers, speech_power,
                                 split_variants, telephone_channel, vocabulary)
from xlingual.audio import SAMPLE_RATE, load_audio
from xlingual.corpus import read_manifest
from xlingual.text import normalize

TINY = {split: 20 / 3600 for split in SPLITS}  # about 20 audio-seconds per split
LANGS = ("bn", "tr")


def _files(root: Path) -> dict[str, bytes]:
    """Every output file under root (manifests, audio, markers) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "a"
    return root, prepare_synthetic(root, languages=LANGS, hours=TINY, seed=3, jobs=1, progress=False)


def test_layout_and_manifests(corpus) -> None:
    root, manifests = corpus
    assert set(manifests) == set(LANGS)
    for lang in LANGS:
        assert set(manifests[lang]) == set(SPLITS)
        for split, path in manifests[lang].items():
            assert path == root / lang / f"{split}.jsonl"
            assert (root / lang / f"{split}.done.json").is_file()
            utts = read_manifest(path)
            assert utts
            for u in utts:
                assert u.language == lang and u.id.startswith(f"{lang}-{split}-")
                assert Path(u.audio) == (root / lang / "wav" / split / f"{u.id}.wav").resolve()
                info = sf.info(u.audio)
                assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16"
                assert u.duration == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-3)
                assert normalize(u.text, lang) == u.text and 3 <= len(u.text.split()) <= 8
                assert u.speaker.startswith(f"{lang}+") and " " not in u.speaker
            wav = load_audio(utts[0].audio)
            assert np.sqrt(np.mean(wav ** 2)) > 0.01  # speech, not silence
            # audio paths are stored relative to the manifest: the corpus folder can move
            first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
            assert first["audio"] == f"wav/{split}/{first['id']}.wav"


def test_hours_budget_met(corpus) -> None:
    _, manifests = corpus
    for lang in LANGS:
        for split, path in manifests[lang].items():
            utts = read_manifest(path)
            total = sum(u.duration for u in utts)
            budget = TINY[split] * 3600
            # filled until the budget is reached: over by less than the last utterance
            assert budget <= total < budget + utts[-1].duration
            assert len(list(Path(utts[0].audio).parent.glob("*.wav"))) == len(utts)  # no surplus renders


def test_splits_disjoint_in_sentences_and_speakers(corpus) -> None:
    _, manifests = corpus
    for lang in LANGS:
        texts = {s: [u.text for u in read_manifest(p)] for s, p in manifests[lang].items()}
        spk = {s: {u.speaker for u in read_manifest(p)} for s, p in manifests[lang].items()}
        for split in SPLITS:
            assert len(set(texts[split])) == len(texts[split])  # unique within a split
        for a, b in [("train", "dev"), ("train", "test"), ("dev", "test")]:
            assert not set(texts[a]) & set(texts[b])
            assert not spk[a] & spk[b]


def test_deterministic_across_runs_and_worker_counts(corpus) -> None:
    root, _ = corpus
    other = root.parent / "b"
    prepare_synthetic(other, languages=LANGS, hours=TINY, seed=3, jobs=2, progress=False)
    ours, theirs = _files(root), _files(other)
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, f"not bit-identical: {different[:5]}"


def test_rerun_skips_and_changed_config_regenerates(corpus, tmp_path, capsys) -> None:
    root = tmp_path / "c"
    hours = {"dev": 10 / 3600, "test": 10 / 3600}
    prepare_synthetic(root, languages=("tr",), hours=hours, seed=0, jobs=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    prepare_synthetic(root, languages=("tr",), hours=hours, seed=0, jobs=1, progress=True)
    assert "tr/dev is up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    old_dev = (root / "tr" / "dev.jsonl").read_text(encoding="utf-8")
    old_test = (root / "tr" / "test.jsonl").read_bytes()
    prepare_synthetic(root, languages=("tr",), hours={"dev": 10 / 3600, "test": 10 / 3600}, seed=1, jobs=1,
                      progress=False)
    assert (root / "tr" / "dev.jsonl").read_text(encoding="utf-8") != old_dev
    assert (root / "tr" / "test.jsonl").read_bytes() != old_test
    marker = json.loads((root / "tr" / "dev.done.json").read_text(encoding="utf-8"))
    assert marker["config"]["seed"] == 1 and marker["utterances"] == len(read_manifest(root / "tr" / "dev.jsonl"))


def test_interrupted_run_leaves_nothing_half_done(tmp_path, monkeypatch) -> None:
    root = tmp_path / "d"
    hours = {"dev": 10 / 3600}
    calls = {"n": 0}
    render = synthetic._render

    def dying_render(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-split
        return render(job)

    monkeypatch.setattr(synthetic, "_render", dying_render)
    with pytest.raises(KeyboardInterrupt):
        prepare_synthetic(root, languages=("tr",), hours=hours, jobs=1, progress=False)
    assert not (root / "tr" / "dev.jsonl").exists() and not (root / "tr" / "dev.done.json").exists()
    monkeypatch.setattr(synthetic, "_render", render)
    manifests = prepare_synthetic(root, languages=("tr",), hours=hours, jobs=1, progress=False)
    utts = read_manifest(manifests["tr"]["dev"])
    assert sum(u.duration for u in utts) >= 10


def test_noise_and_telephone_change_audio(corpus, tmp_path) -> None:
    root, _ = corpus
    hours = {"test": 20 / 3600}
    clean = read_manifest(root / "tr" / "test.jsonl")
    noisy = read_manifest(prepare_synthetic(tmp_path / "n", languages=("tr",), hours=hours, seed=3, noise_snr=10,
                                            jobs=1, progress=False)["tr"]["test"])
    phone = read_manifest(prepare_synthetic(tmp_path / "t", languages=("tr",), hours=hours, seed=3,
                                            telephone=True, jobs=1, progress=False)["tr"]["test"])
    assert [u.text for u in noisy] == [u.text for u in phone] == [u.text for u in clean]  # same sentences
    for c, n, t in zip(clean[:3], noisy, phone):
        x, y, z = load_audio(c.audio), load_audio(n.audio), load_audio(t.audio)
        assert len(x) == len(y) == len(z)
        snr = 10 * np.log10(speech_power(x) / np.mean((y - x) ** 2))
        assert 8.5 < snr < 11.5  # pink noise at 10 dB (16-bit rounding aside)
        spectrum = np.abs(np.fft.rfft(z)) ** 2
        freqs = np.fft.rfftfreq(len(z), 1 / SAMPLE_RATE)
        assert spectrum[freqs > 4200].sum() < 1e-3 * spectrum.sum()  # nothing above the 8 kHz Nyquist
        assert not np.array_equal(x, z)


def test_telephone_channel_band() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tones = {f: (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (100, 1000, 6000)}
    gain = {f: np.sqrt(np.mean(telephone_channel(x)[800:] ** 2) / np.mean(x ** 2)) for f, x in tones.items()}
    assert 0.8 < gain[1000] < 1.2 and gain[100] < 0.2 and gain[6000] < 0.01


@pytest.mark.parametrize("code", list(LANGUAGES))
def test_every_listed_language_has_a_vocabulary(code: str) -> None:
    words = vocabulary(code)
    assert 1000 <= len(words) <= 2100 and words == sorted(set(words))
    assert all(normalize(w, code) == w and not any(c.isdigit() for c in w) for w in words)


def test_speakers_disjoint_between_splits() -> None:
    variants = split_variants()
    assert all(variants[s] for s in SPLITS)
    assert not (set(variants["train"]) & set(variants["dev"]) or set(variants["train"]) & set(variants["test"])
                or set(variants["dev"]) & set(variants["test"]))
    ids = {s: {spk.id for spk in speakers("bn", s)} for s in SPLITS}
    assert len(ids["test"]) == len(variants["test"]) * 18  # 3 pitches x 3 rates x 2 ranges


@pytest.mark.parametrize("code, message", [
    ("lo", "eSpeak NG has no voice 'lo'"),  # Lao: CLDR yes, eSpeak no
    ("qqq", "CLDR .* has no locale 'qqq'"),
])
def test_unusable_language(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_language(code)


def test_unlisted_language_with_both_resources() -> None:
    assert resolve_language("gu").voice == "gu"  # Gujarati: not in LANGUAGES, eSpeak and CLDR both have it


@pytest.mark.parametrize("kwargs, message", [
    (dict(hours={"train": 0}), "must be a positive number"),
    (dict(hours={"eval": 1.0}), "hours must map splits"),
    (dict(seed=-1), "non-negative integer"),
    (dict(jobs=0), "positive integer"),
    (dict(languages=()), "no languages"),
    (dict(languages=("lo",)), "cannot synthesise language 'lo'"),
])
def test_bad_arguments(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_synthetic(tmp_path, **(dict(languages=("tr",), progress=False) | kwargs))


def test_mismatched_settings_are_refused_without_overwrite(tmp_path):
    hours = {"train": 0.003, "dev": 0.002}
    prepare_synthetic(tmp_path, languages=("tr",), hours=hours, progress=False, jobs=1)
    with pytest.raises(ValueError, match="generated with other settings"):
        prepare_synthetic(tmp_path, languages=("tr",), hours={"train": 0.004, "dev": 0.002}, progress=False,
                          jobs=1, overwrite=False)
    # the same settings are simply reused
    prepare_synthetic(tmp_path, languages=("tr",), hours=hours, progress=False, jobs=1, overwrite=False)


def test_control_corpus_has_no_shared_word_forms(tmp_path) -> None:
    """Bengali and Assamese share many CLDR proper nouns (spelled alike, or said alike): the control corpus keeps
    none of them, in any split, and still has enough words."""
    from data_prep.synthetic import shared_word_forms, vocabulary

    shared = shared_word_forms(("bn", "as"))
    assert len(shared["bn"]) > 100 and len(shared["as"]) > 100  # the confound is real
    assert set(vocabulary("bn")) & set(vocabulary("as")) <= shared["bn"] & shared["as"]
    prepare_synthetic(tmp_path, languages=("bn",), hours={"train": 0.005, "test": 0.002}, progress=False,
                      exclude_shared=("bn", "as"))
    words = {w for split in ("train", "test") for u in read_manifest(tmp_path / "bn" / f"{split}.jsonl")
             for w in u.text.split()}
    assert words and not words & shared["bn"]
    marker = json.loads((tmp_path / "bn" / "train.done.json").read_text())
    full = hashlib.sha1("\n".join(vocabulary("bn")).encode()).hexdigest()
    assert marker["config"]["vocabulary_sha1"] != full  # another vocabulary: never mistaken for the full corpus
