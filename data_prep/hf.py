"""A Hugging Face `datasets.Dataset` (one split, with an Audio column) -> raw utterances for build_manifest.

Used by data_prep.fleurs for `load_dataset("google/fleurs", ...)`; any dataset with an audio and a text column
reads the same way.
"""

from __future__ import annotations

from pathlib import Path

from xlingual.corpus import ManifestError, PrepReport, RawUtterance


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
