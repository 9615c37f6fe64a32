"""The allowed range of every config field that has one, checked when a config loads (`config.from_dict`).

Without these checks a bad value travels until it breaks something far away: `train.epochs=0` ended in "checkpoint
not found" after the data was prepared, `train.device=tpu` in a raw torch error, `train.lr=.inf` in a run of NaN
losses. Checked at load, it is one line naming the file (or `--set`), the key, the value and what is allowed, before
anything runs.

RULES maps a config class name to {field: rule}. A rule is a function of the field's value that returns None when
the value is allowed, else the allowed range in words. A field whose value is None (where the type allows it: "all
data", "the preset's") is not checked. Types are checked before (config._check_type), so a rule sees the right type.
The choices of a few fields are the names the computing modules define (model presets, LR schedules, ...): they are
read from those modules when a config is checked, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib
import math
import re
from typing import Callable

Rule = Callable[[object], "str | None"]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def positive(v) -> str | None:
    return None if _finite(v) and v > 0 else "a finite number > 0"


def non_negative(v) -> str | None:
    return None if _finite(v) and v >= 0 else "a finite number >= 0"


def at_least(n: int) -> Rule:
    return lambda v: None if v >= n else f"an integer >= {n}"


def fraction(v) -> str | None:
    """Dropout: a probability below 1 (dropout 1 zeroes every activation)."""
    return None if _finite(v) and 0 <= v < 1 else "a number in [0, 1)"


def open_unit(v) -> str | None:
    return None if _finite(v) and 0 < v < 1 else "a number in (0, 1)"


def finite_at_least(n: float) -> Rule:
    return lambda v: None if _finite(v) and v >= n else f"a finite number >= {n:g}"


def one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else "one of " + ", ".join(repr(c) for c in choices)


def subset_of(*choices: str) -> Rule:
    def rule(v):
        bad = [x for x in v if x not in choices]
        return f"a list of {', '.join(choices)}" if bad else None
    return rule


def one_of_names(module: str, name: str) -> Rule:
    """The keys (or items) of `module.name`, e.g. the model presets: one list, the computing module's."""
    def rule(v):
        choices = tuple(getattr(importlib.import_module(f"xlingual.{module}"), name))
        return one_of(*choices)(v)
    return rule


def device(v) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else "'auto', 'cpu', 'cuda' or 'cuda:<index>'"


HOURS = positive  # a budget or corpus size in hours; null (where allowed) = all data

RULES: dict[str, dict[str, Rule]] = {
    "CorpusConfig": {"kind": one_of("synthetic", "manifests"), "train_hours": HOURS, "dev_hours": HOURS,
                     "test_hours": HOURS},
    "FeatureConfig": {"n_mels": at_least(1), "win_ms": positive, "hop_ms": positive, "freq_masks": at_least(0),
                      "freq_width": at_least(0), "time_masks": at_least(0), "time_width": at_least(0)},
    "UnitConfig": {"kind": one_of_names("tokenizer", "KINDS")},
    "ModelConfig": {"preset": one_of_names("model", "PRESETS"), "d_model": at_least(1), "n_heads": at_least(1),
                    "ffn_dim": at_least(1), "n_layers": at_least(1), "conv_kernel": at_least(1),
                    "subsample_channels": at_least(1), "dropout": fraction},
    "TrainConfig": {"epochs": at_least(1), "max_batch_seconds": positive, "lr": positive,
                    "weight_decay": non_negative, "schedule": one_of_names("schedules", "SCHEDULES"),
                    "warmup_steps": at_least(0), "stlr_cut_frac": open_unit, "stlr_ratio": finite_at_least(1),
                    "grad_clip": positive, "patience": at_least(0), "eval_from": fraction,
                    "checkpoint_every_steps": at_least(0),
                    "max_nonfinite": at_least(1), "device": device, "threads": at_least(0)},
    "DecodeConfig": {"method": one_of("greedy", "beam"), "beam_size": at_least(1), "max_batch_seconds": positive},
    "RecipeConfig": {"train_hours": HOURS},
    "AdaptRecipeConfig": {"train_hours": HOURS},
    "LIDConfig": {"train_hours": HOURS, "dev_hours": HOURS, "select": one_of_names("lid", "SELECT"),
                  "embed_dim": at_least(0), "frame_weight": non_negative, "crop_seconds": non_negative},
    "PhonotacticConfig": {"hours": HOURS, "dev_hours": HOURS, "order": at_least(1)},
    "AdaptConfig": {"mode": one_of_names("schedules", "MODES"), "transfer_layers": at_least(0),
                    "bottleneck": at_least(1), "lr_decay": positive, "stage_epochs": at_least(1)},
    "SSLConfig": {"layers": at_least(1), "mask_time_prob": fraction, "mask_time_length": at_least(1)},
    "MatrixConfig": {"source_hours": HOURS, "target_hours": HOURS, "small_source_hours": HOURS, "dev_hours": HOURS,
                     "spread_budgets": subset_of("small", "large"), "pool_budgets": subset_of("equal", "sum")},
}


def first_problem(cls_name: str, obj) -> tuple[str, object, str] | None:
    """(field, value, allowed range) of the first field of `obj` outside its range, in RULES order; else None."""
    for name, rule in RULES.get(cls_name, {}).items():
        value = getattr(obj, name)
        if value is None:
            continue
        allowed = rule(value)
        if allowed is not None:
            return name, value, allowed
    return None
