import pytest
import torch

from xlingual.decode import BeamSearch, greedy_ids
from xlingual.tokenizer import Tokenizer


def one_hot(seq, vocab=6, peak=10.0):
    x = torch.zeros(len(seq), vocab)
    x[torch.arange(len(seq)), torch.tensor(seq)] = peak
    return x


@pytest.mark.parametrize("frames, expected", [
    ([0, 2, 2, 0, 3], [2, 3]),
    ([2, 0, 2], [2, 2]),  # blank separates a repeated unit
    ([0, 0, 0], []),
    ([1, 4, 4, 4, 1, 5], [1, 4, 1, 5]),
])
def test_greedy(frames, expected):
    logits = one_hot(frames)[None]
    assert greedy_ids(logits, torch.tensor([len(frames)])) == [expected]


def test_greedy_respects_lengths():
    logits = torch.stack([one_hot([2, 3, 4]), one_hot([5, 0, 0])])
    assert greedy_ids(logits, torch.tensor([2, 1])) == [[2, 3], [5]]


def test_beam_matches_greedy_on_peaked_posteriors():
    tok = Tokenizer.build("char", [("ab ba", "xx")])  # units: blank | a b
    frames = [[2, 2, 0, 3, 1, 3, 0, 2], [3, 0, 0, 2, 0, 0, 0, 0]]
    logits = torch.stack([one_hot(f, tok.vocab_size) for f in frames])
    lens = torch.tensor([8, 4])
    beam = BeamSearch(tok, beam_size=4)(logits, lens)
    assert beam == greedy_ids(logits, lens)
    assert tok.decode(beam[0]) == "ab ba"
