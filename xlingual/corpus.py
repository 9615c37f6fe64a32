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


class EmptyManifestError(ManifestError):
    """A split with no utterance: an empty listing, or one whose every utterance was skipped at preparation."""


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

# The shortest utterance kept. The log-mel's STFT (n_fft 512, centred) cannot pad a signal of 256 samples (16 ms)
# or fewer and fails inside torch; 100 ms is well above that and leaves 3 output frames after the model's 4x
# subsampling (11 feature frames -> 6 -> 3): enough for a short word's CTC labels and for an LID average. Nothing
# shorter is speech a transcript can describe.
MIN_DURATION_S = 0.1
FEATURE_HOP_MS = 10.0  # the default FeatureConfig.hop_ms: 100 feature frames per second


def output_frames(duration: float, hop_ms: float = FEATURE_HOP_MS) -> int:
    """Model output frames for `duration` seconds of 16 kHz audio.

    The log-mel gives T = 1 + samples // hop frames (features.LogMel); the model's two stride-2 convolutions
    give ceil(ceil(T/2)/2) (model.subsampled_lengths): one output per 40 ms at the default hop.
    """
    t = 1 + int(round(duration * SAMPLE_RATE)) // int(round(hop_ms * SAMPLE_RATE / 1000))
    return ((t + 1) // 2 + 1) // 2


def ctc_min_frames(labels) -> int:
    """The fewest output frames CTC can align `labels` to: one per label, plus a blank between each two equal
    adjacent labels (CTC cannot emit "a a" without one)."""
    labels = list(labels)
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def ctc_feasible(n_output_frames: int, labels) -> bool:
    """Whether CTC can align `labels` (any sequence: unit ids, or a string's characters) to `n_output_frames`.

    When it cannot, the CTC loss of the utterance is infinite (or zeroed by zero_infinity, which hides it).
    At preparation the labels are estimated by the normalized transcript's characters (a space standing for the
    word separator unit); training can check the real unit sequence with the same function.
    """
    return n_output_frames >= ctc_min_frames(labels)


def read_manifest(path: str | os.PathLike, require_text: bool = True,
                  allow_empty: bool = True) -> list[Utterance]:
    """Read and validate a JSONL manifest; audio paths are resolved against the manifest's folder.

    Args:
        require_text: False accepts empty transcripts (audio-only manifests, e.g. a new language to rank
            sources for by language ID).
        allow_empty: False raises EmptyManifestError for a manifest without utterances (training and dev
            sets need some), with the preparation's account of what it skipped when its report is beside it.
    Raises:
        ManifestError naming the file and line of the first problem: bad JSON, missing/unknown fields, wrong
        types, empty text, non-positive or non-finite duration, a duration under MIN_DURATION_S (too short for
        the features), negative offset, duplicate ids.
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
        if duration < MIN_DURATION_S:
            raise ManifestError(f"{where}: utterance {rec['id']!r} is too short ({duration * 1000:.0f} ms; the "
                                f"minimum is {MIN_DURATION_S * 1000:.0f} ms, below which features cannot be "
                                f"computed); remove it from the manifest (data preparation skips such clips)")
        if rec["id"] in seen:
            raise ManifestError(f"{where}: duplicate utterance id {rec['id']!r} (first on line {seen[rec['id']]})")
        seen[rec["id"]] = lineno
        audio = Path(rec["audio"])
        rec["audio"] = str(audio if audio.is_absolute() else (path.parent / audio).resolve())
        utts.append(Utterance(**rec))
    if not utts and not allow_empty:
        raise EmptyManifestError(f"{path}: no utterances{_prep_account(path)}")
    return utts


def _prep_account(manifest: Path) -> str:
    """The end of an empty-manifest message: what its preparation (`<split>.report.json` beside it) skipped."""
    stem = manifest.with_suffix("")
    try:
        skipped = dict(read_json(Path(f"{stem}.report.json"))["skipped"])
    except (OSError, ValueError, KeyError, TypeError):
        skipped = {}
    if not skipped:
        return "; prepare the split again (xlingual prepare ...), or use a manifest with utterances"
    return (f"; its preparation skipped {sum(skipped.values())}: {', '.join(f'{r} x{n}' for r, n in skipped.items())} "
            f"({stem}.skipped.tsv names each one and its fix): fix the input and prepare it again")


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
# transcript as written); build_manifest() then checks every one the same way: unique id, normalizable
# transcript, decodable finite audio, measured duration of at least MIN_DURATION_S, a transcript CTC can align
# to it. Bad utterances go through PrepReport.skip(): counted by reason and listed in <split>.skipped.tsv, or,
# with strict=True, raised with the file:line (or utterance id) and the fix. prepare_split() writes the files
# and refuses a split left without utterances.
#
# Skip reasons: malformed line, non-UTF-8 transcript, duplicate id, missing transcript, empty transcript,
# unnormalizable transcript, no audio (a transcript without audio), no transcript (audio without a transcript),
# unknown recording, bad segment, segment past end, missing audio, unreadable audio, truncated audio, empty audio,
# non-finite audio, too short, transcript too long, pipe command failed, pipe not allowed.
# --------------------------------------------------------------------------------------------------------------

PREP_VERSION = 2  # bump when preparation changes what it writes, so that completed outputs are rebuilt
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
    noted: list[tuple[str, str, str]] = field(default_factory=list)  # (id, note, message): kept, with a problem
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

    def note(self, what: str, utt_id: str | None = None, message: str | None = None) -> None:
        """Count a change made to a kept utterance; with a message, also list it (by id) in the report."""
        self.notes[what] = self.notes.get(what, 0) + 1
        if message is not None:
            self.noted.append((utt_id or "", what, message))

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def reasons(self) -> str:
        """'reason xK, ...', the most frequent first."""
        return ", ".join(f"{r} x{n}" for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))

    def summary(self) -> str:
        """One line: 'kept N, skipped M: reason xK, ...' (+ notes)."""
        line = f"{self.split}: kept {self.kept} ({self.hours:.2f} h), skipped {self.num_skipped}"
        if self.skipped:
            line += ": " + self.reasons
        if self.notes:
            line += "; notes: " + ", ".join(f"{r} x{n}" for r, n in sorted(self.notes.items()))
        return line

    def to_dict(self) -> dict:
        return {"split": self.split, "kept": self.kept, "hours": round(self.hours, 4),
                "skipped_total": self.num_skipped, "skipped": dict(self.skipped), "notes": dict(self.notes),
                "noted": [{"id": i, "note": n, "message": m} for i, n, m in self.noted]}


def build_manifest(raws: list[RawUtterance], language: str, output_dir: str | os.PathLike, split: str,
                   report: PrepReport, *, require_text: bool = True,
                   audio_source: Callable[[RawUtterance], str | bytes] | None = None) -> list[Utterance]:
    """Check, decode and normalize raw utterances into manifest entries; bad ones go to `report`.

    Transcripts are normalized with text.normalize_or_raise for `language`; without require_text, a transcript
    that cannot be used leaves the audio in without text (noted in the report). Audio is decoded in full (which
    is what catches unreadable, truncated, empty and NaN/inf audio) and its duration measured: clips under
    MIN_DURATION_S, and transcripts CTC cannot align to the clip's output frames (ctc_feasible, one label per
    character), are skipped. A 16 kHz mono
    WAV/FLAC file is referenced in place (with its segment offset); anything else (other rates, several
    channels, MP3/OGG, HF bytes, Kaldi command output) is written as a 16 kHz mono WAV to
    `output_dir/audio/<split>/<id>.wav`, so the manifest only points at plain files.

    Args:
        audio_source: turns a raw utterance's `audio` into a file path or encoded bytes, raising AudioError
            (e.g. data_prep.kaldi runs wav.scp commands); default: `audio` as it is.
    """
    from .progress import progress
    from .text import warn_generic_normalization

    audio_dir = Path(output_dir) / "audio" / split
    seen: dict[str, str] = {}
    utts: list[Utterance] = []
    if any(raw.text is not None for raw in raws):
        warn_generic_normalization(language)
    with progress(total=len(raws), desc=f"prepare {split}", unit="utt") as bar:
        for raw in raws:
            bar.set_postfix(kept=len(utts), skipped=report.num_skipped)
            bar.update()
            if raw.id in seen:
                report.skip(raw.id, "duplicate id", f"{raw.where}: duplicate utterance id {raw.id!r} (first at "
                                                    f"{seen[raw.id]}); rename or remove one of them")
                continue
            seen[raw.id] = raw.where
            utt = _build_one(raw, language, audio_dir, report, require_text, audio_source)
            if utt is not None:
                utts.append(utt)
        bar.set_postfix(kept=len(utts), skipped=report.num_skipped)
    report.kept = len(utts)
    report.hours = total_hours(utts)
    return utts


def _build_one(raw: RawUtterance, language: str, audio_dir: Path, report: PrepReport, require_text: bool,
               audio_source: Callable[[RawUtterance], str | bytes] | None) -> Utterance | None:
    """build_manifest for one utterance: its manifest entry, or None when it was skipped (into `report`)."""
    from .text import TextError, normalize_or_raise  # text.py does not import corpus; late import keeps it so

    text = ""
    if raw.text is None and require_text:
        return report.skip(raw.id, "missing transcript", f"{raw.where}: utterance {raw.id!r} has no transcript; "
                                                         f"add one, or prepare with require_text=False")
    if raw.text is not None:
        try:
            text = normalize_or_raise(raw.text, language, f"{raw.where}: utterance {raw.id!r}")
        except TextError as e:
            reason = "unnormalizable transcript" if raw.text.strip() else "empty transcript"
            if require_text:
                return report.skip(raw.id, reason, str(e))
            report.note(f"{reason} (audio kept without text)", raw.id, f"{e}; the audio is kept without text")
    try:
        source = raw.audio if audio_source is None else audio_source(raw)
        wav = load_audio(source, SAMPLE_RATE, offset=raw.offset, duration=raw.duration)
        sr, _, channels = audio_info(source)
    except AudioError as e:
        msg = str(e) if str(e).startswith(raw.where) else f"{raw.where}: utterance {raw.id!r}: {e}"
        return report.skip(raw.id, e.reason, msg, AudioError)
    duration = round(len(wav) / SAMPLE_RATE, 4)
    if duration < MIN_DURATION_S:
        return report.skip(raw.id, "too short", f"{raw.where}: utterance {raw.id!r} is {duration * 1000:.0f} ms "
                                                f"long, under the {MIN_DURATION_S * 1000:.0f} ms minimum (features "
                                                f"cannot be computed); remove it, or fix its segment times")
    frames = output_frames(duration)
    if text and not ctc_feasible(frames, text):
        return report.skip(raw.id, "transcript too long", (
            f"{raw.where}: utterance {raw.id!r}: its transcript needs at least {ctc_min_frames(text)} output "
            f"frames ({len(text)} characters, spaces included, and one per doubled letter) but {duration:.2f} s "
            f"gives {frames} output frames (one per 40 ms), so CTC cannot align it; check that the transcript "
            f"belongs to this audio (or the segment times), or remove it"))
    if sr != SAMPLE_RATE:
        report.note(f"resampled {sr}->{SAMPLE_RATE} Hz")
    if channels > 1:
        report.note(f"downmixed {channels} channels to mono")
    if isinstance(source, str) and Path(source).suffix.lower() in IN_PLACE_SUFFIXES and sr == SAMPLE_RATE \
            and channels == 1:
        audio, offset = str(Path(source).resolve()), raw.offset
    else:
        audio, offset = str(audio_dir / f"{safe_file_name(raw.id)}.wav"), 0.0
        save_audio(audio, wav, SAMPLE_RATE)
    return Utterance(id=raw.id, audio=audio, text=text, language=language, speaker=raw.speaker, duration=duration,
                     offset=offset)


def prepare_split(output_dir: str | os.PathLike, split: str, language: str, config: dict,
                  read: Callable[[PrepReport], list[RawUtterance]], *, strict: bool = False,
                  require_text: bool = True, audio_source: Callable[[RawUtterance], str | bytes] | None = None,
                  source: str | os.PathLike | None = None) -> Path:
    """Prepare one split: read -> build_manifest -> `<split>.jsonl`, `.skipped.tsv`, `.report.json`, `.done.json`.

    Idempotent: if `<split>.done.json` holds the same `config` (corpus, inputs with their sizes and times,
    options), nothing is redone. The marker is written last, so an interrupted run is redone in full.

    Args:
        config: JSON-able description of the inputs and options; `read` turns them into raw utterances.
        audio_source: see build_manifest.
        source: the file or folder that lists the split, named when it yields no utterance.
    Returns:
        the manifest path.
    Raises:
        TextError: `language` is not a language code.
        EmptyManifestError: no utterance was kept (an empty listing, or every one skipped). No manifest is
            written (an older one is removed); `.skipped.tsv` and `.report.json` say why.
    """
    from .text import check_language_code

    check_language_code(language)
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
    skipped_tsv = output_dir / f"{split}.skipped.tsv"
    rows = ["id\treason\tmessage"] + ["\t".join(re.sub(r"\s+", " ", f) for f in row) for row in report.skipped_ids]
    write_text(skipped_tsv, "\n".join(rows) + "\n")
    write_json(output_dir / f"{split}.report.json", report.to_dict())
    if not utts:
        manifest.unlink(missing_ok=True)  # an older manifest would stand in for inputs it no longer matches
        raise EmptyManifestError(_empty_split_message(source, split, report, skipped_tsv))
    write_manifest(manifest, utts)
    write_json(marker, config)
    # A warning when anything was dropped, so the count reaches the user even without logging configured.
    (log.warning if report.num_skipped else log.info)("%s (details: %s)", report.summary(), skipped_tsv)
    return manifest


def _empty_split_message(source, split: str, report: PrepReport, skipped_tsv: Path) -> str:
    where = str(source) if source is not None else f"split {split!r}"
    if report.num_skipped:
        return (f"{where}: all {report.num_skipped} utterances of split {split!r} were skipped ({report.reasons}), "
                f"so no manifest was written; {skipped_tsv} names each one and its fix (or run with --strict to stop "
                f"at the first)")
    empty = source is not None and Path(source).is_file() and Path(source).stat().st_size == 0
    return (f"{where}: {'is empty (0 bytes)' if empty else 'lists no utterance'}, so split {split!r} has nothing "
            f"to prepare; re-create or re-download it, or leave the split out (--splits / splits=[...])")
