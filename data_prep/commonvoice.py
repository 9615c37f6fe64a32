"""Mozilla Common Voice (one language folder of a release: `<split>.tsv` + `clips/*.mp3`) -> manifests.

    from data_prep.commonvoice import prepare_commonvoice
    prepare_commonvoice("cv-corpus-17.0-2024-03-15/bn", "manifests/cv_bn", "bn")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from xlingual.corpus import EmptyManifestError, ManifestError, PrepReport, RawUtterance, prepare_split

from .common import fingerprint, prepare_splits, read_lines

COMMONVOICE_REQUIRED = ("path", "sentence")  # columns found by name: the rest vary between releases
SPLITS = ("train", "dev", "test")

log = logging.getLogger(__name__)


def prepare_commonvoice(cv_dir: str | os.PathLike, output_dir: str | os.PathLike, language: str,
                        splits: list[str] | tuple[str, ...] | None = None, *,
                        strict: bool = False) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for Common Voice splits (`train`, `dev`, `test`, `validated`, ...).

    Clips are MP3, so every kept clip is decoded and saved as 16 kHz mono WAV under `output_dir/audio/<split>/`.
    The speaker is the TSV's client_id; transcripts are normalized for `language`.

    Args:
        cv_dir: the language folder of a release (holding `<split>.tsv` and `clips/`).
        splits: default: those of train, dev, test that are there (a warning names the missing ones). A split
            named here without its TSV is an error before anything is written.
        strict: raise on the first bad utterance (naming file:line and the fix) instead of skipping it; skips
            are listed in `<split>.skipped.tsv` and counted in `<split>.report.json`.
    Returns:
        {split: manifest path}.
    Raises:
        ManifestError: no `<split>.tsv` or `clips/` folder, or a TSV without `path`/`sentence` columns (the
            other splits are prepared first; see common.prepare_splits).
    """
    cv_dir = Path(cv_dir)
    clips = cv_dir / "clips"
    if not clips.is_dir():
        raise ManifestError(f"{cv_dir}: no clips/ folder; pass the language folder of a Common Voice release "
                            f"(it holds train.tsv, dev.tsv, test.tsv and clips/)")
    tsvs = {split: cv_dir / f"{split}.tsv" for split in splits or SPLITS}
    missing = [tsv for tsv in tsvs.values() if not tsv.is_file()]
    if missing and (splits is not None or len(missing) == len(tsvs)):
        found = sorted(p.stem for p in cv_dir.glob("*.tsv"))
        raise ManifestError(f"{', '.join(map(str, missing))} not found; splits in {cv_dir}: {found} (nothing was "
                            f"prepared)")
    if missing:
        log.warning("%s: %s missing, so preparing %s only", cv_dir, ", ".join(t.name for t in missing),
                    ", ".join(s for s, t in tsvs.items() if t.is_file()))

    def job(split: str, tsv: Path):
        config = {"corpus": "commonvoice", "tsv": str(tsv.resolve()), "inputs": fingerprint(tsv)}
        return lambda: prepare_split(output_dir, split, language, config,
                                     lambda report: read_commonvoice_tsv(tsv, clips, report), strict=strict,
                                     source=tsv)

    return prepare_splits({split: job(split, tsv) for split, tsv in tsvs.items() if tsv.is_file()}, strict)


def read_commonvoice_tsv(tsv: str | os.PathLike, clips_dir: str | os.PathLike,
                         report: PrepReport) -> list[RawUtterance]:
    """Utterances of a Common Voice split TSV (`<cv_dir>/<split>.tsv`, audio in `<cv_dir>/clips/`).

    Columns are found by name from the header (client_id, path, sentence, ...: they vary between releases);
    the speaker is client_id. Quotes are not special: Common Voice writes the TSV unquoted.

    Raises:
        ManifestError: the header lacks `path` or `sentence` (not a Common Voice split file); EmptyManifestError:
            the file is empty.
    """
    tsv, clips_dir = Path(tsv), Path(clips_dir)
    if tsv.stat().st_size == 0:
        raise EmptyManifestError(f"{tsv} is empty (0 bytes), so there is nothing to prepare from it; download the "
                                 f"release again, or leave the split out (--splits)")
    with open(tsv, "rb") as f:
        first = f.readline()
    try:
        header = first.decode("utf-8-sig").rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        header = []
    missing = [c for c in COMMONVOICE_REQUIRED if c not in header]
    if missing:
        raise ManifestError(f"{tsv}:1: header lacks column(s) {missing} (found {header}); a Common Voice split "
                            f"TSV starts with a header such as 'client_id<TAB>path<TAB>sentence...'")
    # Non-UTF-8 bytes sit in the sentence; the row is reported under its clip name.
    lines = read_lines(tsv, report, reason="non-UTF-8 transcript", id_field=header.index("path"))
    next(lines)  # the header
    raws = []
    for _, where, line in lines:
        cols = line.split("\t")
        row = dict(zip(header, cols))
        if len(cols) != len(header) or not row["path"].strip():
            report.skip(row.get("path") or where, "malformed line",
                        f"{where}: expected {len(header)} tab-separated columns as in the header, found {len(cols)}")
            continue
        clip = Path(row["path"].strip())
        if clip.is_absolute() or ".." in clip.parts:  # Common Voice names clips inside clips/; never outside it
            report.skip(row["path"], "clip path outside clips/",
                        f"{where}: the path column must name a file inside {clips_dir}, not {row['path'].strip()!r}")
            continue
        audio = clips_dir / clip
        if not audio.suffix and not audio.exists():  # early releases list clips without the .mp3 extension
            audio = audio.with_name(audio.name + ".mp3")
        raws.append(RawUtterance(id=Path(row["path"].strip()).stem, audio=str(audio), text=row["sentence"],
                                 speaker=(row.get("client_id") or "").strip() or "unknown", where=where))
    return raws
