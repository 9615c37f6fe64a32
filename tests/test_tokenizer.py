import pytest

from xlingual.tokenizer import BLANK, WORD_SEP, Tokenizer, UnitError, split_phones

TEXTS = [("merhaba dünya", "tr"), ("ılık su", "tr"), ("dünya su", "tr")] * 20


@pytest.mark.parametrize("ipa, expected", [
    ("ab", ["a", "b"]),
    ("aː b", ["aː", "|", "b"]),
    ("tʰa", ["tʰ", "a"]),
    ("ã", ["ã"]),  # a + combining tilde
    ("ʃ ʒ", ["ʃ", "|", "ʒ"]),
])
def test_split_phones(ipa, expected):
    assert split_phones(ipa) == expected


@pytest.mark.parametrize("kind", ["char", "spm"])
def test_round_trip(kind):
    tok = Tokenizer.build(kind, TEXTS, spm_vocab=24)
    assert tok.units[:2] == [BLANK, WORD_SEP]
    for text, _ in TEXTS[:3]:
        ids = tok.encode(text)
        assert 0 not in ids and tok.decode(ids) == text
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.units == tok.units and again.encode("su dünya") == tok.encode("su dünya")


def test_char_units_are_deterministic_and_sorted():
    a, b = Tokenizer.build("char", TEXTS), Tokenizer.build("char", list(reversed(TEXTS)))
    assert a.units == b.units and a.units[2:] == sorted(a.units[2:])


def test_unseen_character_names_the_utterance():
    tok = Tokenizer.build("char", TEXTS)
    with pytest.raises(UnitError, match=r"utterance 'x1'.*\['q'\]"):
        tok.encode("qu", where="utterance 'x1'")


def test_ipa_units_from_espeak():
    tok = Tokenizer.build("ipa", [("merhaba", "tr"), ("su", "tr")])
    units = tok.to_units("merhaba su", "tr")
    assert units and " " in units
    assert tok.decode(tok.encode(units)) == units


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown unit kind"):
        Tokenizer("bpe", [BLANK, WORD_SEP])
