"""Kaldi data dirs (e.g. IARPA Babel after a Kaldi recipe's data preparation) -> manifests.

    from data_prep.kaldi import prepare_kaldi
    prepare_kaldi("egs/babel/s5d/data", "manifests/bn", "bn", splits=["train", "dev10h"], root="egs/babel/s5d")
"""

from __future__ import annotations

import os
from pathlib import Path

from xlingual.corpus import ManifestError, fingerprint, prepare_split, read_kaldi_dir

KALDI_FILES = ("wav.scp", "text", "segments", "utt2spk")


def prepare_kaldi(data_root: str | os.PathLike, output_dir: str | os.PathLike, language: str,
                  splits: list[str] | tuple[str, ...] | None = None, *, strict: bool = False,
                  allow_pipes: bool = True, root: str | os.PathLike | None = None,
                  require_text: bool = True) -> dict[str, Path]:
    """Write `output_dir/<split>.jsonl` for Kaldi data dirs.

    wav.scp entries may be commands ending in '|' (`sph2pipe -f wav -p a.sph |`, `sox a.sph -t wav - |`). They
    are the user's own data preparation and are run as Kaldi runs them, through the shell (with `root` as the
    working directory); their output is decoded and saved as 16 kHz WAV under `output_dir/audio/<split>/`.
    Pass allow_pipes=False to refuse to run commands (those utterances are then skipped, or raise if strict).

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

    out = {}
    for split, data_dir in dirs.items():
        config = {"corpus": "kaldi", "data_dir": str(data_dir.resolve()), "root": str(root),
                  "inputs": fingerprint(*(data_dir / f for f in KALDI_FILES))}
        out[split] = prepare_split(
            output_dir, split, language, config,
            lambda report, d=data_dir: read_kaldi_dir(d, report, require_text=require_text, root=root),
            strict=strict, require_text=require_text, allow_pipes=allow_pipes, pipe_cwd=root)
    return out
