"""Adaptation layers: small modules added to a trained AcousticModel that start as the identity.

- `ResidualAdapter`: x + up(relu(down(layernorm(x)))), `up` zero-initialized (Houlsby et al. 2019; Bapna &
  Firat 2019; for multilingual ASR, Kannan et al. 2019).
- `LHUC`: learning hidden unit contributions, x * 2 sigmoid(r) with r = 0 at start (Swietojanski & Renals 2014).
- `LinearInputNetwork`: a square linear transform of the features, the identity at start (Neto et al. 1995).

They fill the model's slots (`input_net` on the normalized features, `adapters[i]` after conformer layer i), so the
base model's weights and state_dict keys are untouched. Each layer's output equals its input exactly at
initialization, and `set_adaptation_enabled(model, False)` (or `with adaptation_disabled(model):`) bypasses them,
restoring the base model's output bit for bit. Every layer is parameterized so that zero parameters are the identity
(LIN learns a residual), hence AdamW's weight decay pulls them toward "no adaptation", never toward a zero map.

A checkpoint records `adaptation_spec(model)`; `add_adaptation(fresh_model, **spec)` rebuilds the same modules, so
the saved state_dict loads with strict key matching.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

KINDS = ("adapter", "lhuc", "lin")  # canonical order; adapter and lhuc share the per-layer slot in this order
DEFAULT_BOTTLENECK = 32


class _Adaptation(nn.Module):
    """Base of every adaptation layer: `enabled` False makes forward return its input tensor itself."""

    def __init__(self):
        super().__init__()
        self.enabled = True  # a runtime switch, not state: it is not saved in the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapt(x) if self.enabled else x

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ResidualAdapter(_Adaptation):
    """Bottleneck residual adapter on the last dimension: (..., d_model) -> (..., d_model).

    Layer norm first, as Bapna & Firat 2019 do, so the adapter sees a normalized input whatever the layer's scale.
    `up` starts at zero (weight and bias), so the output is x + 0 = x exactly.
    """

    def __init__(self, d_model: int, bottleneck: int = DEFAULT_BOTTLENECK):
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"adapter bottleneck must be >= 1, got {bottleneck}")
        self.norm = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(self.norm(x))))


class LHUC(_Adaptation):
    """Per-unit amplitude scaling (..., d_model) -> (..., d_model): x * 2 sigmoid(r), r in R^d_model.

    The scale lies in (0, 2) (Swietojanski & Renals 2014); r = 0 gives exactly 2 * 0.5 = 1.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.r = nn.Parameter(torch.zeros(d_model))

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x * (2.0 * torch.sigmoid(self.r))

    def extra_repr(self) -> str:
        return f"d_model={self.r.numel()}"


class LinearInputNetwork(_Adaptation):
    """Square affine transform of the normalized features (B, T, n_mels) -> (B, T, n_mels), identity at start.

    Computed as x + (A x + b) with A, b = 0 at start — the same function class as W x + b with W = I, but exact
    under any matmul precision (TF32, bf16 autocast would round an explicit identity product), and weight decay
    pulls A toward 0, i.e. toward the identity rather than toward a transform that erases the features.
    """

    def __init__(self, n_mels: int):
        super().__init__()
        self.linear = nn.Linear(n_mels, n_mels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The effective (n_mels, n_mels) matrix W = I + A."""
        return self.linear.weight + torch.eye(self.linear.in_features, device=self.linear.weight.device,
                                              dtype=self.linear.weight.dtype)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


def _canonical(kinds: Sequence[str]) -> list[str]:
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown adaptation kind(s) {unknown}; valid kinds: {', '.join(KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"adaptation kinds repeated: {kinds}")
    return [k for k in KINDS if k in kinds]


def _has_adaptation(model: nn.Module) -> bool:
    return not isinstance(model.input_net, nn.Identity) or any(not isinstance(a, nn.Identity)
                                                                  for a in model.adapters)


def add_adaptation(model: nn.Module, kinds: Sequence[str], bottleneck: int = DEFAULT_BOTTLENECK) -> None:
    """Fill the adaptation slots of an AcousticModel in place; its output is unchanged.

    Args:
        kinds: any of "adapter" (a ResidualAdapter after each conformer layer), "lhuc" (LHUC after each layer;
            with "adapter", the slot holds nn.Sequential(adapter, lhuc)) and "lin" (a LinearInputNetwork).
            The order given does not matter: the modules, and so the state_dict keys, depend only on the set.
        bottleneck: the adapters' bottleneck width.
    Raises:
        ValueError: unknown or repeated kinds, or a model that already has adaptation layers.
    """
    kinds = _canonical(kinds)
    if _has_adaptation(model):
        raise ValueError("model already has adaptation layers; build a fresh model (or load the base checkpoint) "
                         "before adding others")
    ref = model.head.weight  # new modules on the model's device and in its dtype
    d_model, n_mels = model.dims.d_model, model.dims.n_mels
    if "lin" in kinds:
        model.input_net = LinearInputNetwork(n_mels).to(ref.device, ref.dtype)
    per_layer = [k for k in kinds if k != "lin"]
    if not per_layer:
        return
    for i in range(len(model.adapters)):
        mods = [ResidualAdapter(d_model, bottleneck) if k == "adapter" else LHUC(d_model) for k in per_layer]
        model.adapters[i] = (mods[0] if len(mods) == 1 else nn.Sequential(*mods)).to(ref.device, ref.dtype)


def _slot_kinds(slot: nn.Module) -> tuple[list[str], int | None]:
    mods = list(slot) if isinstance(slot, nn.Sequential) else [slot]
    kinds, bottleneck = [], None
    for m in mods:
        if isinstance(m, ResidualAdapter):
            kinds.append("adapter")
            bottleneck = m.down.out_features
        elif isinstance(m, LHUC):
            kinds.append("lhuc")
        elif not isinstance(m, nn.Identity):
            raise ValueError(f"adaptation slot holds a {type(m).__name__}, which adapters.py did not add")
    return kinds, bottleneck


def adaptation_spec(model: nn.Module) -> dict:
    """What `add_adaptation` put into the model, read off its modules: {"kinds": [...], "bottleneck": int}.

    Plain data for a checkpoint's meta; `add_adaptation(base_model, **spec)` rebuilds the same modules.
    "kinds" is [] for a model without adaptation layers (add_adaptation with no kinds is a no-op).
    """
    kinds, bottlenecks = [], set()
    if isinstance(model.input_net, LinearInputNetwork):
        kinds.append("lin")
    elif not isinstance(model.input_net, nn.Identity):
        raise ValueError(f"input_net holds a {type(model.input_net).__name__}, which adapters.py did not add")
    per_slot = [_slot_kinds(a) for a in model.adapters]
    layer_kinds = {tuple(k) for k, _ in per_slot}
    if len(layer_kinds) > 1:
        raise ValueError(f"conformer layers hold different adaptation layers {sorted(layer_kinds)}")
    bottlenecks = {b for _, b in per_slot if b is not None}
    if len(bottlenecks) > 1:
        raise ValueError(f"adapters have different bottlenecks {sorted(bottlenecks)}")
    if layer_kinds:
        order = list(layer_kinds.pop())
        if order != _canonical(order):
            raise ValueError(f"adaptation slots hold {order}, not in the order add_adaptation builds")
        kinds += order
    return {"kinds": _canonical(kinds), "bottleneck": bottlenecks.pop() if bottlenecks else DEFAULT_BOTTLENECK}


def adaptation_modules(model: nn.Module) -> Iterator[_Adaptation]:
    """Every adaptation layer of the model (input network first, then per-layer slots bottom to top)."""
    for m in [model.input_net, *model.adapters]:
        for sub in m.modules():
            if isinstance(sub, _Adaptation):
                yield sub


def adaptation_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adaptation layers' parameters (input network, then adapters bottom to top); [] when there are none.

    These are exactly the parameters outside `model.layer_groups()`: train them as the "adaptation" group.
    """
    return list(model.input_net.parameters()) + list(model.adapters.parameters())


def set_adaptation_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every adaptation layer on or off; off, the model computes exactly what the base model computes."""
    for m in adaptation_modules(model):
        m.enabled = enabled


@contextmanager
def adaptation_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """`with adaptation_disabled(model): ...` runs the base model; each layer's previous switch is restored after."""
    mods = list(adaptation_modules(model))
    before = [m.enabled for m in mods]
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m, e in zip(mods, before):
            m.enabled = e
