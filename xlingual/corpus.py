"""The manifest: one utterance per JSONL line, the contract between every stage.

Fields: id, audio (path; relative paths are relative to the manifest's folder), text (normalized transcript),
language (code such as "bn"), speaker, duration (seconds), and optional offset (seconds into the audio file,
for Kaldi `segments`).

Also here: readers for real corpora (Kaldi data dirs, FLEURS, Common Voice, audio folders, HF datasets), the
checks every utterance passes on its way into a manifest (build_manifest, PrepReport), and hours-budget subsets.
The corpus-specific `prepare_<corpus>()` entry points live in data_prep/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .audio import SAMPLE_RATE, AudioError, audio_info, load_audio, save_audio
from .fileio import atomic_path, read_json, write_json, write_text


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
# Each corpus reader turns its on-disk listing into RawUtterance records (audio source + transcript as written);
# build_manifest() then checks every one the same way: unique id, normalizable transcript, decodable finite audio,
# measured duration. Bad utterances go through PrepReport.skip(): counted by reason and listed in
# <split>.skipped.tsv, or, with strict=True, raised with the file:line (or utterance id) and the fix.
#
# Skip reasons: malformed line, non-UTF-8 transcript, duplicate id, missing transcript, empty transcript,
# unnormalizable transcript, no audio (a transcript without audio), no transcript (audio without a transcript),
# unknown recording, bad segment, segment past end, missing audio, unreadable audio, truncated audio, empty audio,
# non-finite audio, pipe command failed, pipe not allowed.
# --------------------------------------------------------------------------------------------------------------

PREP_VERSION = 1  # bump when preparation changes what it writes, so that completed outputs are rebuilt
PIPE_TIMEOUT_S = 600  # one Kaldi wav.scp command (a whole recording) should never take this long
IN_PLACE_SUFFIXES = (".wav", ".flac")  # files referenced where they are when already 16 kHz mono
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what read_audio_dir picks up (all decodable by soundfile)
# google/fleurs <split>.tsv has no header; these are its columns in order (the loading script's _get_data).
FLEURS_COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "phonetic_transcription",
                  "num_samples", "gender")
COMMONVOICE_REQUIRED = ("path", "sentence")  # columns found by name: the rest vary between releases

log = logging.getLogger(__name__)


@dataclass
class RawUtterance:
    """One utterance as a corpus lists it, before its audio is checked and its transcript normalized."""

    id: str
    audio: str | bytes  # a file path, the encoded bytes of a file (HF datasets), or a Kaldi command ending in "|"
    text: str | None  # transcript as the corpus writes it; None when the corpus has none (audio-only)
    speaker: str
    where: str  # "file:line" or "dataset[row]": where messages point the user
    offset: float = 0.0  # seconds into the audio (Kaldi segments)
    duration: float | None = None  # seconds after `offset`; None reads to the end

    @property
    def is_pipe(self) -> bool:
        return isinstance(self.audio, str) and self.audio.rstrip().endswith("|")


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


def _lines(path: Path, report: PrepReport, reason: str = "malformed line", id_field: int | None = None):
    """Yield (lineno, "file:line", text) for each non-blank line; lines that are not UTF-8 are reported instead.

    The file is decoded line by line so that one bad byte costs one utterance, not the whole file. A bad line is
    reported under its first word (Kaldi's utterance id) or, with `id_field`, under the stem of that
    tab-separated column (the audio file name of FLEURS and Common Voice TSVs).
    """
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        where = f"{path}:{lineno}"
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a BOM from Windows editors
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if id_field is None:
                key = raw.split()[0].decode("utf-8", "replace") if raw.split() else where
            else:
                cols = raw.split(b"\t")
                key = Path(cols[id_field].decode("utf-8", "replace")).stem if len(cols) > id_field else where
            report.skip(key, reason, f"{where}: line is not UTF-8 (byte {raw[e.start]:#04x} at column {e.start}); "
                                     f"re-save {path.name} as UTF-8")
            continue
        if line.strip():
            yield lineno, where, line


def _kaldi_table(path: Path, report: PrepReport, *, reason: str = "malformed line",
                 value_required: bool = True) -> dict[str, tuple[str, str]]:
    """A Kaldi 'key value...' file as {key: (where, value)}; malformed and duplicate lines are reported."""
    table: dict[str, tuple[str, str]] = {}
    for _, where, line in _lines(path, report, reason):
        parts = line.strip().split(maxsplit=1)
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if value_required and not value:
            report.skip(key, "malformed line", f"{where}: {key!r} has no value; each line of {path.name} is "
                                               f"'<id> <value>'")
        elif key in table:
            report.skip(key, "duplicate id", f"{where}: duplicate id {key!r} (first at {table[key][0]}); "
                                             f"remove one of the lines")
        else:
            table[key] = (where, value)
    return table


def read_kaldi_dir(data_dir: str | os.PathLike, report: PrepReport, *, require_text: bool = True,
                   root: str | os.PathLike | None = None) -> list[RawUtterance]:
    """Utterances of a Kaldi data dir: wav.scp and text, optional segments and utt2spk.

    wav.scp values are file paths or shell commands ending in '|' (e.g. `sph2pipe -f wav -p a.sph |`) whose
    output is WAV; build_manifest() runs them. Relative paths are resolved against `root` (Kaldi runs from the
    recipe directory; default: the current directory). Without utt2spk each utterance is its own speaker, as in
    Kaldi. Inconsistencies between the files are reported per utterance (see the skip reasons above).

    Raises:
        ManifestError: no wav.scp, or no text file while `require_text`.
    """
    data_dir = Path(data_dir)
    root = Path(root) if root is not None else Path.cwd()
    wav_scp, text_file = data_dir / "wav.scp", data_dir / "text"
    segments_file, utt2spk_file = data_dir / "segments", data_dir / "utt2spk"
    if not wav_scp.is_file():
        raise ManifestError(f"{data_dir}: no wav.scp; a Kaldi data dir holds wav.scp and text "
                            f"(optionally segments, utt2spk)")
    if require_text and not text_file.is_file():
        raise ManifestError(f"{data_dir}: no text file; add one, or pass require_text=False for audio-only data")

    recordings = _kaldi_table(wav_scp, report)
    for rec, (where, value) in list(recordings.items()):
        if "\x00" in value:  # no path or command can hold it (and pathlib raises a bare ValueError)
            report.skip(rec, "malformed line", f"{where}: {rec!r} has a NUL character in its path or command; "
                                               f"fix {wav_scp.name}")
            del recordings[rec]
        elif not value.endswith("|") and not Path(value).is_absolute():
            recordings[rec] = (where, str((root / value).resolve()))
    texts = _kaldi_table(text_file, report, reason="non-UTF-8 transcript", value_required=False) \
        if text_file.is_file() else None
    speakers = _kaldi_table(utt2spk_file, report) if utt2spk_file.is_file() else None

    # utterance id -> (where, recording id, start, end); utterance id == recording id without segments
    spans: dict[str, tuple[str, str, float, float | None]] = {}
    if segments_file.is_file():
        used: set[str] = set()
        for _, where, line in _lines(segments_file, report):
            parts = line.split()
            try:
                if len(parts) != 4:
                    raise ValueError
                start, end = float(parts[2]), float(parts[3])
                if not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError
            except ValueError:
                report.skip(parts[0], "malformed line", f"{where}: expected '<utt-id> <recording-id> <start> <end>' "
                                                        f"with times in seconds, got {line.strip()!r}")
                continue
            utt, rec = parts[0], parts[1]
            if utt in spans:
                report.skip(utt, "duplicate id", f"{where}: duplicate segment {utt!r} (first at {spans[utt][0]})")
            elif rec not in recordings:
                report.skip(utt, "unknown recording", f"{where}: segment {utt!r} names recording {rec!r}, which is "
                                                      f"not in wav.scp; add the recording or remove the segment")
            elif start < 0 or end <= start:
                report.skip(utt, "bad segment", f"{where}: segment {utt!r} has start {start} and end {end}; it needs "
                                                f"0 <= start < end")
            else:
                spans[utt] = (where, rec, start, end)
                used.add(rec)
        for _ in set(recordings) - used:
            report.note("wav.scp recording without segments (ignored)")
    else:
        spans = {rec: (where, rec, 0.0, None) for rec, (where, _) in recordings.items()}

    raws: list[RawUtterance] = []
    if texts is None:  # audio-only data dir
        ids = list(spans)
    else:
        ids = [u for u in texts if not report.was_skipped(u)]
        for utt, (where, *_) in spans.items():
            if utt not in texts and not report.was_skipped(utt):
                report.skip(utt, "no transcript", f"{where}: {utt!r} has audio but no line in {text_file}; add its "
                                                  f"transcript or remove it")
    for utt in ids:
        if utt not in spans:
            if not report.was_skipped(utt):
                listing = "segments" if segments_file.is_file() else "wav.scp"
                report.skip(utt, "no audio", f"{texts[utt][0]}: {utt!r} is in text but not in {listing}; add its "
                                             f"audio or remove the line")
            continue
        where, rec, start, end = spans[utt]
        speaker = utt
        if speakers is not None:
            if utt in speakers:
                speaker = speakers[utt][1].split()[0]
            else:
                report.note("no utt2spk entry (speaker = utterance id)")
        # Point at the transcript line, and at the segment and wav.scp lines the audio came from.
        origin = f"segment {where}, audio {recordings[rec][0]}" if end is not None else f"audio {recordings[rec][0]}"
        raws.append(RawUtterance(
            id=utt, audio=recordings[rec][1], text=texts[utt][1] if texts is not None else None, speaker=speaker,
            where=f"{texts[utt][0]} ({origin})" if texts is not None else where,
            offset=start, duration=None if end is None else end - start))
    return raws


def read_fleurs_tsv(tsv: str | os.PathLike, audio_dir: str | os.PathLike, report: PrepReport, *,
                    speaker: str) -> list[RawUtterance]:
    """Utterances of one FLEURS split in the raw layout of google/fleurs on the HF hub.

    `tsv` is `data/<config>/<split>.tsv` (no header; FLEURS_COLUMNS) and `audio_dir` holds its WAV files
    (`data/<config>/audio/<split>/` once `<split>.tar.gz` is extracted). The utterance id is the file's stem:
    FLEURS records each sentence several times, so its numeric `id` column repeats. The raw transcription is
    used, so that every corpus goes through the same language-aware normalizer. FLEURS publishes no speaker
    ids (its splits are speaker-disjoint), so the caller passes a pseudo-speaker for the whole split.
    """
    tsv, audio_dir = Path(tsv), Path(audio_dir)
    raws = []
    for _, where, line in _lines(tsv, report, reason="non-UTF-8 transcript", id_field=1):
        cols = line.split("\t")
        if len(cols) != len(FLEURS_COLUMNS) or not cols[1].strip() or not cols[5].strip().isdigit():
            report.skip((Path(cols[1].strip()).stem if len(cols) > 1 else "") or where, "malformed line",
                        f"{where}: expected {len(FLEURS_COLUMNS)} tab-separated columns {list(FLEURS_COLUMNS)} "
                        f"with an integer num_samples, found {len(cols)} columns")
            continue
        file_name = cols[1].strip()
        raws.append(RawUtterance(id=Path(file_name).stem, audio=str(audio_dir / file_name), text=cols[2],
                                 speaker=speaker, where=where))
    return raws


def read_commonvoice_tsv(tsv: str | os.PathLike, clips_dir: str | os.PathLike,
                         report: PrepReport) -> list[RawUtterance]:
    """Utterances of a Common Voice split TSV (`<cv_dir>/<split>.tsv`, audio in `<cv_dir>/clips/`).

    Columns are found by name from the header (client_id, path, sentence, ...: they vary between releases);
    the speaker is client_id. Quotes are not special: Common Voice writes the TSV unquoted.

    Raises:
        ManifestError: the header lacks `path` or `sentence` (not a Common Voice split file).
    """
    tsv, clips_dir = Path(tsv), Path(clips_dir)
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
    lines = _lines(tsv, report, reason="non-UTF-8 transcript", id_field=header.index("path"))
    next(lines)  # the header
    raws = []
    for _, where, line in lines:
        cols = line.split("\t")
        row = dict(zip(header, cols))
        if len(cols) != len(header) or not row["path"].strip():
            report.skip(row.get("path") or where, "malformed line",
                        f"{where}: expected {len(header)} tab-separated columns as in the header, found {len(cols)}")
            continue
        audio = clips_dir / row["path"].strip()
        if not audio.suffix and not audio.exists():  # early releases list clips without the .mp3 extension
            audio = audio.with_name(audio.name + ".mp3")
        raws.append(RawUtterance(id=Path(row["path"].strip()).stem, audio=str(audio), text=row["sentence"],
                                 speaker=(row.get("client_id") or "").strip() or "unknown", where=where))
    return raws


def read_audio_dir(audio_dir: str | os.PathLike, report: PrepReport,
                   suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[RawUtterance]:
    """Utterances of a folder of audio files (searched recursively), e.g. a new language to rank sources for.

    The id is the path below `audio_dir` without its suffix; the speaker is the first folder below `audio_dir`
    (the usual `<speaker>/<file>` layout), else "unknown". A transcript is optional: `<stem>.txt` beside the audio.

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
        sidecar, text = path.with_suffix(".txt"), None
        if sidecar.is_file():
            try:
                text = sidecar.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as e:
                report.skip(utt, "non-UTF-8 transcript", f"{sidecar}: not UTF-8 ({e.reason} at byte {e.start}); "
                                                         f"re-save it as UTF-8")
                continue
        raws.append(RawUtterance(id=utt, audio=str(path.resolve()), text=text,
                                 speaker=rel.parts[0] if len(rel.parts) > 1 else "unknown", where=str(path)))
    return raws


def read_hf_dataset(dataset, report: PrepReport, *, text_column: str | None, name: str = "dataset",
                    audio_column: str = "audio", speaker_column: str | None = None,
                    speaker: str = "unknown") -> list[RawUtterance]:
    """Utterances of a HF `datasets.Dataset` (one split), e.g. `load_dataset("google/fleurs", "bn_in")`.

    The audio column is cast to `Audio(decode=False)`, so datasets never decodes (its decoder needs torchcodec):
    each cell is {bytes, path} and build_manifest() decodes it with load_audio. The id is the stem of the audio
    path (FLEURS: the same id as the raw layout), else `<name>-<row>`.

    Raises:
        ManifestError: a named column is missing.
    """
    from datasets import Audio

    for col in (audio_column, text_column, speaker_column):
        if col is not None and col not in dataset.column_names:
            raise ManifestError(f"{name}: no column {col!r}; columns are {dataset.column_names}")
    feature = dataset.features[audio_column]
    if isinstance(feature, Audio) and feature.decode:
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    raws = []
    for i, row in enumerate(dataset):
        where = f"{name}[{i}]"
        cell = row[audio_column]
        if not isinstance(cell, dict):
            report.skip(where, "malformed line", f"{where}: column {audio_column!r} holds {type(cell).__name__}, "
                                                 f"expected an Audio cell {{bytes, path}}")
            continue
        path = cell.get("path")
        utt = Path(path).stem if path else f"{name}-{i:06d}"
        source = cell.get("bytes") or path
        if not source:
            report.skip(utt, "missing audio", f"{where}: utterance {utt!r} has neither audio bytes nor a path")
            continue
        text = row[text_column] if text_column is not None else None
        if text is not None and not isinstance(text, str):
            report.skip(utt, "malformed line", f"{where}: column {text_column!r} holds {text!r}, not a string")
            continue
        spk = str(row[speaker_column]) if speaker_column is not None else speaker
        raws.append(RawUtterance(id=utt, audio=source, text=text, speaker=spk, where=where))
    return raws


def _safe_name(utt_id: str) -> str:
    """A file name for an utterance id; ids with other characters get a hash suffix to stay unique.

    One path component that cannot leave its folder ('/' and '\\' are replaced), never hidden (no leading '.', so
    '..' cannot name the parent) and short enough for any file system (long ids are cut, then hashed).
    """
    safe = re.sub(r"[^\w.-]", "_", utt_id)
    if safe.startswith(".") or not safe:
        safe = "_" + safe[1:]
    if len(safe.encode()) > 120:
        safe = safe[:40]
    return safe if safe == utt_id else f"{safe}-{hashlib.sha1(utt_id.encode()).hexdigest()[:8]}"


def run_pipe(command: str, where: str, cwd: str | os.PathLike | None = None) -> bytes:
    """Run a Kaldi wav.scp command (`... |`) and return the WAV it writes to stdout.

    The command is the user's own data preparation (as Kaldi itself would run it), executed by bash with
    pipefail so a failing first stage of `sph2pipe ... | sox ...` is not hidden by the last one.

    Raises:
        AudioError (reason "pipe command failed") naming the wav.scp line, the exit status and stderr.
    """
    cmd = command.rstrip()[:-1].strip()
    argv = ["bash", "-o", "pipefail", "-c", cmd] if shutil.which("bash") else ["sh", "-c", cmd]
    try:
        proc = subprocess.run(argv, capture_output=True, cwd=cwd, timeout=PIPE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{where}: command `{cmd}` ran over {PIPE_TIMEOUT_S}s; run it by hand to see why",
                         reason="pipe command failed") from None
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"{where}: command `{cmd}` failed (exit {proc.returncode}, {len(proc.stdout)} bytes "
                         f"out): {err[-1] if err else 'no message'}; fix the command or the file it reads "
                         f"(try it by hand: {cmd} > /tmp/x.wav)", reason="pipe command failed")
    return proc.stdout


def build_manifest(raws: list[RawUtterance], language: str, output_dir: str | os.PathLike, split: str,
                   report: PrepReport, *, require_text: bool = True, allow_pipes: bool = True,
                   pipe_cwd: str | os.PathLike | None = None) -> list[Utterance]:
    """Check, decode and normalize raw utterances into manifest entries; bad ones go to `report`.

    Transcripts are normalized with text.normalize_or_raise for `language`. Audio is decoded in full (which is
    what catches unreadable, truncated, empty and NaN/inf audio) and its duration measured. A 16 kHz mono
    WAV/FLAC file is referenced in place (with its segment offset); anything else (other rates, several
    channels, MP3/OGG, HF bytes, Kaldi command output) is written as a 16 kHz mono WAV to
    `output_dir/audio/<split>/<id>.wav`, so the manifest only points at plain files.
    """
    from .text import TextError, normalize_or_raise  # text.py does not import corpus; late import keeps it so

    audio_dir = Path(output_dir) / "audio" / split
    seen: dict[str, str] = {}
    utts: list[Utterance] = []
    # Last command's output (or its error): the segments of one recording are consecutive, so it runs once.
    pipe_cache: tuple[str, bytes | AudioError] | None = None
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
            source = raw.audio
            if raw.is_pipe:
                if not allow_pipes:
                    raise AudioError(f"{raw.where}: audio is a command (`{raw.audio}`) and allow_pipes=False; "
                                     f"pass allow_pipes=True to run it", reason="pipe not allowed")
                if pipe_cache is None or pipe_cache[0] != raw.audio:
                    try:
                        pipe_cache = (raw.audio, run_pipe(raw.audio, raw.where, pipe_cwd))
                    except AudioError as e:
                        pipe_cache = (raw.audio, e)
                if isinstance(pipe_cache[1], AudioError):
                    raise pipe_cache[1]
                source = pipe_cache[1]
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
            audio, offset = str(audio_dir / f"{_safe_name(raw.id)}.wav"), 0.0
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
                  require_text: bool = True, allow_pipes: bool = True,
                  pipe_cwd: str | os.PathLike | None = None) -> Path:
    """Prepare one split: read -> build_manifest -> `<split>.jsonl`, `.skipped.tsv`, `.report.json`, `.done.json`.

    Idempotent: if `<split>.done.json` holds the same `config` (corpus, inputs with their sizes and times,
    options), nothing is redone. The marker is written last, so an interrupted run is redone in full.

    Args:
        config: JSON-able description of the inputs and options; `read` turns them into raw utterances.
    Returns:
        the manifest path.
    """
    output_dir = Path(output_dir)
    manifest, marker = output_dir / f"{split}.jsonl", output_dir / f"{split}.done.json"
    config = json.loads(json.dumps({"prep_version": PREP_VERSION, "split": split, "language": language,
                                    "strict": strict, "require_text": require_text, "allow_pipes": allow_pipes,
                                    **config}))
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
                          allow_pipes=allow_pipes, pipe_cwd=pipe_cwd)
    write_manifest(manifest, utts)
    rows = ["id\treason\tmessage"] + ["\t".join(re.sub(r"\s+", " ", f) for f in row) for row in report.skipped_ids]
    write_text(output_dir / f"{split}.skipped.tsv", "\n".join(rows) + "\n")
    write_json(output_dir / f"{split}.report.json", report.to_dict())
    write_json(marker, config)
    # A warning when anything was dropped, so the count reaches the user even without logging configured.
    (log.warning if report.num_skipped else log.info)("%s (details: %s)", report.summary(),
                                                      output_dir / f"{split}.skipped.tsv")
    return manifest
