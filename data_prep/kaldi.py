"""Kaldi data dirs (e.g. IARPA Babel after a Kaldi recipe's data preparation) -> manifests.

    from data_prep.kaldi import prepare_kaldi
    prepare_kaldi("egs/babel/s5d/data", "manifests/bn", "bn", splits=["train", "dev10h"], root="egs/babel/s5d")
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

from xlingual.audio import AudioError
from xlingual.corpus import EmptyManifestError, ManifestError, PrepReport, RawUtterance, prepare_split

from .common import fingerprint, prepare_splits, read_lines

KALDI_FILES = ("wav.scp", "text", "segments", "utt2spk")
PIPE_TIMEOUT_S = 600  # one Kaldi wav.scp command (a whole recording) should never take this long


def prepare_kaldi(data_root: str | os.PathLike, output_dir: str | os.PathLike, language: str,
                  splits: list[str] | tuple[str, ...] | None = None, *, strict: bool = False,
                  allow_pipes: bool = True, root: str | os.PathLike | None = None,
                  require_text: bool = True) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for Kaldi data dirs.

    wav.scp entries may be commands ending in '|' (`sph2pipe -f wav -p a.sph |`, `sox a.sph -t wav - |`). They
    are the user's own data preparation and are run as Kaldi runs them, through the shell (with `root` as the
    working directory); their output is decoded and saved as 16 kHz WAV under `output_dir/audio/<split>/`.
    A wav.scp from elsewhere is therefore code: pass allow_pipes=False (`--no-pipes`) to refuse to run commands
    (those utterances are then skipped and counted, or raise if strict).

    Args:
        data_root: a Kaldi data dir (holding wav.scp): one split, named `splits[0]` or after the folder; or a
            folder of data dirs (Kaldi's `data/`): `splits` names the sub-folders (default: every one with a
            wav.scp).
        language: language code for text normalization and the manifest.
        strict: raise on the first bad utterance (ManifestError/AudioError naming file:line and the fix)
            instead of skipping it; skips are listed in `<split>.skipped.tsv` and counted in `<split>.report.json`.
        root: folder relative wav.scp paths and commands are relative to (Kaldi's recipe dir; default: cwd).
    Returns:
        {split: manifest path}.
    Raises:
        ManifestError: a named split has no data dir (nothing is written then), or a split cannot be prepared
            (the others are, first; see common.prepare_splits).
    """
    data_root = Path(data_root)
    if (data_root / "wav.scp").is_file():
        if splits is not None and len(splits) != 1:
            raise ValueError(f"{data_root} is a single Kaldi data dir; pass one split name, not {list(splits)}")
        dirs = {(splits[0] if splits else data_root.name): data_root}
    elif data_root.is_dir():
        names = list(splits) if splits is not None else \
            sorted(d.name for d in data_root.iterdir() if (d / "wav.scp").is_file())
        if not names:
            raise ManifestError(f"{data_root}: no Kaldi data dirs (sub-folders holding wav.scp) found")
        dirs = {name: data_root / name for name in names}
    else:
        raise ManifestError(f"Kaldi data folder not found: {data_root}")
    root = Path(root).resolve() if root is not None else Path.cwd()
    for split, data_dir in dirs.items():  # every split's files, before any split is written
        _check_data_dir(data_dir, require_text, split)

    def job(split: str, data_dir: Path):
        config = {"corpus": "kaldi", "data_dir": str(data_dir.resolve()), "root": str(root),
                  "allow_pipes": allow_pipes, "inputs": fingerprint(*(data_dir / f for f in KALDI_FILES))}
        return lambda: prepare_split(
            output_dir, split, language, config,
            lambda report: read_kaldi_dir(data_dir, report, require_text=require_text, root=root),
            strict=strict, require_text=require_text, audio_source=PipeAudio(allow_pipes, root), source=data_dir)

    return prepare_splits({split: job(split, d) for split, d in dirs.items()}, strict)


def _check_data_dir(data_dir: Path, require_text: bool, split: str | None = None) -> None:
    """Raise ManifestError unless `data_dir` holds wav.scp (and text, when required)."""
    what = f"split {split!r}: " if split else ""
    if not (data_dir / "wav.scp").is_file():
        raise ManifestError(f"{what}{data_dir}: no wav.scp; a Kaldi data dir holds wav.scp and text "
                            f"(optionally segments, utt2spk)")
    if require_text and not (data_dir / "text").is_file():
        raise ManifestError(f"{what}{data_dir}: no text file; add one, or pass require_text=False for audio-only "
                            f"data")


def _kaldi_table(path: Path, report: PrepReport, *, reason: str = "malformed line",
                 value_required: bool = True) -> dict[str, tuple[str, str]]:
    """A Kaldi 'key value...' file as {key: (where, value)}; malformed and duplicate lines are reported."""
    table: dict[str, tuple[str, str]] = {}
    for _, where, line in read_lines(path, report, reason):
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
    output is WAV; prepare_kaldi runs them (PipeAudio). Relative paths are resolved against `root` (Kaldi runs from the
    recipe directory; default: the current directory). Without utt2spk each utterance is its own speaker, as in
    Kaldi. Inconsistencies between the files are reported per utterance (see the skip reasons above).

    Raises:
        ManifestError: no wav.scp, or no text file while `require_text`; EmptyManifestError: `text` is empty.
    """
    data_dir = Path(data_dir)
    root = Path(root) if root is not None else Path.cwd()
    wav_scp, text_file = data_dir / "wav.scp", data_dir / "text"
    segments_file, utt2spk_file = data_dir / "segments", data_dir / "utt2spk"
    _check_data_dir(data_dir, require_text)
    if require_text and text_file.stat().st_size == 0:
        raise EmptyManifestError(f"{text_file} is empty (0 bytes): no transcripts, so nothing to prepare from "
                                 f"{data_dir}; re-create it (did the step that writes it fail?), or leave the split "
                                 f"out (--splits)")

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
        for _, where, line in read_lines(segments_file, report):
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


def is_command(audio) -> bool:
    """Whether a wav.scp value is a command whose output is the audio (`... |`) rather than a file path."""
    return isinstance(audio, str) and audio.rstrip().endswith("|")


class PipeAudio:
    """build_manifest's audio_source for wav.scp values: a file path as it is, a command's output as WAV bytes.

    The last command's output (or its error) is kept: the segments of one recording are consecutive, so each
    command runs once.
    """

    def __init__(self, allow: bool = True, cwd: str | os.PathLike | None = None):
        self.allow, self.cwd = allow, cwd
        self._last: tuple[str, bytes | AudioError] | None = None

    def __call__(self, raw: RawUtterance) -> str | bytes:
        if not is_command(raw.audio):
            return raw.audio
        if not self.allow:
            raise AudioError(f"{raw.where}: audio is a command (`{raw.audio}`), and running commands is off "
                             f"(--no-pipes, allow_pipes=False); convert the audio to files and list those, or "
                             f"prepare without --no-pipes if you trust this wav.scp", reason="pipe not allowed")
        if self._last is None or self._last[0] != raw.audio:
            try:
                self._last = (raw.audio, run_pipe(raw.audio, raw.where, self.cwd))
            except AudioError as e:
                self._last = (raw.audio, e)
        if isinstance(self._last[1], AudioError):
            raise self._last[1]
        return self._last[1]


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
