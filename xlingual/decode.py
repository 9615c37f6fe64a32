"""Batched CTC decoding: greedy (argmax, collapse repeats, drop blanks) and beam search (torchaudio ctc_decoder).

Beam search is lexicon-free and without a language model: units are scored only by the acoustic model, which is
the honest setting for comparing acoustic models across transfer conditions.
"""

from __future__ import annotations

import torch

from .config import DecodeConfig
from .features import FeatureStore
from .progress import progress as show_progress
from .tokenizer import BLANK, WORD_SEP, Tokenizer
from .train import FRAMES_PER_SECOND, Example, bucket_batches, collate


def greedy_ids(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """logits (B, T, V), lengths (B,) -> per utterance the unit ids after collapsing repeats and removing blank."""
    best = logits.argmax(-1)  # (B, T)
    out = []
    for row, n in zip(best, lengths.tolist()):
        row = row[:n]
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(i) for i in row[keep] if i != 0])
    return out


class BeamSearch:
    """Lexicon-free CTC beam search over the tokenizer's units (flashlight-text via torchaudio)."""

    def __init__(self, tokenizer: Tokenizer, beam_size: int = 16):
        from torchaudio.models.decoder import ctc_decoder

        self.tokenizer = tokenizer
        self.decoder = ctc_decoder(lexicon=None, tokens=list(tokenizer.units), lm=None, beam_size=beam_size,
                                   # the 8 best units per frame: a 5-8x faster search with the same output as
                                   # expanding every unit (results/bench/decode_speed.md)
                                   beam_size_token=min(8, len(tokenizer.units)),
                                   blank_token=BLANK, sil_token=WORD_SEP, nbest=1, log_add=True)

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """logits (B, T, V), lengths (B,) -> best unit ids per utterance (blank removed)."""
        emissions = logits.float().log_softmax(-1).cpu().contiguous()
        hyps = self.decoder(emissions, lengths.cpu().to(torch.int32))
        out = []
        for h in hyps:
            ids = [int(i) for i in h[0].tokens if i != 0]
            while ids and ids[0] == 1:  # flashlight frames the hypothesis with word boundaries
                ids.pop(0)
            while ids and ids[-1] == 1:
                ids.pop()
            out.append(ids)
        return out


def transcribe(model: torch.nn.Module, store: FeatureStore, ids: list[str], tokenizer: Tokenizer,
               cfg: DecodeConfig = DecodeConfig(), device: torch.device | None = None,
               progress: bool = False) -> dict[str, str]:
    """Decode utterances `ids` (features from `store`) -> {id: hypothesis unit string}.

    progress: show the batches decoded (scoring a test set; off for the dev decoding inside training, which
    prints its own epoch line)."""
    device = device or next(model.parameters()).device
    search = BeamSearch(tokenizer, cfg.beam_size) if cfg.method == "beam" else None
    if cfg.method not in ("greedy", "beam"):
        raise ValueError(f"decode.method must be 'greedy' or 'beam', not {cfg.method!r}")
    examples = [Example(i, store.num_frames(i), []) for i in ids]
    max_frames = max(int(cfg.max_batch_seconds * FRAMES_PER_SECOND), max((e.frames for e in examples), default=1))
    hyps: dict[str, str] = {}
    was_training = model.training
    model.eval()
    batches = bucket_batches([e.frames for e in examples], max_frames, seed=0, epoch=0)
    with torch.no_grad():
        for idx in show_progress(batches, desc="decode", unit="batch", enabled=progress):
            batch = collate(store, [examples[i] for i in idx])
            logits, lens = model(batch["feats"].to(device), batch["feat_lens"].to(device))
            seqs = search(logits, lens) if search else greedy_ids(logits, lens)
            for uid, seq in zip(batch["ids"], seqs):
                hyps[uid] = tokenizer.decode(seq)
    model.train(was_training)
    return hyps
