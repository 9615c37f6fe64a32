"""What the corpus preparations of data_prep/ share: listing files read line by line (lines not in UTF-8
reported), input fingerprints, and several splits prepared without stopping half-way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from xlingual.corpus import EmptyManifestError, ManifestError, PrepReport


def read_lines(path: Path, report: PrepReport, reason: str = "malformed line", id_field: int | None = None):
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


def fingerprint(*paths: str | os.PathLike) -> list:
    """[path, size, mtime_ns] per input file (None if absent): a changed corpus file invalidates a prepared split."""
    out = []
    for p in paths:
        p = Path(p)
        st = p.stat() if p.exists() else None
        out.append([str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def prepare_splits(jobs: dict[str, Callable[[], Path]], strict: bool = False) -> dict[str, Path]:
    """Run each split's preparation (`jobs`: split -> a prepare_split call) and return {split: manifest}.

    A split that cannot be prepared (an empty listing, a bad header) does not stop the others, so that a run
    never ends half-way: the rest are prepared (and reused by the next run), then one ManifestError names each
    split that failed. With `strict`, the first error stops.
    """
    out: dict[str, Path] = {}
    failed: list[ManifestError] = []
    for split, job in jobs.items():
        try:
            out[split] = job()
        except ManifestError as e:
            if strict:
                raise
            failed.append(e)
    if failed:
        done = f" (prepared: {', '.join(out)})" if out else ""
        error = EmptyManifestError if all(isinstance(e, EmptyManifestError) for e in failed) else ManifestError
        raise error(" | ".join(str(e) for e in failed) + done)
    return out
