"""Mozilla Common Voice (one language folder of a release: `<split>.tsv` + `clips/*.mp3`) -> manifests.

    from data_prep.commonvoice import prepare_commonvoice
    prepare_commonvoice("cv-corpus-17.0-2024-03-15/bn", "manifests/cv_bn", "bn")
"""

from __future__ import annotations

import os
from pathlib import Path

from xlingual.corpus import ManifestError, fingerprint, prepare_split, read_commonvoice_tsv


def prepare_commonvoice(cv_dir: str | os.PathLike, output_dir: str | os.PathLike, language: str,
                        splits: list[str] | tuple[str, ...] = ("train", "dev", "test"), *,
                        strict: bool = False) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for Common Voice splits (`train`, `dev`, `test`, `validated`, ...).

    Clips are MP3, so every kept clip is decoded and saved as 16 kHz mono WAV under `output_dir/audio/<split>/`.
    The speaker is the TSV's client_id; transcripts are normalized for `language`.

    Args:
        cv_dir: the language folder of a release (holding `<split>.tsv` and `clips/`).
        strict: raise on the first bad utterance (naming file:line and the fix) instead of skipping it; skips
            are listed in `<split>.skipped.tsv` and counted in `<split>.report.json`.
    Returns:
        {split: manifest path}.
    Raises:
        ManifestError: no `<split>.tsv` or `clips/` folder, or a TSV without `path`/`sentence` columns.
    """
    cv_dir = Path(cv_dir)
    clips = cv_dir / "clips"
    if not clips.is_dir():
        raise ManifestError(f"{cv_dir}: no clips/ folder; pass the language folder of a Common Voice release "
                            f"(it holds train.tsv, dev.tsv, test.tsv and clips/)")
    out = {}
    for split in splits:
        tsv = cv_dir / f"{split}.tsv"
        if not tsv.is_file():
            found = sorted(p.stem for p in cv_dir.glob("*.tsv"))
            raise ManifestError(f"{tsv} not found; splits in {cv_dir}: {found}")
        config = {"corpus": "commonvoice", "tsv": str(tsv.resolve()), "inputs": fingerprint(tsv)}
        out[split] = prepare_split(output_dir, split, language, config,
                                   lambda report, t=tsv: read_commonvoice_tsv(t, clips, report),
                                   strict=strict, allow_pipes=False)
    return out
