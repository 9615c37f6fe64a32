"""LR schedules, discriminative LRs and freezing plans (xlingual/schedules.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xlingual.adapters import adaptation_parameters, add_adaptation
from xlingual.config import ModelConfig, TrainConfig
from xlingual.model import AcousticModel, dims_from_config
from xlingual.schedules import (
    ADAPTATION,
    SCHEDULES,
    apply_lr_factor,
    apply_trainable,
    discriminative_lrs,
    lr_factor,
    named_groups,
    new_groups_after_reinit,
    param_groups,
    plan_for,
    stlr_factor,
    trainable_at,
)

NAMES = ["frontend", "layer0", "layer1", "head"]  # the tiny 2-layer model's groups, bottom to top
ALL = set(NAMES)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: one thread is faster, and avoids oversubscription when other jobs share the CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0) -> AcousticModel:
    torch.manual_seed(seed)
    return AcousticModel(dims_from_config(ModelConfig(preset="tiny", n_layers=2), n_mels=80, vocab_size=20))


def ctc_steps(model: AcousticModel, opt: torch.optim.Optimizer, n: int) -> None:
    """`n` real AdamW steps on a fixed random CTC batch: 2 utterances of 60 and 48 frames (-> 15 and 12)."""
    g = torch.Generator().manual_seed(0)
    feats, lens = torch.randn(2, 60, 80, generator=g), torch.tensor([60, 48])
    targets, target_lens = torch.randint(1, 20, (7,), generator=g), torch.tensor([4, 3])
    for _ in range(n):
        logits, out_lens = model(feats, lens)
        loss = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, out_lens, target_lens, blank=0)
        # zeroed rather than dropped gradients: the harder case, where AdamW would still decay a frozen parameter
        # that kept a (zero) .grad from an earlier stage
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()


def snapshot(groups: dict[str, list[torch.nn.Parameter]]) -> dict[str, list[torch.Tensor]]:
    return {n: [p.detach().clone() for p in ps] for n, ps in groups.items()}


# ---------------------------------------------------------------------------------------------------------------
# LR schedules

STLR = TrainConfig(schedule="stlr", lr=0.01, stlr_cut_frac=0.1, stlr_ratio=32.0)


@pytest.mark.parametrize("step, lr", [
    (0, 3.125e-4),      # lr_max / ratio
    (100, 0.01),        # the peak at cut = floor(1000 * 0.1)
    (550, 0.00515625),  # halfway down: p = 0.5
    (1000, 3.125e-4),   # back to lr_max / ratio
    (50, 0.01 * (1 + 0.5 * 31) / 32),  # halfway up
])
def test_stlr_oracle(step, lr):
    # Howard & Ruder 2018, T = 1000, lr_max = 0.01, cut_frac = 0.1, ratio = 32
    assert STLR.lr * lr_factor(step, 1000, STLR) == pytest.approx(lr, rel=1e-12)


def test_stlr_rises_then_falls():
    f = [lr_factor(t, 1000, STLR) for t in range(1001)]
    assert all(a < b for a, b in zip(f[:100], f[1:101]))
    assert all(a > b for a, b in zip(f[100:1000], f[101:1001]))
    assert lr_factor(5000, 1000, STLR) == pytest.approx(1 / 32)  # past the end: stays at the floor


@pytest.mark.parametrize("total, cut_frac", [(1, 0.1), (5, 0.1), (100, 0.29)])
def test_stlr_short_runs_are_finite(total, cut_frac):
    assert all(1 / 32 <= stlr_factor(t, total, cut_frac, 32.0) <= 1.0 for t in range(total + 1))


@pytest.mark.parametrize("schedule, warmup, total, step, factor", [
    ("warmup_cosine", 10, 100, 0, 1 / 11),   # the first step already learns
    ("warmup_cosine", 10, 100, 4, 5 / 11),
    ("warmup_cosine", 10, 100, 10, 1.0),     # peak at the end of warm-up
    ("warmup_cosine", 10, 100, 55, 0.5),     # cosine halfway
    ("warmup_cosine", 10, 100, 100, 0.0),    # zero at total_steps
    ("warmup_cosine", 10, 100, 150, 0.0),    # and after it
    ("warmup_cosine", 0, 100, 0, 1.0),       # no warm-up
    ("warmup_cosine", 0, 100, 100, 0.0),
    ("warmup_constant", 10, 100, 0, 1 / 11),
    ("warmup_constant", 10, 100, 10, 1.0),
    ("warmup_constant", 10, 100, 100, 1.0),
])
def test_warmup_endpoints(schedule, warmup, total, step, factor):
    cfg = TrainConfig(schedule=schedule, warmup_steps=warmup)
    assert lr_factor(step, total, cfg) == pytest.approx(factor, abs=1e-12)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="warmup_cosine, warmup_constant, stlr"):
        lr_factor(0, 10, TrainConfig(schedule="linear"))


@pytest.mark.parametrize("step, total", [(-1, 10), (0, 0)])
def test_invalid_steps(step, total):
    with pytest.raises(ValueError):
        lr_factor(step, total, TrainConfig())


@settings(max_examples=200, deadline=None)
@given(schedule=st.sampled_from(SCHEDULES), warmup=st.integers(0, 500), total=st.integers(1, 5000),
       step=st.integers(0, 6000), cut=st.floats(0.01, 0.99), ratio=st.floats(1.0, 100.0))
def test_factor_in_unit_interval(schedule, warmup, total, step, cut, ratio):
    cfg = TrainConfig(schedule=schedule, warmup_steps=warmup, stlr_cut_frac=cut, stlr_ratio=ratio)
    assert 0.0 <= lr_factor(step, total, cfg) <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# Discriminative learning rates


@pytest.mark.parametrize("names", [NAMES, ["frontend", *[f"layer{i}" for i in range(12)], "head"]])
def test_discriminative_ratio_is_2_6(names):
    lrs = discriminative_lrs(names, 1e-3)
    assert list(lrs) == names and lrs["head"] == 1e-3
    for lower, upper in zip(names, names[1:]):
        assert lrs[upper] / lrs[lower] == pytest.approx(2.6, rel=1e-12)


def test_param_groups_discriminative_and_scaled():
    model = tiny_model()
    groups = param_groups(model, 1e-2, decay=2.6)
    assert [g["name"] for g in groups] == NAMES
    opt = torch.optim.AdamW(groups)
    apply_lr_factor(opt, 0.5)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[-1] == pytest.approx(5e-3)
    assert all(b / a == pytest.approx(2.6, rel=1e-12) for a, b in zip(lrs, lrs[1:]))


def test_param_groups_uniform_and_extra():
    model = tiny_model()
    add_adaptation(model, ["lhuc"])
    with pytest.raises(ValueError, match="adaptation"):  # adaptation parameters left out would never train
        param_groups(model, 1e-3)
    groups = param_groups(model, 1e-3, decay=None, extra={ADAPTATION: adaptation_parameters(model)})
    assert [g["name"] for g in groups] == NAMES + [ADAPTATION]
    assert {g["lr"] for g in groups} == {1e-3}
    groups = param_groups(model, 1e-3, decay=2.6, extra={ADAPTATION: adaptation_parameters(model)})
    assert groups[-1]["lr"] == groups[-2]["lr"] == 1e-3  # extra groups learn at the head's rate
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# ---------------------------------------------------------------------------------------------------------------
# Freezing plans


def stages(plan) -> list[set[str]]:
    return [set(s) for s, _ in plan]


@pytest.mark.parametrize("mode, expected", [
    ("head", [{"head"}]),
    ("full", [ALL]),
    ("adaptation", [{ADAPTATION}]),
    ("full+adaptation", [ALL | {ADAPTATION}]),
    ("chain_thaw", [{"head"}, {"frontend"}, {"layer0"}, {"layer1"}, ALL]),
    ("gradual_unfreeze", [{"head"}, {"layer1", "head"}, {"layer0", "layer1", "head"}, ALL]),
])
def test_plan_stages(mode, expected):
    plan = plan_for(mode, NAMES, epochs=10)
    assert stages(plan) == expected
    assert plan[-1][1] is None and all(n == 1 for _, n in plan[:-1])


@pytest.mark.parametrize("mode, epochs, per_epoch", [
    ("chain_thaw", 7, [{"head"}, {"frontend"}, {"layer0"}, {"layer1"}, ALL, ALL, ALL]),
    ("gradual_unfreeze", 5, [{"head"}, {"layer1", "head"}, {"layer0", "layer1", "head"}, ALL, ALL]),
    ("head", 3, [{"head"}] * 3),
])
def test_trainable_per_epoch(mode, epochs, per_epoch):
    plan = plan_for(mode, NAMES, epochs)
    assert [trainable_at(plan, e) for e in range(epochs)] == per_epoch


def test_stage_epochs():
    plan = plan_for("chain_thaw", NAMES, epochs=12, stage_epochs=2)
    assert [trainable_at(plan, e) for e in range(10)] == [
        {"head"}, {"head"}, {"frontend"}, {"frontend"}, {"layer0"}, {"layer0"}, {"layer1"}, {"layer1"}, ALL, ALL]


@pytest.mark.parametrize("k, mode, expected", [
    (1, "head", [{"layer1", "head"}]),
    (0, "head", [{"layer0", "layer1", "head"}]),
    (2, "head", [{"head"}]),
    (1, "chain_thaw", [{"layer1", "head"}, {"frontend"}, {"layer0"}, ALL]),
    (1, "gradual_unfreeze", [{"layer1", "head"}, {"layer0", "layer1", "head"}, ALL]),
    (1, "adaptation", [{ADAPTATION, "layer1", "head"}]),
])
def test_bottom_k_transferred(k, mode, expected):
    # model.reinit_layers_from(k) leaves layers k.. random: they train with the new head from the first stage
    new = new_groups_after_reinit(NAMES, k)
    assert stages(plan_for(mode, NAMES, epochs=10, new=new)) == expected


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="warm", group_names=NAMES, epochs=5), "valid modes"),
    (dict(mode="chain_thaw", group_names=NAMES, epochs=4), "at least 5 epochs"),
    (dict(mode="gradual_unfreeze", group_names=NAMES, epochs=3), "at least 4 epochs"),
    (dict(mode="head", group_names=NAMES, epochs=5, new=["layer7"]), "not among"),
    (dict(mode="head", group_names=NAMES, epochs=5, new=[]), "empty"),
    (dict(mode="full", group_names=NAMES + [ADAPTATION], epochs=5), "unique"),
])
def test_plan_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_for(**kwargs)


def test_trainable_at_rejects_open_middle_stage():
    with pytest.raises(ValueError, match="last stage"):
        trainable_at([(frozenset({"head"}), None), (frozenset(ALL), 2)], 0)


def test_apply_trainable_unknown_group():
    model = tiny_model()
    with pytest.raises(ValueError, match="add_adaptation"):
        apply_trainable(model, named_groups(model), {ADAPTATION})


@pytest.mark.parametrize("mode, epoch", [
    ("head", 0), ("full", 0), ("chain_thaw", 1), ("chain_thaw", 3), ("gradual_unfreeze", 1), ("adaptation", 0),
])
def test_frozen_bit_identical_after_adamw(mode, epoch):
    model = tiny_model()
    add_adaptation(model, ["adapter", "lhuc", "lin"])
    groups = named_groups(model)
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 2.6, extra={ADAPTATION: groups[ADAPTATION]}),
                            weight_decay=0.1)
    trainable = trainable_at(plan_for(mode, NAMES, epochs=10), epoch)
    apply_trainable(model, groups, trainable)
    before = snapshot(groups)
    ctc_steps(model, opt, 3)
    for name, params in groups.items():
        changed = [not torch.equal(a, p) for a, p in zip(before[name], params)]
        # every trainable tensor moves (AdamW normalizes even tiny gradients); no frozen one does
        assert all(changed) if name in trainable else not any(changed), name


def test_chain_thaw_stages_keep_frozen_groups_fixed():
    # earlier stages leave AdamW moments (and zeroed grads) behind: later frozen stages must still not move them
    model = tiny_model()
    model.train()
    groups = named_groups(model)
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 2.6), weight_decay=0.1)
    plan = plan_for("chain_thaw", NAMES, epochs=5)
    for epoch in range(5):
        trainable = trainable_at(plan, epoch)
        apply_trainable(model, groups, trainable)
        before = snapshot(groups)
        ctc_steps(model, opt, 2)
        for name, params in groups.items():
            changed = [not torch.equal(a, p) for a, p in zip(before[name], params)]
            assert all(changed) if name in trainable else not any(changed), (epoch, name)


def test_weight_decay_only_on_trainable():
    # with a zero loss gradient, a weight-decayed parameter still shrinks: frozen ones must not
    model = tiny_model()
    groups = named_groups(model)
    opt = torch.optim.AdamW(param_groups(model, 1e-2), weight_decay=0.5)
    apply_trainable(model, groups, {"head"})
    before = snapshot(groups)
    for p in model.head.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert not torch.equal(before["head"][0], model.head.weight)
    assert all(torch.equal(a, p) for n in NAMES[:-1] for a, p in zip(before[n], groups[n]))


def test_reinit_then_head_plan_trains_fresh_layers():
    model = tiny_model()
    model.reinit_layers_from(1)
    model.replace_head(12)
    groups = named_groups(model)
    plan = plan_for("head", NAMES, epochs=3, new=new_groups_after_reinit(NAMES, 1))
    apply_trainable(model, groups, trainable_at(plan, 0))
    trainable = {n for n, ps in groups.items() if all(p.requires_grad for p in ps)}
    assert trainable == {"layer1", "head"}
    assert not any(p.requires_grad for n in ("frontend", "layer0") for p in groups[n])


def test_factor_ignores_peak_lr():
    # the factor depends on the schedule fields only, not on the peak LR
    a, b = TrainConfig(schedule="stlr"), replace(TrainConfig(schedule="stlr"), lr=7.0)
    assert lr_factor(37, 400, a) == lr_factor(37, 400, b)
    assert math.isclose(lr_factor(40, 400, a), 1.0)
