"""WER and CER with jiwer; per-utterance errors and a summary file per test set."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer

from .fileio import write_json, write_text


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    """Corpus-level WER and CER (in %) with the word-level error counts. Empty hypotheses count as deletions."""
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    n_words = words.hits + words.substitutions + words.deletions
    return {"wer": 100.0 * words.wer, "cer": 100.0 * chars.cer, "n_utts": len(refs), "n_words": n_words,
            "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions}


def score(refs: dict[str, str], hyps: dict[str, str]) -> tuple[dict, list[dict]]:
    """Summary and per-utterance records for the utterances in `refs` (a missing hypothesis is an error)."""
    missing = [k for k in refs if k not in hyps]
    if missing:
        raise KeyError(f"no hypothesis for {len(missing)} utterance(s), e.g. {missing[0]!r}")
    ids = sorted(refs)
    summary = error_rates([refs[i] for i in ids], [hyps[i] for i in ids])
    per_utt = []
    for i in ids:
        w = jiwer.process_words(refs[i], hyps[i])
        c = jiwer.process_characters(refs[i], hyps[i])
        # per-utterance counts let error rates be resampled over utterances (bootstrap intervals)
        per_utt.append({"id": i, "ref": refs[i], "hyp": hyps[i], "errors": w.substitutions + w.deletions
                        + w.insertions, "ref_words": len(refs[i].split()),
                        "char_errors": c.substitutions + c.deletions + c.insertions,
                        "ref_chars": c.hits + c.substitutions + c.deletions})
    return summary, per_utt


def write_scores(out_dir: str | Path, refs: dict[str, str], hyps: dict[str, str], **extra) -> dict:
    """Write hyp.txt, ref.txt, errors.jsonl (per utterance, worst first) and summary.json; return the summary."""
    out_dir = Path(out_dir)
    summary, per_utt = score(refs, hyps)
    summary.update(extra)
    write_text(out_dir / "ref.txt", "".join(f"{u['id']} {u['ref']}\n" for u in per_utt))
    write_text(out_dir / "hyp.txt", "".join(f"{u['id']} {u['hyp']}\n" for u in per_utt))
    worst = sorted(per_utt, key=lambda u: (-u["errors"], u["id"]))
    write_text(out_dir / "errors.jsonl", "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in worst))
    write_json(out_dir / "summary.json", summary)
    return summary
