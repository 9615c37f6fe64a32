"""Learning-rate schedules, discriminative learning rates and freezing plans — pure functions, no training loop.

- `lr_factor(step, total_steps, cfg)`: the multiplier of each group's peak LR at an optimizer step
  (linear warm-up + cosine, warm-up + constant, or ULMFiT's slanted triangular LR).
- `discriminative_lrs` / `param_groups`: ULMFiT's per-layer learning rates, lower layers learning slower, as
  AdamW parameter groups named after `AcousticModel.layer_groups()` (plus extra groups such as "adaptation").
- Freezing plans as data: a plan is a list of stages `(trainable group names, epochs or None = the rest)`.
  `plan_for` builds the standard ones (head only, full, adaptation layers only, chain-thaw, gradual
  unfreezing); the loop calls `apply_trainable(model, groups, trainable_at(plan, epoch))` at each epoch start.

Transferring only the bottom k layers combines with any plan: `model.reinit_layers_from(k)` re-initializes conformer
layers k..n-1, and passing `new=new_groups_after_reinit(names, k)` to `plan_for` makes those fresh layers train
together with the new head wherever the plan trains "new layers" (the head-only stage of "head", "chain_thaw" and
"gradual_unfreeze"). Without it, "head" would leave the re-initialized layers frozen at their random weights.

References: Howard & Ruder 2018 (ULMFiT: slanted triangular LR, discriminative fine-tuning, gradual unfreezing);
Felbo et al. 2017 (DeepMoji: chain-thaw).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

SCHEDULES = ("warmup_cosine", "warmup_constant", "stlr")
MODES = ("head", "full", "adaptation", "full+adaptation", "chain_thaw", "gradual_unfreeze")
ADAPTATION = "adaptation"  # the group name that stands for all adaptation layers (adapters.py)
ULMFIT_DECAY = 2.6  # Howard & Ruder 2018: each layer's LR is the one above divided by 2.6

# A stage: (names of the trainable groups, number of epochs; None = all remaining epochs). A plan: stages in order.
Stage = tuple[frozenset[str], int | None]
Plan = list[Stage]


# ----------------------------------------------------------------------------------------------------------------
# Learning-rate schedules


def _warmup(step: int, warmup_steps: int) -> float:
    # (step + 1) / (warmup + 1) rather than step / warmup: the first step already learns something, and the peak
    # is reached exactly at step == warmup_steps (as nanoGPT's get_lr does)
    return min(1.0, (step + 1) / (warmup_steps + 1))


def stlr_factor(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """Slanted triangular LR (Howard & Ruder 2018, eq. 3) as a fraction of lr_max.

    cut = floor(T * cut_frac); p = t / cut while t < cut, else 1 - (t - cut) / (cut * (1 / cut_frac - 1));
    factor = (1 + p * (ratio - 1)) / ratio: 1/ratio at t = 0, 1 at t = cut, back to 1/ratio at t = T.
    Steps past T stay at 1/ratio (p is clamped at 0).
    """
    if not 0.0 < cut_frac < 1.0:
        raise ValueError(f"stlr_cut_frac must be in (0, 1), got {cut_frac}")
    if ratio < 1.0:
        raise ValueError(f"stlr_ratio must be >= 1, got {ratio}")
    # the epsilon absorbs binary rounding (0.29 * 100 = 28.999999999999996); at least one step rises, so the
    # decay's denominator is never zero on very short runs
    cut = max(1, math.floor(total_steps * cut_frac + 1e-9))
    if step < cut:
        p = step / cut
    else:
        p = max(0.0, 1.0 - (step - cut) / (cut * (1.0 / cut_frac - 1.0)))
    return (1.0 + p * (ratio - 1.0)) / ratio


def lr_factor(step: int, total_steps: int, cfg) -> float:
    """Multiplier in [0, 1] of the peak LR at optimizer step `step` (0-based) of a run of `total_steps` steps.

    `cfg` is a config.TrainConfig (fields schedule, warmup_steps, stlr_cut_frac, stlr_ratio):
      - "warmup_cosine": linear warm-up to 1 at step warmup_steps, then cosine decay to 0 at total_steps;
      - "warmup_constant": the same warm-up, then 1;
      - "stlr": slanted triangular LR (see `stlr_factor`); warmup_steps is ignored (cut_frac sets the rise).
    Every parameter group's LR is its own peak ("base_lr") times this factor, so discriminative ratios hold at
    every step.
    """
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {cfg.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got step={step}, total_steps={total_steps}")
    if cfg.schedule == "stlr":
        return stlr_factor(step, total_steps, cfg.stlr_cut_frac, cfg.stlr_ratio)
    if cfg.warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if step < cfg.warmup_steps:
        return _warmup(step, cfg.warmup_steps)
    if cfg.schedule == "warmup_constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's LR to its peak ("base_lr", as `param_groups` records it) times `factor`."""
    for g in optimizer.param_groups:
        g["lr"] = g.setdefault("base_lr", g["lr"]) * factor


# ----------------------------------------------------------------------------------------------------------------
# Discriminative learning rates


def discriminative_lrs(group_names: Sequence[str], lr: float, decay: float = ULMFIT_DECAY) -> dict[str, float]:
    """Per-group LRs, bottom to top: the top group (the head) gets `lr`, each group below the one above / `decay`.

    ULMFiT's discriminative fine-tuning: lower layers hold more general features and should move less.
    Returns {name: lr} in the order of `group_names`; decay=1 gives the same LR everywhere.
    """
    if decay <= 0:
        raise ValueError(f"decay must be > 0, got {decay}")
    lrs: dict[str, float] = {}
    cur = lr
    for name in reversed(group_names):
        lrs[name] = cur
        cur = cur / decay  # divided step by step, so neighbours differ by exactly `decay` up to one rounding
    return {name: lrs[name] for name in group_names}


def _check_covered(model: nn.Module, groups: Mapping[str, Sequence[nn.Parameter]]) -> None:
    """Every model parameter must be in some group: one missing would get gradients but never be updated."""
    covered = {id(p) for ps in groups.values() for p in ps}
    missing = [n for n, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"{len(missing)} model parameter(s) belong to no group, e.g. {missing[:3]}; if the model "
                         f"has adaptation layers pass them as a group, e.g. "
                         f"extra={{'{ADAPTATION}': adapters.adaptation_parameters(model)}}")


def named_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """All parameters by group name: `model.layer_groups()` bottom to top, then "adaptation" if it has any.

    The mapping `apply_trainable` expects; `param_groups(model, lr, decay, extra=...)` builds the same groups.
    """
    from .adapters import adaptation_parameters  # adapters.py does not import this module: no cycle

    groups = dict(model.layer_groups())
    adaptation = adaptation_parameters(model)
    if adaptation:
        groups[ADAPTATION] = adaptation
    return groups


def param_groups(model: nn.Module, lr: float, decay: float | None = None,
                 extra: Mapping[str, Sequence[nn.Parameter]] | None = None) -> list[dict]:
    """AdamW parameter groups, one per `model.layer_groups()` entry (bottom to top), then one per `extra` entry.

    Args:
        lr: the peak LR of the top group (the head), and of every extra group (new adaptation layers learn at
            the top rate: like the head, they start from scratch).
        decay: discriminative decay between neighbouring layer groups (ULMFiT: 2.6); None = `lr` everywhere.
        extra: further named groups, e.g. {"adaptation": adapters.adaptation_parameters(model)}.
    Returns:
        [{"name", "params", "lr", "base_lr"}, ...]; "base_lr" is the peak LR that `lr_factor` scales.
    Raises:
        ValueError: a model parameter in no group (it would silently never train), or a name used twice.
    """
    layer = model.layer_groups()
    extra = dict(extra or {})
    clash = sorted({n for n, _ in layer} & set(extra))
    if clash:
        raise ValueError(f"extra group name(s) {clash} clash with the model's layer groups")
    _check_covered(model, {**dict(layer), **extra})
    names = [n for n, _ in layer]
    lrs = discriminative_lrs(names, lr, decay) if decay is not None else dict.fromkeys(names, lr)
    groups = [{"name": n, "params": list(ps), "lr": lrs[n], "base_lr": lrs[n]} for n, ps in layer]
    groups += [{"name": n, "params": list(ps), "lr": lr, "base_lr": lr} for n, ps in extra.items()]
    return groups


# ----------------------------------------------------------------------------------------------------------------
# Freezing plans


def new_groups_after_reinit(group_names: Sequence[str], k: int) -> list[str]:
    """Groups that start from scratch after `model.reinit_layers_from(k)` + a new head: layer{k}.. and the head.

    Pass the result as `plan_for(..., new=...)` when only the bottom k layers are transferred.
    """
    layers = [n for n in group_names if n.startswith("layer") and n[5:].isdigit()]
    if not 0 <= k <= len(layers):
        raise ValueError(f"can transfer 0..{len(layers)} layers, not {k}")
    fresh = {f"layer{i}" for i in range(k, len(layers))} | {group_names[-1]}
    return [n for n in group_names if n in fresh]


def plan_for(mode: str, group_names: Sequence[str], epochs: int, stage_epochs: int = 1,
             new: Iterable[str] | None = None) -> Plan:
    """A freezing plan for `epochs` epochs over `group_names` (bottom to top, as `model.layer_groups()` names them).

    Modes (trainable groups per stage; the last stage runs for the remaining epochs):
      - "head": the new groups only (by default the head), the body frozen;
      - "full": every layer group;
      - "adaptation": only the adaptation layers (group "adaptation"), plus `new` if given — by default the head
        stays frozen, the classic LHUC / adapter setting where the output units are the base model's;
      - "full+adaptation": every layer group and the adaptation layers;
      - "chain_thaw" (Felbo et al. 2017): the new groups alone, then each other group alone from the bottom
        (frontend, layer0, layer1, ...) up, then everything; `stage_epochs` epochs per single-group stage;
      - "gradual_unfreeze" (ULMFiT): the new groups alone, then each epoch (`stage_epochs`) unfreezes the next group
        down from the top, until everything trains.
    Args:
        new: groups that start from scratch and so train from the first stage; default the top group (the head).
            After `model.reinit_layers_from(k)` pass `new_groups_after_reinit(group_names, k)`.
    Raises:
        ValueError: unknown mode or group, or too few epochs for a staged plan to reach its all-groups stage.
    """
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; valid modes: {', '.join(MODES)}")
    names = list(group_names)
    if not names or len(set(names)) != len(names) or ADAPTATION in names:
        raise ValueError(f"group_names must be unique layer-group names, without {ADAPTATION!r}: {names}")
    if epochs < 1 or stage_epochs < 1:
        raise ValueError(f"need epochs >= 1 and stage_epochs >= 1, got {epochs} and {stage_epochs}")
    explicit = new is not None
    fresh = set(new) if explicit else {names[-1]}
    unknown = sorted(fresh - set(names))
    if unknown:
        raise ValueError(f"new group(s) {unknown} are not among the layer groups {names}")
    everything = frozenset(names)

    if mode == "full":
        return [(everything, None)]
    if mode == "full+adaptation":
        return [(everything | {ADAPTATION}, None)]
    if mode == "adaptation":
        return [(frozenset({ADAPTATION} | (fresh if explicit else set())), None)]
    if not fresh:
        raise ValueError(f"{mode} starts by training the new groups alone, but new={list(fresh)} is empty")
    if mode == "head":
        return [(frozenset(fresh), None)]

    old = [n for n in names if n not in fresh]  # bottom to top
    if mode == "chain_thaw":
        singles = [frozenset({n}) for n in old]  # each pre-trained group alone, first (bottom) to last
    else:  # gradual_unfreeze: one more pre-trained group from the top at each stage
        singles = [frozenset(fresh | set(old[i:])) for i in range(len(old) - 1, 0, -1)]
    stages: Plan = [(frozenset(fresh), stage_epochs)] + [(s, stage_epochs) for s in singles]
    needed = stage_epochs * len(stages) + 1
    if epochs < needed:
        raise ValueError(f"{mode} over {len(names)} groups with stage_epochs={stage_epochs} needs at least "
                         f"{needed} epochs to reach its all-groups stage, got {epochs}")
    return stages + [(everything, None)]


def trainable_at(plan: Plan, epoch: int) -> set[str]:
    """The trainable group names at 0-based `epoch`; past the last stage's epochs, the last stage continues."""
    if not plan:
        raise ValueError("empty freezing plan")
    if any(n is None for _, n in plan[:-1]):
        raise ValueError("only the last stage of a plan may run for the remaining epochs (None)")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    start = 0
    for groups, n in plan:
        if n is None or epoch < start + n:
            return set(groups)
        start += n
    return set(plan[-1][0])


def apply_trainable(model: nn.Module, groups_by_name: Mapping[str, Sequence[nn.Parameter]],
                    trainable: Iterable[str]) -> None:
    """Set requires_grad: True for the parameters of the `trainable` groups, False for every other parameter.

    Frozen parameters also lose any gradient they still hold, so AdamW skips them entirely — no momentum step and
    no weight decay — and they stay bit-identical (AdamW only touches parameters whose .grad is not None). Call it
    at each epoch start (train.fit's on_epoch_start), before the forward pass.
    `groups_by_name` is typically `named_groups(model)`; it must cover every model parameter.
    BatchNorm running statistics are buffers, not parameters: train.fit keeps those of frozen modules fixed.
    """
    trainable = set(trainable)
    unknown = sorted(trainable - set(groups_by_name))
    if unknown:
        raise ValueError(f"trainable group(s) {unknown} not in this model's groups {list(groups_by_name)}"
                         + (" (add adaptation layers first: adapters.add_adaptation)" if ADAPTATION in unknown
                            else ""))
    _check_covered(model, groups_by_name)
    on = {id(p) for name in trainable for p in groups_by_name[name]}
    for p in model.parameters():
        p.requires_grad_(id(p) in on)
        if id(p) not in on:
            p.grad = None
