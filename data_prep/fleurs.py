"""Google FLEURS -> manifests, from the raw hub layout or a HF `datasets.Dataset`.

Raw layout (as google/fleurs stores it on the HF hub, e.g. after
`huggingface-cli download google/fleurs --repo-type dataset --include "data/bn_in/*"`):

    data/<config>/<split>.tsv               no header; columns FLEURS_COLUMNS; split = train | dev | test
    data/<config>/audio/<split>.tar.gz      WAV files; extracted in place it gives audio/<split>/*.wav

    from data_prep.fleurs import prepare_fleurs
    prepare_fleurs("fleurs/data/bn_in", "manifests/fleurs_bn", "bn")
    prepare_fleurs(load_dataset("google/fleurs", "bn_in"), "manifests/fleurs_bn", "bn")   # a DatasetDict
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from xlingual.corpus import ManifestError, PrepReport, RawUtterance, prepare_split
from xlingual.fileio import WriteError, atomic_path, read_json, write_json
from xlingual.progress import progress

from .common import fingerprint, prepare_splits, read_lines
from .hf import read_hf_dataset

FLEURS_REPO = "google/fleurs"
SPLITS = ("train", "dev", "test")
# google/fleurs <split>.tsv has no header; these are its columns in order (the loading script's _get_data).
FLEURS_COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "phonetic_transcription",
                  "num_samples", "gender")
# The hub files say "dev"; the datasets loader calls that split "validation". Either name finds either.
_ALIASES = {"dev": "validation", "validation": "dev"}

log = logging.getLogger(__name__)


def prepare_fleurs(source, output_dir: str | os.PathLike, language: str,
                   splits: list[str] | tuple[str, ...] | None = None, *, strict: bool = False,
                   config: str | None = None) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for FLEURS splits.

    Transcripts are the raw transcriptions, normalized for `language` like every other corpus. FLEURS has no
    speaker ids (its splits are speaker-disjoint): the speaker is `fleurs-<config or language>-<split>`.
    In the raw layout, WAV files are referenced in place if `audio/<split>/` is extracted; otherwise
    `audio/<split>.tar.gz` is extracted into `output_dir/fleurs_audio/<split>/` (the corpus folder is only
    read). HF audio (bytes) is decoded with soundfile and saved as 16 kHz WAV under `output_dir/audio/<split>/`.

    Args:
        source: the raw layout (`data/<config>` folder, or the repo/`data` folder with `config`); a
            `datasets.Dataset` (one split: `splits` or its own `.split` names it) or `DatasetDict`; or a config
            name such as "bn_in", loaded with `load_dataset("google/fleurs", config)` (needs the network).
        splits: default: those of train, dev, test that the source has (a warning names the missing ones; a
            Dataset: its own split). A split named here that the source lacks is an error before anything is
            written.
        strict: raise on the first bad utterance (naming file:line or dataset[row] and the fix) instead of
            skipping it; skips are listed in `<split>.skipped.tsv` and counted in `<split>.report.json`.
    Returns:
        {split: manifest path}.
    Raises:
        ManifestError: a named split is missing, or a split cannot be prepared (the others are, first).
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).exists():
        return _prepare_raw(Path(source), Path(output_dir), language, splits, strict, config)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and ("/" in source or os.sep in source)):
        raise ManifestError(f"FLEURS folder not found: {source}")  # config names ("bn_in") have no slashes
    if isinstance(source, str):
        return _prepare_hub(source, Path(output_dir), language, splits or SPLITS, strict)
    if hasattr(source, "column_names") and isinstance(source.column_names, list):  # one datasets.Dataset
        if splits is None:
            if source.split is None:
                raise ValueError("this Dataset does not know its split; pass splits=['train'] (one name)")
            splits = [str(source.split)]
        if len(splits) != 1:
            raise ValueError(f"a Dataset is one split; pass one split name, not {list(splits)}")
        return {splits[0]: _prepare_dataset(source, Path(output_dir), language, splits[0], strict, config)}
    if hasattr(source, "keys"):  # datasets.DatasetDict
        keys = {split: split if split in source else _ALIASES.get(split) for split in splits or SPLITS}
        for split, key in keys.items():
            if key not in source:
                raise ManifestError(f"split {split!r} is not in the DatasetDict (splits: {list(source.keys())})")
        jobs = {split: lambda s=split, k=key: _prepare_dataset(source[k], Path(output_dir), language, s, strict, config)
                for split, key in keys.items()}
        return prepare_splits(jobs, strict)
    raise ManifestError(f"FLEURS source not found or not understood: {source!r} (a folder, a config name, a "
                        f"Dataset or a DatasetDict)")


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
    for _, where, line in read_lines(tsv, report, reason="non-UTF-8 transcript", id_field=1):
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


def _config_dir(root: Path, config: str | None) -> Path:
    """The folder holding `<split>.tsv`: `root` itself, or `root/data/<config>`, `root/<config>`."""
    candidates = [root] + ([root / "data" / config, root / config] if config else [])
    for d in candidates:
        if any((d / f"{s}.tsv").is_file() for s in (*SPLITS, "validation")):
            return d
    hint = "" if config else " (pass config='bn_in' if it is the repository or data/ folder)"
    raise ManifestError(f"{root}: no FLEURS <split>.tsv found{hint}; expected data/<config>/train.tsv, dev.tsv, "
                        f"test.tsv as in the google/fleurs hub repository")


def _extract_wavs(tar_path: Path, dest: Path) -> Path:
    """Extract the WAV files of a FLEURS `<split>.tar.gz` into `dest` (flat: the archive holds <split>/*.wav).

    Members are written by base name only, so no archive path can escape `dest`; still, an archive with a member
    that would (an absolute path, `..`, a link out: tarfile's "data" filter) is refused as tampered with, and so
    is one whose WAV names repeat. A marker with the archive's size and time makes a second call free, and an
    interrupted one starts over.
    """
    marker = dest / ".extracted.json"
    stamp = fingerprint(tar_path)
    if marker.is_file() and read_json(marker) == stamp:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:*") as tf, progress(desc=f"extract {tar_path}", unit="file") as bar:
            seen: dict[str, str] = {}
            for member in tf:
                bar.update()
                _check_member(member, tar_path, dest)
                if member.isfile() and member.name.lower().endswith(".wav"):
                    name = Path(member.name).name
                    if name in seen:
                        raise ManifestError(f"{tar_path}: members {seen[name]!r} and {member.name!r} are both "
                                            f"{name}; not a FLEURS archive (download it again)")
                    seen[name] = member.name
                    src = tf.extractfile(member)
                    with atomic_path(dest / name) as tmp, open(tmp, "wb") as f:
                        shutil.copyfileobj(src, f)
    except WriteError:  # our side (disk full, permissions), not the archive's
        raise
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ManifestError(f"{tar_path}: cannot extract ({e}); the archive is damaged or incomplete, "
                            f"download it again") from None
    write_json(marker, stamp)
    return dest


def _check_member(member: tarfile.TarInfo, tar_path: Path, dest: Path) -> None:
    """Raise ManifestError for an archive member whose path or link points outside the extraction folder."""
    name = member.name.replace("\\", "/")
    why = None
    if name.startswith("/") or (name[:1].isalpha() and name[1:3] == ":/"):  # POSIX or Windows (C:/...)
        why = "has an absolute path"
    elif ".." in PurePosixPath(name).parts:
        why = "has '..' in its path"
    elif hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: links out, device files, ...
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as e:
            why = f"is refused by tarfile's data filter ({e})"
    if why:
        raise ManifestError(f"{tar_path}: member {member.name!r} {why}; refusing to extract an archive that could "
                            f"write outside {dest} (not a FLEURS archive, or tampered with): download it again")


def _prepare_raw(root: Path, output_dir: Path, language: str, splits, strict: bool,
                 config: str | None) -> dict[str, Path]:
    cdir = _config_dir(root, config)
    name = config or cdir.name
    found: dict[str, tuple[Path, str]] = {}  # split -> (tsv, its name on disk); all checked before any is written
    missing = []
    for split in splits or SPLITS:
        disk = split if (cdir / f"{split}.tsv").is_file() else _ALIASES.get(split, split)
        tsv = cdir / f"{disk}.tsv"
        if not tsv.is_file():
            missing.append(tsv)
            continue
        if not (cdir / "audio" / disk).is_dir() and not (cdir / "audio" / f"{disk}.tar.gz").is_file():
            raise ManifestError(f"no FLEURS audio for {split!r}: neither {cdir / 'audio' / disk}/ nor "
                                f"{cdir / 'audio' / disk}.tar.gz; download data/{name}/audio/{disk}.tar.gz from "
                                f"{FLEURS_REPO}")
        found[split] = (tsv, disk)
    if missing and splits is not None:
        raise ManifestError(f"{', '.join(map(str, missing))} not found; download "
                            f"{', '.join(f'data/{name}/{t.name}' for t in missing)} from {FLEURS_REPO} (nothing "
                            f"was prepared)")
    if missing:
        log.warning("%s: %s missing, so preparing %s only (download them from %s for the other splits)", cdir,
                    ", ".join(t.name for t in missing), ", ".join(found), FLEURS_REPO)

    def job(split: str, tsv: Path, disk: str):
        def run() -> Path:
            audio_dir, tar_path = cdir / "audio" / disk, cdir / "audio" / f"{disk}.tar.gz"
            if not audio_dir.is_dir():
                audio_dir = _extract_wavs(tar_path, output_dir / "fleurs_audio" / disk)
            cfg = {"corpus": "fleurs", "tsv": str(tsv.resolve()), "audio_dir": str(audio_dir.resolve()),
                   "inputs": fingerprint(tsv, tar_path)}
            speaker = f"fleurs-{name}-{split}"
            return prepare_split(output_dir, split, language, cfg,
                                 lambda report: read_fleurs_tsv(tsv, audio_dir, report, speaker=speaker),
                                 strict=strict, source=tsv)
        return run

    return prepare_splits({split: job(split, tsv, disk) for split, (tsv, disk) in found.items()}, strict)


def _prepare_dataset(ds, output_dir: Path, language: str, split: str, strict: bool, config: str | None) -> Path:
    # datasets gives every Dataset a fingerprint of its content and transforms (random for in-memory ones, so
    # those are always redone: nothing else can tell whether they changed).
    cfg = {"corpus": "fleurs-hf", "fingerprint": getattr(ds, "_fingerprint", None), "rows": len(ds)}
    name = f"fleurs:{config or language}:{split}"
    return prepare_split(output_dir, split, language, cfg,
                         lambda report: read_hf_dataset(ds, report, text_column="raw_transcription", name=name,
                                                        speaker=f"fleurs-{config or language}-{split}"),
                         strict=strict, source=name)


def _prepare_hub(config: str, output_dir: Path, language: str, splits, strict: bool) -> dict[str, Path]:
    """load_dataset("google/fleurs", config) per split; download problems become one clear error."""
    from datasets import load_dataset

    out = {}
    for split in splits:
        hf_split = "validation" if split == "dev" else split
        try:
            ds = load_dataset(FLEURS_REPO, config, split=hf_split)
        except Exception as e:  # network, unknown config, loader changes: say what to do instead
            raise ManifestError(f"load_dataset({FLEURS_REPO!r}, {config!r}, split={hf_split!r}) failed: "
                                f"{type(e).__name__}: {e}. Download the raw files instead "
                                f"(huggingface-cli download {FLEURS_REPO} --repo-type dataset --include "
                                f"'data/{config}/*') and pass the data/{config} folder") from None
        out[split] = _prepare_dataset(ds, output_dir, language, split, strict, config)
    return out
