"""Adaptation layers (xlingual/adapters.py): identity at start, exact bypass, checkpoint round trip."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F

from xlingual.adapters import (
    LHUC,
    LinearInputNetwork,
    ResidualAdapter,
    adaptation_disabled,
    adaptation_parameters,
    adaptation_spec,
    add_adaptation,
    set_adaptation_enabled,
)
from xlingual.config import ModelConfig
from xlingual.model import AcousticModel, dims_from_config
from xlingual.schedules import ADAPTATION, apply_trainable, named_groups, param_groups

KIND_SETS = [["adapter"], ["lhuc"], ["lin"], ["adapter", "lhuc"], ["lhuc", "adapter", "lin"]]


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


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 50, 80, generator=g) * 4 + 2, torch.tensor([50, 41, 17])


def logits(model: AcousticModel) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs())[0]


def train_adaptation(model: AcousticModel, steps: int = 4) -> None:
    """A few AdamW steps on the adaptation layers alone (CTC on random targets), the body frozen."""
    groups = named_groups(model)
    apply_trainable(model, groups, {ADAPTATION})
    opt = torch.optim.AdamW(param_groups(model, 1e-2, extra={ADAPTATION: groups[ADAPTATION]}), weight_decay=0.01)
    model.train()
    # frozen BatchNorm statistics stay fixed, as train.fit does: otherwise the base itself would drift
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    feats, lens = inputs(2)
    targets, target_lens = torch.randint(1, 20, (9,), generator=torch.Generator().manual_seed(3)), torch.tensor(
        [4, 3, 2])
    for _ in range(steps):
        out, out_lens = model(feats, lens)
        loss = F.ctc_loss(out.log_softmax(-1).transpose(0, 1), targets, out_lens, target_lens, blank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("module, shape", [
    (ResidualAdapter(96), (7, 3, 96)),  # (T, B, D), as inside AcousticModel.encode
    (ResidualAdapter(96, bottleneck=4), (3, 7, 96)),
    (LHUC(96), (7, 3, 96)),
    (LinearInputNetwork(80), (3, 50, 80)),
])
def test_layers_are_identity_at_init(module, shape):
    x = torch.randn(*shape) * 10
    assert torch.equal(module(x), x)
    module.enabled = False
    assert module(x) is x


def test_lin_effective_weight_is_identity():
    assert torch.equal(LinearInputNetwork(80).weight, torch.eye(80))


@pytest.mark.parametrize("kinds", KIND_SETS)
def test_model_output_unchanged_at_init(kinds):
    base = tiny_model().eval()
    adapted = copy.deepcopy(base)
    add_adaptation(adapted, kinds)
    assert adaptation_parameters(adapted)
    assert torch.equal(logits(adapted), logits(base))


@pytest.mark.parametrize("kinds", KIND_SETS)
def test_disabled_equals_base_after_training(kinds):
    base = tiny_model().eval()
    adapted = copy.deepcopy(base)
    add_adaptation(adapted, kinds)
    train_adaptation(adapted)
    assert not torch.equal(logits(adapted), logits(base))  # the adaptation learned something
    with adaptation_disabled(adapted):
        assert torch.equal(logits(adapted), logits(base))
    assert not torch.equal(logits(adapted), logits(base))  # the context restores the switch
    set_adaptation_enabled(adapted, False)
    assert torch.equal(logits(adapted), logits(base))
    set_adaptation_enabled(adapted, True)
    # the frozen body never moved
    base_state = base.state_dict()
    assert all(torch.equal(v, adapted.state_dict()[k]) for k, v in base_state.items())


@pytest.mark.parametrize("kinds", KIND_SETS)
def test_state_dict_round_trip(kinds):
    model = tiny_model().eval()
    add_adaptation(model, kinds, bottleneck=8)
    with torch.no_grad():  # non-trivial adaptation weights, so a mis-loaded tensor would show
        for p in adaptation_parameters(model):
            p.add_(torch.randn_like(p) * 0.1)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "adaptation": adaptation_spec(model)}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    spec = json.loads(json.dumps(ck["adaptation"]))  # plain data, fit for a checkpoint's meta
    rebuilt = tiny_model(seed=5).eval()  # other initial weights: everything must come from the checkpoint
    add_adaptation(rebuilt, **spec)
    rebuilt.load_state_dict(ck["model"], strict=True)
    assert torch.equal(logits(rebuilt), logits(model))
    assert adaptation_spec(rebuilt) == adaptation_spec(model)


@pytest.mark.parametrize("kinds", KIND_SETS)
def test_base_keys_unchanged(kinds):
    # a base checkpoint's keys all keep their names; adaptation adds keys only under its two slots
    base_keys = set(tiny_model().state_dict())
    adapted = tiny_model()
    add_adaptation(adapted, kinds)
    keys = set(adapted.state_dict())
    assert base_keys <= keys
    assert all(k.startswith(("input_net.", "adapters.")) for k in keys - base_keys)


@pytest.mark.parametrize("kinds, bottleneck, spec", [
    ([], 32, {"kinds": [], "bottleneck": 32}),
    (["lin"], 32, {"kinds": ["lin"], "bottleneck": 32}),
    (["lhuc", "adapter"], 16, {"kinds": ["adapter", "lhuc"], "bottleneck": 16}),
    (["lin", "adapter"], 4, {"kinds": ["adapter", "lin"], "bottleneck": 4}),
])
def test_adaptation_spec(kinds, bottleneck, spec):
    model = tiny_model()
    add_adaptation(model, kinds, bottleneck)
    assert adaptation_spec(model) == spec


@pytest.mark.parametrize("kinds, n_params", [
    (["lhuc"], 2),                # r per layer
    (["lin"], 2),                 # weight, bias
    (["adapter"], 2 * 6),         # norm (2), down (2), up (2) per layer
    (["adapter", "lhuc", "lin"], 2 * 7 + 2),
])
def test_adaptation_parameters_are_outside_layer_groups(kinds, n_params):
    model = tiny_model()
    add_adaptation(model, kinds)
    params = adaptation_parameters(model)
    assert len(params) == n_params
    in_groups = {id(p) for _, ps in model.layer_groups() for p in ps}
    assert not any(id(p) in in_groups for p in params)
    assert len(in_groups) + len(params) == len(list(model.parameters()))


@pytest.mark.parametrize("kinds, match", [
    (["bias"], "valid kinds"),
    (["lhuc", "lhuc"], "repeated"),
])
def test_bad_kinds(kinds, match):
    with pytest.raises(ValueError, match=match):
        add_adaptation(tiny_model(), kinds)


def test_adding_twice_is_refused():
    model = tiny_model()
    add_adaptation(model, ["lhuc"])
    with pytest.raises(ValueError, match="already has"):
        add_adaptation(model, ["adapter"])
