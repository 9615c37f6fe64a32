"""Phone recognition followed by language models (PRLM): the classic phonotactic language-ID back-end.

A multilingual phone recognizer transcribes speech into IPA phones; one phone n-gram model per language, estimated
on that recognizer's transcriptions of the language's training speech (its errors included, so that training and
test transcriptions are alike), scores a new utterance. The per-language log-likelihoods of an utterance, normalized
over the languages, are its phonotactic posterior; the LID (lid.py) multiplies it with the acoustic posterior.

The n-gram model interpolates orders 1..N with fixed weights (no tuning on any target): each order's estimate is
add-one smoothed over the phone set, so an unseen phone or context never gives a zero.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch

from .corpus import Utterance
from .fileio import read_json, write_json

ORDER = 3  # phone trigrams
WEIGHTS = {1: 0.1, 2: 0.3, 3: 0.6}  # interpolation weight of each order (fixed: nothing is fitted to the data)
EDGE_START, EDGE_END = "^", "$"  # utterance edges (the recognizer's "|" marks word boundaries)
PRLM_FILE = "prlm.json"  # beside the LID checkpoint


def transcribe_phones(recognizer: str | Path, utts: list[Utterance], cache_dir: str | Path) -> dict[str, list[str]]:
    """id -> the recognizer's phones (greedy CTC) for each utterance, word boundaries as "|"."""
    from .checkpoint import load_model
    from .config import FeatureConfig, from_dict
    from .decode import transcribe
    from .features import compute_features

    model, tok, meta = load_model(recognizer, task="asr")
    store = compute_features(utts, cache_dir, from_dict(FeatureConfig, meta["features"]), progress=False)
    return {i: tok.split(text) for i, text in transcribe(model, store, [u.id for u in utts], tok).items()}


class PhoneLM:
    """An interpolated phone n-gram model of one language: counts of n-grams and of their contexts."""

    def __init__(self, counts: dict[int, Counter], phones: int):
        self.counts = counts  # order -> Counter of n-gram tuples (order 1: unigrams)
        self.phones = phones  # size of the phone set (for add-one smoothing), the edges included
        self.context = {n: Counter() for n in counts}
        for n, c in counts.items():
            for gram, k in c.items():
                self.context[n][gram[:-1]] += k

    @classmethod
    def fit(cls, sequences: list[list[str]], phones: int) -> "PhoneLM":
        counts = {n: Counter() for n in range(1, ORDER + 1)}
        for seq in sequences:
            s = [EDGE_START] * (ORDER - 1) + seq + [EDGE_END]
            for n in counts:
                counts[n].update(tuple(s[i - n + 1:i + 1]) for i in range(ORDER - 1, len(s)))
        return cls(counts, phones)

    def logprob_next(self, context: list[str], phone: str) -> float:
        """log P(phone | the last ORDER - 1 phones of context): the interpolation of the add-one estimates."""
        hist = ([EDGE_START] * (ORDER - 1) + list(context))[-(ORDER - 1):]
        p = 0.0
        for n, w in WEIGHTS.items():
            gram = tuple(hist[len(hist) - n + 1:] + [phone]) if n > 1 else (phone,)
            p += w * (self.counts[n][gram] + 1) / (self.context[n][gram[:-1]] + self.phones)
        return math.log(p)

    def logprob(self, seq: list[str]) -> float:
        """Natural log-likelihood of a phone sequence (edges added)."""
        s = [EDGE_START] * (ORDER - 1) + seq + [EDGE_END]
        return sum(self.logprob_next(s[:i], s[i]) for i in range(ORDER - 1, len(s)))

    def to_dict(self) -> dict:
        return {"phones": self.phones, "counts": {str(n): [[list(g), k] for g, k in c.items()]
                                                  for n, c in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "PhoneLM":
        return cls({int(n): Counter({tuple(g): k for g, k in grams}) for n, grams in d["counts"].items()},
                   d["phones"])


def build_prlm(recognizer: str | Path, train: dict[str, list[Utterance]], path: str | Path,
               cache_dir: str | Path) -> dict[str, PhoneLM]:
    """One PhoneLM per language from the recognizer's transcriptions of its training utterances; saved to path."""
    phones = {lang: list(transcribe_phones(recognizer, utts, cache_dir).values()) for lang, utts in train.items()}
    inventory = {p for seqs in phones.values() for seq in seqs for p in seq} | {EDGE_START, EDGE_END}
    lms = {lang: PhoneLM.fit(seqs, len(inventory)) for lang, seqs in phones.items()}
    write_json(path, {"recognizer": str(recognizer), "order": ORDER, "weights": WEIGHTS,
                      "languages": {lang: lm.to_dict() for lang, lm in lms.items()}})
    return lms


def load_prlm(path: str | Path) -> tuple[str, dict[str, PhoneLM]]:
    d = read_json(path)
    return d["recognizer"], {lang: PhoneLM.from_dict(x) for lang, x in d["languages"].items()}


def phonotactic_posteriors(lms: dict[str, PhoneLM], languages: list[str],
                           phones: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """id -> (L,) posterior over `languages` from the utterance's log-likelihood under each language's model
    (uniform prior)."""
    out = {}
    for i, seq in phones.items():
        ll = torch.tensor([lms[lang].logprob(seq) for lang in languages], dtype=torch.float64)
        out[i] = ll.softmax(0).float()
    return out
