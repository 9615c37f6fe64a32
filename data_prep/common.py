"""What the corpus readers of data_prep/ share: reading a listing file line by line, reporting lines that are not UTF-8."""

from __future__ import annotations

from pathlib import Path

from xlingual.corpus import PrepReport


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
