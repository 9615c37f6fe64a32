"""Transcript normalization per language: small named transforms composed into one pipeline per language.

A transform is a plain `str -> str` function (jiwer style); NORMALIZERS maps a language code to its list of
transforms, and languages without an entry use NORMALIZERS["default"]. Languages differ only in the few
transforms listed here (casing rules, script fixes); everything else is shared.

The output is what every stage compares: manifests store normalized text, WER is computed on it, and the
synthetic corpus feeds it to eSpeak NG. normalize() is idempotent.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Callable

Transform = Callable[[str], str]

# Apostrophes inside words are deleted rather than turned into spaces: Turkish "Ankara'da" is one word, and so is
# "O'zbekiston". (Modifier-letter apostrophes such as U+02BB/U+02BC are letters (Lm) and are kept as they are.)
APOSTROPHES = "'\u2019\u2018\u0060\u00b4"
# Format characters that carry meaning in Indic and Persian orthography: zero-width non-joiner and joiner.
KEEP_FORMAT = "\u200c\u200d"
# Bengali-script letters with nukta whose precomposed code points are Unicode composition exclusions: NFC turns
# them into base + U+09BC, and CLDR spells them that way. eSpeak NG reads the decomposed pair wrongly (bn drops
# the syllable, as spells out the letters), so they are recomposed after NFC.
BENGALI_NUKTA = {
    "\u09af\u09bc": "\u09df",  # য + ় -> য়  (YYA)
    "\u09a1\u09bc": "\u09dc",  # ড + ় -> ড়  (RRA)
    "\u09a2\u09bc": "\u09dd",  # ঢ + ় -> ঢ়  (RHA)
}
_WHITESPACE = re.compile(r"\s+")


class TextError(ValueError):
    """Text that cannot be used as a transcript; the message says where it came from."""


def nfc(text: str) -> str:
    """Unicode canonical composition (NFC), so that visually equal strings compare equal."""
    return unicodedata.normalize("NFC", text)


def lowercase(text: str) -> str:
    """Lowercase for languages without special casing rules.

    Capital dotted I (U+0130, e.g. a Turkish name inside other text) becomes plain 'i' rather than Python's
    'i' + combining dot above, which would be an odd token in any non-Turkic transcript.
    """
    return text.replace("\u0130", "i").lower()


def turkic_lowercase(text: str) -> str:
    """Turkish/Azerbaijani lowercasing: 'I' -> 'ı' (dotless) and 'İ' -> 'i' (dotted), then the usual rules."""
    return text.replace("I", "\u0131").replace("\u0130", "i").lower()


def fix_bengali_nukta(text: str) -> str:
    """Recompose Bengali-script nukta letters (য় ড় ঢ়) that NFC decomposes; see BENGALI_NUKTA.

    Deliberately leaves the text outside NFC for these three letters: that is the form eSpeak NG reads right.
    """
    for decomposed, composed in BENGALI_NUKTA.items():
        text = text.replace(decomposed, composed)
    return text


def remove_format_controls(text: str) -> str:
    """Drop invisible format characters (category Cf: BOM, soft hyphen, bidi marks) except ZWNJ/ZWJ."""
    return "".join(c for c in text if c in KEEP_FORMAT or unicodedata.category(c) != "Cf")


def remove_punctuation(text: str) -> str:
    """Replace punctuation (P*) and symbols (S*) with spaces; apostrophes are deleted (word-internal).

    Letters (L*), combining marks (M*) and numbers (N*: digits are kept) are untouched, as are separators.
    Other controls (Cc, e.g. tabs) become spaces too.
    """
    out = []
    for c in text:
        if c in APOSTROPHES:
            continue
        cat = unicodedata.category(c)
        out.append(" " if cat[0] in "PS" or cat == "Cc" else c)
    return "".join(out)


def collapse_whitespace(text: str) -> str:
    """One space between words, none at either end."""
    return _WHITESPACE.sub(" ", text).strip()


# NFC runs twice: first so that casing sees composed letters ('I' + U+0307 is 'İ'), last because deleting an
# apostrophe or format character can bring a base letter and a combining mark together. The nukta fix must come
# after the last NFC, which is what decomposes those letters.
DEFAULT = [nfc, remove_format_controls, lowercase, remove_punctuation, nfc, collapse_whitespace]
TURKIC = [nfc, remove_format_controls, turkic_lowercase, remove_punctuation, nfc, collapse_whitespace]
BENGALI_SCRIPT = [nfc, remove_format_controls, lowercase, remove_punctuation, nfc, fix_bengali_nukta,
                  collapse_whitespace]

# Language code (ISO 639-1 where there is one, lowercase) -> transforms applied in order. Thai (and Lao) write
# no spaces between words: nothing here segments them, so words are whatever units the source text delimits.
NORMALIZERS: dict[str, list[Transform]] = {
    "default": DEFAULT,
    "tr": TURKIC,
    "az": TURKIC,
    "bn": BENGALI_SCRIPT,
    "as": BENGALI_SCRIPT,
    "bpy": BENGALI_SCRIPT,  # Bishnupriya Manipuri, also written in Bengali script
}


def base_language(language: str) -> str:
    """'tr-TR', 'az_Latn' -> 'tr', 'az': the key NORMALIZERS is indexed by."""
    return re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()


# BCP 47's shape: a primary subtag of 2-8 letters ("bn", "fil", "unknown"), then optional subtags ("tr-TR",
# "az_Latn", "pt-BR"). Codes name folders and select normalizers, so nothing else is accepted.
_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")


def check_language_code(code: object) -> str:
    """Return `code` if it has the shape of a language code ('bn', 'tr-TR', 'az_Latn'); else raise TextError."""
    if not isinstance(code, str) or not _LANGUAGE_CODE.fullmatch(code):
        raise TextError(f"language code {code!r} is not a language code such as 'bn', 'tr' or 'pt-BR' (2-8 "
                        f"letters, then optional -subtags); pass --language with the corpus's language")
    return code


def generic_normalization_note(language: str) -> str | None:
    """One line saying that `language` has no entry in NORMALIZERS (so the generic one is used); None if it has."""
    if base_language(language) in NORMALIZERS:
        return None
    name = language_name(language)
    known = f" ({name})" if name != language else " (a code CLDR does not know)"
    return (f"language {language!r}{known} has no entry in xlingual.text.NORMALIZERS: its transcripts get the "
            f"generic normalization (NFC, lowercase, punctuation and symbols removed, spaces collapsed); add an "
            f"entry there if the language needs its own rules (casing, script fixes)")


_warned: set[str] = set()


def warn_generic_normalization(language: str) -> None:
    """Log generic_normalization_note(language) as a warning, once per process and language."""
    note = generic_normalization_note(language)
    if note and language not in _warned:
        _warned.add(language)
        logging.getLogger(__name__).warning("%s", note)


def normalizer(language: str) -> list[Transform]:
    """The transforms used for `language` (its own entry, else the default)."""
    return NORMALIZERS.get(base_language(language), NORMALIZERS["default"])


def normalize(text: str, language: str) -> str:
    """Normalize a transcript for `language`: NFC, casing, no punctuation/symbols, single spaces.

    Args:
        text: raw transcript.
        language: language code such as 'bn', 'tr', 'tr-TR'.
    Returns:
        the normalized text; may be empty (e.g. for punctuation-only input).
    """
    for transform in normalizer(language):
        text = transform(text)
    return text


def normalize_or_raise(text: object, language: str, where: str) -> str:
    """normalize(), but raise TextError naming `where` (e.g. 'train.tsv line 12') for unusable text.

    Raises:
        TextError: `text` is not a str, or nothing is left after normalization.
    """
    if not isinstance(text, str):
        raise TextError(f"{where}: transcript must be a string, got {type(text).__name__} {text!r}")
    result = normalize(text, language)
    if not result:
        raise TextError(f"{where}: transcript {text[:80]!r} is empty after normalization for language "
                        f"{language!r}; remove the utterance or fix its text")
    return result


def language_name(code: str) -> str:
    """English name of a language code from CLDR ('bn' -> 'Bangla', 'as' -> 'Assamese'); the code if unknown."""
    try:
        from babel import Locale, UnknownLocaleError
    except ImportError:
        return code
    try:
        return Locale.parse(code.replace("-", "_")).english_name or code
    except (UnknownLocaleError, ValueError):
        return code
