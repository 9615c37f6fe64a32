"""Checkpoints: what a run saves beside its weights, and how a model is rebuilt from one.

A checkpoint is a dict of plain tensors and data, loaded with `torch.load(weights_only=True)` so that a crafted
file cannot run code: {"model": state_dict, "meta": {...}} (+ "optimizer", "state", "run_key" in last.pt). The
meta says everything needed to use the model without its training config: the model dimensions, the task ("asr"
or "lid"), the feature settings, the unit set (ASR) or the languages (LID), and any adaptation layers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import __version__
from .config import to_dict
from .fileio import atomic_path
from .model import ARCHITECTURE, AcousticModel, dims_from_dict, dims_to_dict
from .tokenizer import Tokenizer

TASKS = ("asr", "lid")


class CheckpointError(ValueError):
    """A file that is not a usable xlingual checkpoint; the message names it and says what to do."""


def model_meta(model: AcousticModel, task: str, features, tokenizer: Tokenizer | None = None, **extra) -> dict:
    """The meta stored with the weights: plain data, enough to rebuild and use the model."""
    from .adapters import adaptation_spec

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    meta = {"toolkit": "xlingual", "version": __version__, "architecture": ARCHITECTURE, "task": task,
            "dims": dims_to_dict(model.dims), "features": to_dict(features), "adaptation": adaptation_spec(model)}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    return {**meta, **extra}


def save_checkpoint(path: str | Path, obj: dict) -> None:
    """Write atomically: a kill mid-write leaves the previous file, never a truncated one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load best.pt/last.pt safely (weights_only): {"model": state_dict, "meta": {...}, ...}.

    Raises:
        FileNotFoundError: no file at path.
        CheckpointError: the file is damaged or holds more than plain tensors and data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load checkpoint {path} safely: {e}. Only checkpoints written by xlingual "
                              f"(plain tensors and data) are accepted") from None


def load_model(path: str | Path, task: str | None = None) -> tuple[AcousticModel, Tokenizer | None, dict]:
    """Rebuild a model (with its adaptation layers), its tokenizer (ASR) and meta; refuses foreign files.

    task: "asr" or "lid" to refuse a checkpoint of the other task with a clear message.
    """
    from .adapters import add_adaptation

    ck = load_checkpoint(path)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if not isinstance(meta, dict) or meta.get("toolkit") != "xlingual" or "dims" not in meta \
            or not isinstance(ck.get("model"), dict):
        raise CheckpointError(f"{path} is not an xlingual checkpoint (no model dimensions recorded)")
    if meta.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{path} was written by xlingual {meta.get('version')} with model architecture "
                              f"{meta.get('architecture', 1)}; this xlingual ({__version__}) builds architecture "
                              f"{ARCHITECTURE} (padding-masked, batch-invariant): retrain it with this version")
    if task is not None and meta.get("task") != task:
        what = {"asr": "a speech recognizer (best.pt of `xlingual recipe` or a matrix run)",
                "lid": "a language-ID model (best.pt of `xlingual lid train`)"}[task]
        raise CheckpointError(f"{path} is a {meta.get('task')!r} checkpoint; this needs {what}")
    try:  # crafted or damaged dimensions fail here, not deep inside torch
        model = AcousticModel(dims_from_dict(meta["dims"]))
        spec = meta.get("adaptation") or {}
        if spec.get("kinds"):
            add_adaptation(model, spec["kinds"], spec.get("bottleneck", 32))
    except Exception as e:
        raise CheckpointError(f"{path}: its recorded model ({meta['dims']}, adaptation {meta.get('adaptation')}) "
                              f"cannot be built: {e}") from None
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the recorded model shape: {str(e)[:300]}") from None
    tok = None
    if "tokenizer" in meta:
        try:
            tok = Tokenizer.from_dict(meta["tokenizer"])
        except Exception as e:
            raise CheckpointError(f"{path}: its unit set (tokenizer) cannot be read: {e}") from None
        if tok.vocab_size != model.dims.vocab_size:  # units and output layer from different runs
            raise CheckpointError(f"{path}: its unit set has {tok.vocab_size} units but its output layer "
                                  f"{model.dims.vocab_size}; the checkpoint is inconsistent (pieced together from "
                                  f"different runs?): use the best.pt its training run wrote")
    if meta.get("task") == "lid" and len(meta.get("languages", [])) != model.dims.vocab_size:
        raise CheckpointError(f"{path}: {len(meta.get('languages', []))} languages recorded but "
                              f"{model.dims.vocab_size} outputs")
    if not all(bool(torch.isfinite(t).all()) for t in ck["model"].values() if t.is_floating_point()):
        raise CheckpointError(f"{path} holds non-finite (NaN/inf) weights: the run that wrote it diverged; "
                              f"retrain it (lower train.lr)")
    return model, tok, meta
