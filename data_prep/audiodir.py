"""A folder of audio files (transcripts optional) -> a manifest, e.g. a new language to rank sources for by LID.

    from data_prep.audiodir import prepare_audiodir
    prepare_audiodir("recordings/lo", "manifests/lo_rank", "lo")   # audio-only: read_manifest(..., require_text=False)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from xlingual.corpus import ManifestError, PrepReport, RawUtterance, prepare_split

from .common import fingerprint

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what read_audio_dir picks up (all decodable by soundfile)


def prepare_audiodir(audio_dir: str | os.PathLike, output_dir: str | os.PathLike, language: str,
                     split: str = "test", *, strict: bool = False, require_text: bool = False,
                     suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for every audio file under `audio_dir` (searched recursively).

    The id is the path below `audio_dir` without suffix, the speaker the first sub-folder (else "unknown"). A
    transcript, when there is one, is `<stem>.txt` beside the audio; without one the text is empty, which
    `read_manifest(path, require_text=False)` accepts. A transcript file that cannot be used (empty, not UTF-8,
    nothing left after normalization) leaves its audio in without text, counted and named in the report's notes.

    Args:
        require_text: skip (or, if strict, raise for) audio without a usable transcript file.
        strict: raise on the first bad file instead of skipping it; skips are listed in `<split>.skipped.tsv`.
    Returns:
        {split: manifest path}.
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ManifestError(f"audio folder not found: {audio_dir}")
    # Listing fingerprint: adding, removing or changing a file (or a transcript) redoes the split.
    files = sorted(p for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in (*suffixes, ".txt"))
    listing = hashlib.sha1(json.dumps(fingerprint(*files)).encode()).hexdigest()
    config = {"corpus": "audiodir", "audio_dir": str(audio_dir.resolve()), "suffixes": list(suffixes),
              "inputs": listing}
    manifest = prepare_split(output_dir, split, language, config,
                             lambda report: read_audio_dir(audio_dir, report, suffixes, require_text),
                             strict=strict, require_text=require_text, source=audio_dir)
    return {split: manifest}


def read_audio_dir(audio_dir: str | os.PathLike, report: PrepReport, suffixes: tuple[str, ...] = AUDIO_SUFFIXES,
                   require_text: bool = False) -> list[RawUtterance]:
    """Utterances of a folder of audio files (searched recursively), e.g. a new language to rank sources for.

    The id is the path below `audio_dir` without its suffix; the speaker is the first folder below `audio_dir`
    (the usual `<speaker>/<file>` layout), else "unknown". A transcript is optional: `<stem>.txt` beside the audio.
    One that is not UTF-8 is skipped with its audio when `require_text`, else noted and the audio kept.

    Raises:
        ManifestError: the folder is missing or holds no audio file.
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ManifestError(f"audio folder not found: {audio_dir}")
    files = sorted(p for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise ManifestError(f"{audio_dir}: no audio files ({', '.join(suffixes)}) found")
    raws = []
    for path in files:
        rel = path.relative_to(audio_dir).with_suffix("")
        utt = rel.as_posix()
        sidecar, text, where = path.with_suffix(".txt"), None, str(path)
        if sidecar.is_file():
            where = f"{path} (transcript {sidecar})"
            try:
                text = sidecar.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as e:
                msg = f"{sidecar}: not UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8"
                if require_text:
                    report.skip(utt, "non-UTF-8 transcript", msg)
                    continue
                report.note("non-UTF-8 transcript (audio kept without text)", utt, f"{msg}; the audio is kept "
                                                                                   f"without text")
        raws.append(RawUtterance(id=utt, audio=str(path.resolve()), text=text,
                                 speaker=rel.parts[0] if len(rel.parts) > 1 else "unknown", where=where))
    return raws
