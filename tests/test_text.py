"""Transcript normalization: (language, input, expected) tables and property tests."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlingual.text import (NORMALIZERS, TextError, base_language, fix_bengali_nukta, language_name, normalize,
                           normalize_or_raise, normalizer, remove_punctuation, turkic_lowercase)

YA, NUKTA, YYA = "\u09af", "\u09bc", "\u09df"  # য, ়, য়
DDA, RRA, DDHA, RHA = "\u09a1", "\u09dc", "\u09a2", "\u09dd"  # ড ড় ঢ ঢ়

CASES = [
    # Bengali script: NFC decomposes য় ড় ঢ় (composition exclusions); the normalizer recomposes them
    ("bn", f"অসমী{YA}{NUKTA}া", f"অসমী{YYA}া"),
    ("as", f"অসমী{YA}{NUKTA}া", f"অসমী{YYA}া"),
    ("bn", f"অসমী{YYA}া", f"অসমী{YYA}া"),  # already precomposed: NFC would decompose, the fix restores
    ("bn", f"পা{DDA}{NUKTA}", f"পা{RRA}"),
    ("as", f"আষা{DDHA}{NUKTA}", f"আষা{RHA}"),
    ("bn", "আমার সোনার বাংলা।", "আমার সোনার বাংলা"),  # danda is punctuation
    ("bn", "বাংলা ১২৩", "বাংলা ১২৩"),  # Bengali digits kept
    ("hi", "नमस्ते, भारत॥", "नमस्ते भारत"),
    ("hi", "\u095b", "\u091c\u093c"),  # Devanagari nukta letters stay NFC (decomposed): eSpeak hi reads both
    # Turkish / Azerbaijani: dotted and dotless i
    ("tr", "İSTANBUL'DA IŞIK", "istanbulda ışık"),
    ("tr", "Iğdır ılık İzmir", "ığdır ılık izmir"),
    ("tr-TR", "KIRIK", "kırık"),
    ("az", "İLHAM Işıq", "ilham ışıq"),
    ("tr", "I\u0307stanbul", "istanbul"),  # I + combining dot above is İ after NFC
    # elsewhere plain lowercasing; capital dotted I (a Turkish name) becomes plain i
    ("en", "KIRIK", "kirik"),
    ("en", "İstanbul", "istanbul"),
    ("de", "Straße", "straße"),  # lower, not casefold
    # punctuation and symbols
    ("en", "Hello, World!!", "hello world"),
    ("en", "U.S.A. $100 – 50%", "u s a 100 50"),
    ("en", "don't", "dont"),
    ("en", "a+b=c", "a b c"),
    ("en", "«quoted» (text) [x]", "quoted text x"),
    ("uz", "Oʻzbekiston", "oʻzbekiston"),  # U+02BB is a letter (Lm)
    ("th", "สวัสดี ครับ!", "สวัสดี ครับ"),  # Thai marks kept, no segmentation added
    ("th", "ภาษาไทยๆ", "ภาษาไทยๆ"),  # mai yamok is a letter (Lm)
    # Unicode hygiene
    ("en", "e\u0301te\u0301", "été"),  # NFC
    ("en", "soft\u00adhyphen", "softhyphen"),  # Cf dropped
    ("fa", "می\u200cخواهم", "می\u200cخواهم"),  # ZWNJ kept
    ("en", "\ufeffbom", "bom"),
    ("en", "e'\u0301", "é"),  # deleting the apostrophe joins e + acute: NFC runs again afterwards
    # whitespace
    ("en", "  many\t\nspaces   here ", "many spaces here"),
    ("en", "!!!", ""),
    ("en", "", ""),
]


@pytest.mark.parametrize("language, text, expected", CASES)
def test_normalize(language: str, text: str, expected: str) -> None:
    assert normalize(text, language) == expected


@pytest.mark.parametrize("language, key", [("bn", "bn"), ("tr-TR", "tr"), ("az_Latn", "az"), ("xx", "default"),
                                           ("TH", "default")])
def test_normalizer_lookup(language: str, key: str) -> None:
    assert normalizer(language) is NORMALIZERS[key]


@pytest.mark.parametrize("code, base", [("tr-TR", "tr"), ("az_Latn", "az"), (" BN ", "bn"), ("as", "as")])
def test_base_language(code: str, base: str) -> None:
    assert base_language(code) == base


@pytest.mark.parametrize("transform, text, expected", [
    (turkic_lowercase, "DİYARBAKIR", "diyarbakır"),
    (fix_bengali_nukta, f"{YA}{NUKTA}{DDA}{NUKTA}{DDHA}{NUKTA}", f"{YYA}{RRA}{RHA}"),
    (remove_punctuation, "a,b", "a b"),
])
def test_transforms(transform, text: str, expected: str) -> None:
    assert transform(text) == expected


def test_normalize_or_raise_passes_good_text() -> None:
    assert normalize_or_raise("Merhaba, DÜNYA!", "tr", "x.tsv:1") == "merhaba dünya"


@pytest.mark.parametrize("text, message", [("?!", "empty after normalization"), (None, "must be a string"),
                                           (3, "must be a string")])
def test_normalize_or_raise_errors(text, message: str) -> None:
    with pytest.raises(TextError, match=message) as info:
        normalize_or_raise(text, "bn", "train.tsv line 12")
    assert "train.tsv line 12" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("code, name", [("bn", "Bangla"), ("as", "Assamese"), ("tr", "Turkish"), ("qqq", "qqq")])
def test_language_name(code: str, name: str) -> None:
    assert language_name(code) == name


# Text drawn from the characters that exercise the rules, plus arbitrary Unicode.
_SPECIAL = list("Iİıi'’.,!?-–()[]«» \t\n\u00ad\u200c\u200d\ufeff\u0301\u0307") + [
    YA, NUKTA, YYA, DDA, RRA, DDHA, RHA, "\u09be", "\u09c7", "\u0995", "ক্ষ", "\u0e2a", "\u0e31", "\u0e46",
    "\u095b", "\u093c", "e", "A", "1", "১"]
TEXTS = st.one_of(st.text(), st.lists(st.sampled_from(_SPECIAL)).map("".join),
                  st.lists(st.one_of(st.sampled_from(_SPECIAL), st.characters())).map("".join))
LANGUAGES = ["en", "tr", "az", "bn", "as", "th", "hi", "fa"]


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, language=st.sampled_from(LANGUAGES))
def test_normalize_is_idempotent(text: str, language: str) -> None:
    once = normalize(text, language)
    assert normalize(once, language) == once


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, language=st.sampled_from(LANGUAGES))
def test_normalized_spacing_and_content(text: str, language: str) -> None:
    out = normalize(text, language)
    assert out == out.strip()
    assert "  " not in out and "\t" not in out and "\n" not in out
    for c in out:
        assert unicodedata.category(c)[0] not in "PS", f"punctuation/symbol {c!r} left in {out!r}"
    if language in ("bn", "as"):
        assert YA + NUKTA not in out and DDA + NUKTA not in out and DDHA + NUKTA not in out
