"""The manifest: one utterance per JSONL line, the contract between every stage.

Fields: id, audio (path; relative paths are relative to the manifest's folder), text (normalized transcript),
language (code such as "bn"), speaker, duration (seconds), and optional offset (seconds into the audio file,
for Kaldi `segments`).

Also here: the checks every utterance passes on its way into a manifest (build_manifest, PrepReport,
prepare_split) and hours-budget subsets. The corpus readers and their `prepare_<corpus>()` entry points live
with their corpus in data_prep/ (kaldi, fleurs, commonvoice, audiodir, hf).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .audio import SAMPLE_RATE, AudioError, audio_info, load_audio, save_audio
from .fileio import atomic_path, read_json, safe_file_name, write_json, write_text


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


def read_manifest(path: str | os.PathLike, require_text: bool = True) -> list[Utterance]:
    """Read and validate a JSONL manifest; audio paths are resolved against the manifest's folder.

    Args:
        require_text: False accepts empty transcripts (audio-only manifests, e.g. a new language to rank
            sources for by language ID).
    Raises:
        ManifestError naming the file and line of the first problem: bad JSON, missing/unknown fields, wrong
        types, empty text, non-positive or non-finite duration, negative offset, duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (run the data preparation stage first)")
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    try:
        # \n, \r\n or \r only: str.splitlines() would also split inside transcripts at U+2028, U+0085, ...
        # (JSON strings hold those raw, and write_manifest writes them so; it cannot hold a raw \r or \n)
        lines = re.split(r"\r\n?|\n", path.read_text(encoding="utf-8"))
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
        if require_text and not rec["text"].strip():
            raise ManifestError(f"{where}: utterance {rec['id']!r} has an empty transcript; remove it or fix it")
        # json.loads accepts NaN and Infinity, and NaN passes every comparison as False: test finiteness too.
        duration, offset = rec["duration"], rec.get("offset", 0.0)
        if not (math.isfinite(duration) and duration > 0 and math.isfinite(offset) and offset >= 0):
            raise ManifestError(f"{where}: utterance {rec['id']!r} needs a finite duration > 0 and offset >= 0, "
                                f"got duration={duration!r}, offset={offset!r}")
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
            # a relative path here is relative to the writer's working directory: store it relative to the
            # manifest's folder when it lies inside it (portable), absolute otherwise
            audio = Path(u.audio).resolve()
            rec["audio"] = str(audio.relative_to(root) if audio.is_relative_to(root) else audio)
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


# --------------------------------------------------------------------------------------------------------------
# Real corpora -> manifest.
#
# Each corpus reader (data_prep/<corpus>.py) turns its on-disk listing into RawUtterance records (audio source +
# transcript as written); build_manifest() then checks every one the same way: unique id, normalizable transcript, decodable finite audio,
# measured duration. Bad utterances go through PrepReport.skip(): counted by reason and listed in
# <split>.skipped.tsv, or, with strict=True, raised with the file:line (or utterance id) and the fix.
#
# Skip reasons: malformed line, non-UTF-8 transcript, duplicate id, missing transcript, empty transcript,
# unnormalizable transcript, no audio (a transcript without audio), no transcript (audio without a transcript),
# unknown recording, bad segment, segment past end, missing audio, unreadable audio, truncated audio, empty audio,
# non-finite audio, pipe command failed, pipe not allowed.
# --------------------------------------------------------------------------------------------------------------

PREP_VERSION = 1  # bump when preparation changes what it writes, so that completed outputs are rebuilt
IN_PLACE_SUFFIXES = (".wav", ".flac")  # files referenced where they are when already 16 kHz mono

log = logging.getLogger(__name__)


@dataclass
class RawUtterance:
    """One utterance as a corpus lists it, before its audio is checked and its transcript normalized."""

    id: str
    audio: str | bytes  # a file path, the encoded bytes of a file (HF datasets), or a Kaldi command ending in "|"
    # (build_manifest's `audio_source` turns what is not a file path or bytes into bytes)
    text: str | None  # transcript as the corpus writes it; None when the corpus has none (audio-only)
    speaker: str
    where: str  # "file:line" or "dataset[row]": where messages point the user
    offset: float = 0.0  # seconds into the audio (Kaldi segments)
    duration: float | None = None  # seconds after `offset`; None reads to the end


@dataclass
class PrepReport:
    """What preparing one split kept, skipped (counted by reason) and changed (notes, counted)."""

    split: str
    strict: bool = False  # True: the first bad utterance raises instead of being skipped
    kept: int = 0
    hours: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    notes: dict[str, int] = field(default_factory=dict)  # e.g. "resampled 8000->16000 Hz" -> count
    skipped_ids: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, message)
    _ids: set[str] = field(default_factory=set, init=False, repr=False)  # ids in skipped_ids: was_skipped()

    def skip(self, utt_id: str, reason: str, message: str, error: type[ValueError] = ManifestError) -> None:
        """Record a bad utterance, or raise `error(message)` when strict; `message` names where and the fix."""
        if self.strict:
            raise AudioError(message, reason=reason) if error is AudioError else error(message)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_ids.append((utt_id, reason, message))
        self._ids.add(utt_id)

    def was_skipped(self, utt_id: str) -> bool:
        """Whether `utt_id` was already reported, so that one bad utterance is counted once."""
        return utt_id in self._ids

    def note(self, what: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: 'kept N, skipped M: reason xK, ...' (+ notes)."""
        line = f"{self.split}: kept {self.kept} ({self.hours:.2f} h), skipped {self.num_skipped}"
        if self.skipped:
            line += ": " + ", ".join(f"{r} x{n}" for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        if self.notes:
            line += "; notes: " + ", ".join(f"{r} x{n}" for r, n in sorted(self.notes.items()))
        return line

    def to_dict(self) -> dict:
        return {"split": self.split, "kept": self.kept, "hours": round(self.hours, 4),
                "skipped_total": self.num_skipped, "skipped": dict(self.skipped), "notes": dict(self.notes)}


def build_manifest(raws: list[RawUtterance], language: str, output_dir: str | os.PathLike, split: str,
                   report: PrepReport, *, require_text: bool = True,
                   audio_source: Callable[[RawUtterance], str | bytes] | None = None) -> list[Utterance]:
    """Check, decode and normalize raw utterances into manifest entries; bad ones go to `report`.

    Transcripts are normalized with text.normalize_or_raise for `language`. Audio is decoded in full (which is
    what catches unreadable, truncated, empty and NaN/inf audio) and its duration measured. A 16 kHz mono
    WAV/FLAC file is referenced in place (with its segment offset); anything else (other rates, several
    channels, MP3/OGG, HF bytes, Kaldi command output) is written as a 16 kHz mono WAV to
    `output_dir/audio/<split>/<id>.wav`, so the manifest only points at plain files.

    Args:
        audio_source: turns a raw utterance's `audio` into a file path or encoded bytes, raising AudioError
            (e.g. data_prep.kaldi runs wav.scp commands); default: `audio` as it is.
    """
    from .text import TextError, normalize_or_raise  # text.py does not import corpus; late import keeps it so

    audio_dir = Path(output_dir) / "audio" / split
    seen: dict[str, str] = {}
    utts: list[Utterance] = []
    for raw in raws:
        if raw.id in seen:
            report.skip(raw.id, "duplicate id", f"{raw.where}: duplicate utterance id {raw.id!r} (first at "
                                                f"{seen[raw.id]}); rename or remove one of them")
            continue
        seen[raw.id] = raw.where
        if raw.text is None:
            if require_text:
                report.skip(raw.id, "missing transcript", f"{raw.where}: utterance {raw.id!r} has no transcript; "
                                                          f"add one, or prepare with require_text=False")
                continue
            text = ""
        else:
            try:
                text = normalize_or_raise(raw.text, language, f"{raw.where}: utterance {raw.id!r}")
            except TextError as e:
                report.skip(raw.id, "unnormalizable transcript" if raw.text.strip() else "empty transcript", str(e))
                continue
        try:
            source = raw.audio if audio_source is None else audio_source(raw)
            wav = load_audio(source, SAMPLE_RATE, offset=raw.offset, duration=raw.duration)
            sr, _, channels = audio_info(source)
        except AudioError as e:
            msg = str(e) if str(e).startswith(raw.where) else f"{raw.where}: utterance {raw.id!r}: {e}"
            report.skip(raw.id, e.reason, msg, AudioError)
            continue
        if sr != SAMPLE_RATE:
            report.note(f"resampled {sr}->{SAMPLE_RATE} Hz")
        if channels > 1:
            report.note(f"downmixed {channels} channels to mono")
        in_place = (isinstance(source, str) and Path(source).suffix.lower() in IN_PLACE_SUFFIXES
                    and sr == SAMPLE_RATE and channels == 1)
        if in_place:
            audio, offset = str(Path(source).resolve()), raw.offset
        else:
            audio, offset = str(audio_dir / f"{safe_file_name(raw.id)}.wav"), 0.0
            save_audio(audio, wav, SAMPLE_RATE)
        utts.append(Utterance(id=raw.id, audio=audio, text=text, language=language, speaker=raw.speaker,
                              duration=round(len(wav) / SAMPLE_RATE, 4), offset=offset))
    report.kept = len(utts)
    report.hours = total_hours(utts)
    return utts


def fingerprint(*paths: str | os.PathLike) -> list:
    """[path, size, mtime_ns] per input file (None if absent): a changed corpus file invalidates a prepared split."""
    out = []
    for p in paths:
        p = Path(p)
        st = p.stat() if p.exists() else None
        out.append([str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def prepare_split(output_dir: str | os.PathLike, split: str, language: str, config: dict,
                  read: Callable[[PrepReport], list[RawUtterance]], *, strict: bool = False,
                  require_text: bool = True,
                  audio_source: Callable[[RawUtterance], str | bytes] | None = None) -> Path:
    """Prepare one split: read -> build_manifest -> `<split>.jsonl`, `.skipped.tsv`, `.report.json`, `.done.json`.

    Idempotent: if `<split>.done.json` holds the same `config` (corpus, inputs with their sizes and times,
    options), nothing is redone. The marker is written last, so an interrupted run is redone in full.

    Args:
        config: JSON-able description of the inputs and options; `read` turns them into raw utterances.
        audio_source: see build_manifest.
    Returns:
        the manifest path.
    """
    output_dir = Path(output_dir)
    manifest, marker = output_dir / f"{split}.jsonl", output_dir / f"{split}.done.json"
    config = json.loads(json.dumps({"prep_version": PREP_VERSION, "split": split, "language": language,
                                    "strict": strict, "require_text": require_text, **config}))
    if manifest.is_file() and marker.is_file():
        try:
            done = read_json(marker)
        except (OSError, ValueError):
            done = None
        if done == config:
            log.info("%s: already prepared (%s)", split, manifest)
            return manifest
    marker.unlink(missing_ok=True)  # from here on the old outputs are not known to match anything
    report = PrepReport(split=split, strict=strict)
    utts = build_manifest(read(report), language, output_dir, split, report, require_text=require_text,
                          audio_source=audio_source)
    write_manifest(manifest, utts)
    rows = ["id\treason\tmessage"] + ["\t".join(re.sub(r"\s+", " ", f) for f in row) for row in report.skipped_ids]
    write_text(output_dir / f"{split}.skipped.tsv", "\n".join(rows) + "\n")
    write_json(output_dir / f"{split}.report.json", report.to_dict())
    write_json(marker, config)
    # A warning when anything was dropped, so the count reaches the user even without logging configured.
    (log.warning if report.num_skipped else log.info)("%s (details: %s)", report.summary(),
                                                      output_dir / f"{split}.skipped.tsv")
    return manifest
