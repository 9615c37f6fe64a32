"""The manifest: one utterance per JSONL line, the contract between every stage.

Fields: id, audio (path; relative paths are relative to the manifest's folder), text (normalized transcript),
language (code such as "bn"), speaker, duration (seconds), and optional offset (seconds into the audio file,
for Kaldi `segments`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .fileio import atomic_path


class ManifestError(ValueError):
    """A manifest or corpus file that cannot be used; the message names file, line and fix."""


@dataclass
class Utterance:
    id: str  # unique within a manifest
    audio: str  # audio file path (absolute once read)
    text: str  # normalized transcript
    language: str  # language code, e.g. "bn"
    speaker: str  # speaker (or synthetic voice) id; splits are disjoint in speakers
    duration: float  # seconds of audio used (after offset)
    offset: float = 0.0  # seconds into the audio file where the utterance starts


_REQUIRED = ("id", "audio", "text", "language", "speaker", "duration")
_KNOWN = {f.name for f in fields(Utterance)}


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read and validate a JSONL manifest; audio paths are resolved against the manifest's folder.

    Raises:
        ManifestError naming the file and line of the first problem: bad JSON, missing/unknown fields, wrong
        types, empty text, non-positive duration, duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (run the data preparation stage first)")
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 ({e}); re-save the manifest as UTF-8") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: invalid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(rec, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise ManifestError(f"{where}: missing field(s) {missing}; required: {list(_REQUIRED)}")
        extra = sorted(set(rec) - _KNOWN)
        if extra:
            raise ManifestError(f"{where}: unknown field(s) {extra}; allowed: {sorted(_KNOWN)}")
        for k in ("id", "audio", "text", "language", "speaker"):
            if not isinstance(rec[k], str):
                raise ManifestError(f"{where}: field {k!r} must be a string, got {rec[k]!r}")
        for k in ("duration", "offset"):
            if k in rec and (isinstance(rec[k], bool) or not isinstance(rec[k], (int, float))):
                raise ManifestError(f"{where}: field {k!r} must be a number, got {rec[k]!r}")
        if not rec["text"].strip():
            raise ManifestError(f"{where}: utterance {rec['id']!r} has an empty transcript; remove it or fix it")
        if not rec["duration"] > 0 or rec.get("offset", 0.0) < 0:
            raise ManifestError(f"{where}: utterance {rec['id']!r} needs duration > 0 and offset >= 0")
        if rec["id"] in seen:
            raise ManifestError(f"{where}: duplicate utterance id {rec['id']!r} (first on line {seen[rec['id']]})")
        seen[rec["id"]] = lineno
        audio = Path(rec["audio"])
        rec["audio"] = str(audio if audio.is_absolute() else (path.parent / audio).resolve())
        utts.append(Utterance(**rec))
    return utts


def write_manifest(path: str | os.PathLike, utts: list[Utterance]) -> None:
    """Write a manifest atomically; audio paths under the manifest's folder are stored relative (portable)."""
    path = Path(path)
    root = path.parent.resolve()
    ids: set[str] = set()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for u in utts:
            if u.id in ids:
                raise ManifestError(f"{path}: duplicate utterance id {u.id!r}")
            ids.add(u.id)
            rec = asdict(u)
            audio = Path(u.audio)
            if audio.is_absolute() and audio.resolve().is_relative_to(root):
                rec["audio"] = str(audio.resolve().relative_to(root))
            if not rec["offset"]:
                del rec["offset"]
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def total_hours(utts: list[Utterance]) -> float:
    return sum(u.duration for u in utts) / 3600.0


def subset_hours(utts: list[Utterance], hours: float, seed: int = 0) -> list[Utterance]:
    """A deterministic subset of about `hours` of audio, nested across budgets.

    Utterances are ordered by a seeded hash of their id and taken as a prefix until the budget is reached, so
    the 10-minute subset is always inside the 1-hour subset for the same seed. Returns them in manifest order.
    """
    if hours <= 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    key = lambda u: hashlib.sha1(f"{seed}:{u.id}".encode()).hexdigest()  # noqa: E731
    budget, taken, chosen = hours * 3600.0, 0.0, set()
    for u in sorted(utts, key=key):
        if taken >= budget:
            break
        chosen.add(u.id)
        taken += u.duration
    return [u for u in utts if u.id in chosen]
