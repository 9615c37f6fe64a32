"""Acoustic model: convolutional 4x subsampling + torchaudio Conformer + a linear output head.

The same class serves ASR (head over CTC units, blank = 0) and language ID (head over languages, one label per
frame). Its dimensions are a dataclass saved in every checkpoint, so a checkpoint rebuilds its own model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torchaudio.models import Conformer

# name -> dimensions; the GUIDE's measured CPU speeds: tiny ~370, small ~135, base ~23 audio-s per wall-s.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=96, n_heads=4, ffn_dim=384, n_layers=2, conv_kernel=15, subsample_channels=32, dropout=0.1),
    "small": dict(d_model=144, n_heads=4, ffn_dim=576, n_layers=4, conv_kernel=15, subsample_channels=64, dropout=0.1),
    "base": dict(d_model=256, n_heads=4, ffn_dim=1024, n_layers=12, conv_kernel=31, subsample_channels=128,
                 dropout=0.1),
}


@dataclass(frozen=True)
class ModelDims:
    n_mels: int  # input feature bins
    vocab_size: int  # output classes: CTC units incl. blank, or languages for LID
    d_model: int  # encoder width
    n_heads: int  # attention heads
    ffn_dim: int  # feed-forward width
    n_layers: int  # conformer layers
    conv_kernel: int  # depthwise convolution kernel
    subsample_channels: int  # channels of the convolutional subsampling
    dropout: float  # dropout in the conformer


def dims_from_config(model_cfg, n_mels: int, vocab_size: int) -> ModelDims:
    """Preset dimensions, overridden by any non-None field of a config.ModelConfig."""
    if model_cfg.preset not in PRESETS:
        raise ValueError(f"unknown model preset {model_cfg.preset!r}; choose one of {sorted(PRESETS)}")
    dims = dict(PRESETS[model_cfg.preset])
    dims.update({k: v for k, v in asdict(model_cfg).items() if k in dims and v is not None})
    if dims["d_model"] % dims["n_heads"]:
        raise ValueError(f"d_model {dims['d_model']} must be divisible by n_heads {dims['n_heads']}")
    return ModelDims(n_mels=n_mels, vocab_size=vocab_size, **dims)


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frame counts after two stride-2 convolutions with padding 1: ceil(ceil(T/2)/2)."""
    return ((lengths + 1) // 2 + 1) // 2


class _Subsampling(nn.Module):
    """Two stride-2 3x3 convolutions over (time, frequency): 10 ms frames -> 40 ms, projected to d_model."""

    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        # channels-last convolutions: 1.03-1.11x faster training on CPU, same loss to 1e-7 (results/bench/)
        self.conv.to(memory_format=torch.channels_last)
        freq = ((n_mels + 1) // 2 + 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T', d_model) with T' = subsampled_lengths(T)."""
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))


class AcousticModel(nn.Module):
    """Features -> per-frame logits.

    Adaptation slots (see adapters.py) are identities until filled: `input_net` acts on the normalized features,
    `adapters[i]` on the output of conformer layer i. Global CMVN statistics are buffers, so a checkpoint carries
    the normalization it was trained with.
    """

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.register_buffer("cmvn_mean", torch.zeros(dims.n_mels))
        self.register_buffer("cmvn_std", torch.ones(dims.n_mels))
        self.input_net: nn.Module = nn.Identity()
        self.frontend = _Subsampling(dims.n_mels, dims.subsample_channels, dims.d_model)
        self.encoder = Conformer(input_dim=dims.d_model, num_heads=dims.n_heads, ffn_dim=dims.ffn_dim,
                                 num_layers=dims.n_layers, depthwise_conv_kernel_size=dims.conv_kernel,
                                 dropout=dims.dropout)
        self.adapters = nn.ModuleList([nn.Identity() for _ in range(dims.n_layers)])
        self.head = nn.Linear(dims.d_model, dims.vocab_size)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.conformer_layers

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels), lengths (B,) -> hidden (B, T', d_model), lengths (B,)."""
        x = (feats - self.cmvn_mean) / self.cmvn_std
        x = self.frontend(self.input_net(x))
        out_lengths = subsampled_lengths(lengths)
        # key_padding_mask: True at padded frames, as torchaudio's Conformer builds it
        mask = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]
        x = x.transpose(0, 1)  # conformer layers work on (T, B, D)
        for layer, adapter in zip(self.layers, self.adapters):
            x = adapter(layer(x, mask))
        return x.transpose(0, 1), out_lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels), lengths (B,) -> logits (B, T', vocab_size), lengths (B,)."""
        hidden, out_lengths = self.encode(feats, lengths)
        return self.head(hidden), out_lengths

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """The model's trainable body, bottom to top: frontend, layer0..layer{n-1}, head.

        Fine-tuning schedules (discriminative LRs, chain-thaw, gradual unfreezing) act on these groups.
        Adaptation layers (input_net, adapters) are not part of any group: adapters.py manages them.
        """
        groups = [("frontend", list(self.frontend.parameters()))]
        groups += [(f"layer{i}", list(layer.parameters())) for i, layer in enumerate(self.layers)]
        groups.append(("head", list(self.head.parameters())))
        return groups

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp_min(1e-3))

    def replace_head(self, vocab_size: int) -> None:
        """A freshly initialized output layer for a new unit set (the classic transfer step)."""
        self.head = nn.Linear(self.dims.d_model, vocab_size).to(self.cmvn_mean.device)
        self.dims = ModelDims(**{**asdict(self.dims), "vocab_size": vocab_size})

    def reinit_layers_from(self, k: int, seed: int = 0) -> None:
        """Re-initialize conformer layers k..n-1 (transfer only the bottom k layers)."""
        if not 0 <= k <= self.dims.n_layers:
            raise ValueError(f"can transfer 0..{self.dims.n_layers} layers, not {k}")
        with torch.random.fork_rng():  # a fixed seed for the fresh layers, without disturbing the caller's RNG
            torch.manual_seed(seed)
            fresh = Conformer(input_dim=self.dims.d_model, num_heads=self.dims.n_heads, ffn_dim=self.dims.ffn_dim,
                              num_layers=self.dims.n_layers, depthwise_conv_kernel_size=self.dims.conv_kernel,
                              dropout=self.dims.dropout)
        for i in range(k, self.dims.n_layers):
            self.layers[i].load_state_dict(fresh.conformer_layers[i].state_dict())


def dims_to_dict(dims: ModelDims) -> dict:
    return asdict(dims)


def dims_from_dict(d: dict) -> ModelDims:
    names = {f.name for f in fields(ModelDims)}
    missing, extra = names - set(d), set(d) - names
    if missing or extra:
        raise ValueError(f"checkpoint model dims do not match this toolkit: missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}")
    return ModelDims(**d)
