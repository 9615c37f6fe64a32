"""Output units: characters, SentencePiece pieces, or IPA phones; saved inside every checkpoint.

Index 0 is the CTC blank and index 1 the word boundary "|" (a space in the text), so torchaudio's ctc_decoder can
use the same token list. IPA units come from eSpeak NG's phonemizer and form a unit set that can be shared across
languages, which lets a transferred model keep its output layer.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass, field

BLANK = "<blank>"
WORD_SEP = "|"  # stands for a space between words
KINDS = ("char", "spm", "ipa")


class UnitError(ValueError):
    """Text that the unit set cannot represent (e.g. characters unseen when the tokenizer was built)."""


def split_phones(ipa: str) -> list[str]:
    """IPA string -> phone units; combining marks, length marks and modifier letters join the previous symbol."""
    units: list[str] = []
    for ch in ipa:
        if ch == " ":
            units.append(WORD_SEP)
        elif units and units[-1] != WORD_SEP and (unicodedata.combining(ch) or unicodedata.category(ch) == "Lm"):
            units[-1] += ch
        else:
            units.append(ch)
    return units


@dataclass
class Tokenizer:
    kind: str  # "char", "spm" or "ipa"
    units: list[str]  # index -> unit; units[0] = BLANK, units[1] = WORD_SEP (for spm: pieces follow)
    spm_model: bytes | None = None  # serialized SentencePiece model for kind "spm"
    _index: dict = field(default_factory=dict, repr=False, compare=False)
    _sp: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit kind {self.kind!r}; choose one of {KINDS}")
        self._index = {u: i for i, u in enumerate(self.units)}
        if self.kind == "spm":
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_proto=self.spm_model)

    @property
    def vocab_size(self) -> int:
        return len(self.units)

    # -- building ---------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, kind: str, texts: list[tuple[str, str]], spm_vocab: int = 128) -> "Tokenizer":
        """Unit set from (normalized text, language) pairs, e.g. a training manifest."""
        if kind == "spm":
            import sentencepiece as spm

            model = io.BytesIO()
            sentences = [t for t, _ in texts]
            n_chars = len(set("".join(sentences)))
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, vocab_size=max(spm_vocab, n_chars + 4),
                model_type="unigram", character_coverage=1.0, hard_vocab_limit=False, bos_id=-1, eos_id=-1,
                unk_id=0, minloglevel=2, num_threads=1)  # one thread: the same corpus always gives the same model
            proto = model.getvalue()
            sp = spm.SentencePieceProcessor(model_proto=proto)
            pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
            # units: blank, "|", then every piece (piece i -> index i + 2); "<unk>" is piece 0
            return cls("spm", [BLANK, WORD_SEP] + pieces, proto)
        tok = cls(kind, [BLANK, WORD_SEP])
        seen = set()
        for text, lang in texts:
            seen.update(tok.split(tok.to_units(text, lang)))
        seen.discard(WORD_SEP)
        return cls(kind, [BLANK, WORD_SEP] + sorted(seen))

    # -- text <-> units ---------------------------------------------------------------------------------------
    def to_units(self, text: str, language: str) -> str:
        """The string that is modelled and scored: the text itself, or its IPA transcription for "ipa"."""
        if self.kind != "ipa":
            return text
        from .espeak import phonemize

        # stress marks are dropped: they would double the phone inventory and are not shared across languages
        ipa = phonemize(text, language).replace("ˈ", "").replace("ˌ", "")
        return " ".join(ipa.split())

    def split(self, unit_text: str) -> list[str]:
        if self.kind == "ipa":
            return split_phones(unit_text)
        return [WORD_SEP if c == " " else c for c in unit_text]

    def encode(self, unit_text: str, where: str = "", strict: bool = True) -> list[int]:
        """Unit string (output of to_units) -> ids; raises UnitError naming `where` for unseen units.

        strict=False drops unseen units instead (for dev/test loss: the model cannot emit them anyway, and the
        error rate is still computed against the full reference text).
        """
        if self.kind == "spm":
            return [i + 2 for i in self._sp.encode(unit_text)]
        ids, unknown = [], []
        for u in self.split(unit_text):
            i = self._index.get(u)
            if i is None:
                unknown.append(u)
            else:
                ids.append(i)
        if unknown and strict:
            raise UnitError(f"{where or 'text'}: unit(s) {sorted(set(unknown))} are not in the {self.kind} unit set "
                            f"of this model ({self.vocab_size} units); normalize the text, or rebuild the units "
                            f"(a new output layer) for this language")
        return ids

    def decode(self, ids: list[int]) -> str:
        """ids (blanks and repeats already removed) -> unit string with spaces between words."""
        ids = [i for i in ids if i > 0]
        if self.kind == "spm":
            return self._sp.decode([i - 2 for i in ids if i >= 2])
        sep = ""  # units of a word are written together; words are separated by spaces
        words, cur = [], []
        for i in ids:
            if i == 1:
                if cur:
                    words.append(sep.join(cur))
                cur = []
            else:
                cur.append(self.units[i])
        if cur:
            words.append(sep.join(cur))
        return " ".join(words)

    # -- persistence: one form for checkpoints (torch.load(weights_only=True) accepts plain types) and JSON files --
    def to_dict(self) -> dict:
        """Plain data: kind, units, and the SentencePiece model as a hex string (None for other kinds)."""
        return {"kind": self.kind, "units": list(self.units),
                "spm_model": self.spm_model.hex() if self.spm_model else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        spm_model = d.get("spm_model")
        return cls(d["kind"], list(d["units"]), bytes.fromhex(spm_model) if spm_model else None)
