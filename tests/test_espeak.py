"""eSpeak NG wrapper: synthesis, IPA, voices, errors, reproducibility, and the Bengali-script nukta fix."""

from __future__ import annotations

import numpy as np
import pytest

from xlingual import espeak
from xlingual.text import normalize

SENTENCES = [
    ("bn", "আমার সোনার বাংলা আমি তোমায় ভালোবাসি"),
    ("as", "অসমীয়া ভাষা আৰু সাহিত্য"),
    ("th", "ภาษาไทย สวัสดี ประเทศไทย"),
    ("tr", "merhaba dünya istanbul ankara"),
    ("hi", "नमस्ते भारत"),
    ("az", "salam dünya bakı"),
]


@pytest.mark.parametrize("voice, text", SENTENCES)
def test_synthesize_gives_speech(voice: str, text: str) -> None:
    wav, sr = espeak.synthesize(normalize(text, voice), voice)
    assert sr == espeak.ESPEAK_RATE == 22050
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.5 < len(wav) / sr < 6.0  # a handful of words
    assert np.sqrt(np.mean(wav ** 2)) > 0.02 and np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("voice, text", SENTENCES)
def test_phonemize_gives_ipa_words(voice: str, text: str) -> None:
    ipa = espeak.phonemize(normalize(text, voice), voice)
    assert ipa and ipa == ipa.strip() and "  " not in ipa
    assert "(" not in ipa  # language-switch markers removed
    if voice != "th":  # Thai is unspaced: eSpeak splits phrases its own way
        assert len(ipa.split()) == len(text.split())


@pytest.mark.parametrize("text, voice, expected", [
    ("hello world", "en", "həlˈəʊ wˈɜːld"),
    ("merhaba", "tr", "mˈɛrhaba"),
])
def test_phonemize_known(text: str, voice: str, expected: str) -> None:
    assert espeak.phonemize(text, voice) == expected


def test_phonemize_several_clauses() -> None:
    # espeak_TextToPhonemes returns one clause per call: all of them must come back
    assert len(espeak.phonemize("one, two. three; four", "en").split()) == 4


@pytest.mark.parametrize("variant", ["m3", "f2", "klatt", "Mr serious"])
def test_variants_and_parameters_change_audio(variant: str) -> None:
    base, _ = espeak.synthesize("merhaba dünya", "tr")
    varied, _ = espeak.synthesize("merhaba dünya", "tr", variant)
    assert not np.array_equal(base, varied)
    slow, _ = espeak.synthesize("merhaba dünya", "tr", variant, rate=100)
    fast, _ = espeak.synthesize("merhaba dünya", "tr", variant, rate=300)
    assert len(slow) > 1.5 * len(fast)


@pytest.mark.parametrize("variant", [None, "m3", "f2", "klatt"])  # f2 is breathy (noise), klatt another engine
def test_synthesis_is_reproducible_whatever_ran_before(variant) -> None:
    first, _ = espeak.synthesize("আমার সোনার বাংলা", "bn", variant, seed=7)
    again, _ = espeak.synthesize("আমার সোনার বাংলা", "bn", variant, seed=7)
    espeak.synthesize("merhaba dünya", "tr", "f5", rate=300, pitch=90, seed=1)
    after_other, _ = espeak.synthesize("আমার সোনার বাংলা", "bn", variant, seed=7)
    assert np.array_equal(first, again) and np.array_equal(first, after_other)


def test_seed_drives_breath_noise() -> None:
    a, _ = espeak.synthesize("আমার সোনার বাংলা", "bn", "f2", seed=1)
    b, _ = espeak.synthesize("আমার সোনার বাংলা", "bn", "f2", seed=2)
    assert len(a) == len(b) and not np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(voice="xx"), r"unknown eSpeak NG voice 'xx'.*list_voices\(\)"),
    (dict(voice="lo"), r"unknown eSpeak NG voice 'lo'"),  # Lao: not in eSpeak NG
    (dict(variant="nosuch"), r"unknown eSpeak NG voice variant 'nosuch'.*list_variants\(\)"),
    (dict(rate=20), "rate must be in 80..450"),
    (dict(pitch=101), "pitch must be in 0..100"),
    (dict(pitch_range=-1), "pitch_range must be in 0..100"),
    (dict(text=" "), "nothing to synthesize"),
])
def test_synthesize_errors(kwargs: dict, message: str) -> None:
    args = dict(text="merhaba", voice="tr") | kwargs
    with pytest.raises(ValueError, match=message):
        espeak.synthesize(**args)


def test_phonemize_unknown_voice() -> None:
    with pytest.raises(ValueError, match="unknown eSpeak NG voice 'qq'"):
        espeak.phonemize("text", "qq")


@pytest.mark.parametrize("code, present", [("bn", True), ("as", True), ("th", True), ("tr", True), ("hi", True),
                                           ("az", True), ("BN", True), ("en-us", True), ("lo", False),
                                           ("xx", False)])
def test_has_voice(code: str, present: bool) -> None:
    assert espeak.has_voice(code) is present


def test_listings() -> None:
    voices = espeak.list_voices()
    assert voices["bn"] == "Bengali" and len(voices) > 100
    variants = espeak.list_variants()
    assert {"m1", "m3", "f2", "klatt"} <= set(variants) and variants == sorted(variants)
    assert espeak.version().count(".") >= 1 and espeak.sample_rate() == 22050


# Bengali/Assamese CLDR text spells য় as য + nukta (Unicode composition exclusion). Decomposed, eSpeak NG's as
# rules spell the word letter by letter and bn drops the syllable after it; xlingual.text recomposes it.
DECOMPOSED = "অসমী\u09af\u09bcা"  # অসমীয়া with য + ়


@pytest.mark.parametrize("voice", ["bn", "as"])
def test_nukta_fix_pronunciation(voice: str) -> None:
    fixed = normalize(DECOMPOSED, voice)
    assert "\u09df" in fixed
    raw_ipa, fixed_ipa = espeak.phonemize(DECOMPOSED, voice), espeak.phonemize(fixed, voice)
    assert len(fixed_ipa.split()) == 1 and fixed_ipa.endswith("a")  # -ia: the য়া syllable is spoken
    raw_wav, _ = espeak.synthesize(DECOMPOSED, voice)
    fixed_wav, _ = espeak.synthesize(fixed, voice)
    if voice == "as":  # spelled out: several words, several times longer
        assert len(raw_ipa.split()) > 3 and len(raw_wav) > 3 * len(fixed_wav)
    else:  # syllable dropped: shorter
        assert not raw_ipa.endswith("a") and len(raw_wav) < len(fixed_wav)
