"""Acoustic model: convolutional 4x subsampling + torchaudio Conformer + a linear output head.

The same class serves ASR (head over CTC units, blank = 0) and language ID (head over languages, one label per
frame, plus an optional utterance head: attentive statistics pooling -> embedding -> languages). Its dimensions
are a dataclass saved in every checkpoint, so a checkpoint rebuilds its own model.

Batch invariance: an utterance's outputs do not depend on what it is batched with. Padded frames are zeroed
before every convolution (the subsampling convolutions and each conformer layer's depthwise convolution), the
attention ignores them (key padding mask), pooling weighs only valid frames, and the conformer's convolution
module normalizes each frame over its channels (torchaudio's default BatchNorm would mix the statistics of every
utterance and padded frame in the batch). So decoding, dev scores and LID posteriors are the same whatever the
batch size, in eval and in training mode alike (dropout aside).

Dropout masks are drawn cheaply on the CPU (dropout.py): every nn.Dropout of the conformer is a FastDropout, and in
training the attention weights' dropout too (`attention`); eval runs torchaudio's modules unchanged.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Conformer

from .dropout import FastDropout, dropout, use_fast_dropout

# name -> dimensions. Measured training speed on 2 CPU cores (results/bench/train_throughput.md): tiny ~445,
# small ~135 audio-seconds per second; base is for GPUs.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=96, n_heads=4, ffn_dim=384, n_layers=2, conv_kernel=15, subsample_channels=32, dropout=0.1),
    "small": dict(d_model=144, n_heads=4, ffn_dim=576, n_layers=4, conv_kernel=15, subsample_channels=64, dropout=0.1),
    "base": dict(d_model=256, n_heads=4, ffn_dim=1024, n_layers=12, conv_kernel=31, subsample_channels=128,
                 dropout=0.1),
}
ARCHITECTURE = 2  # checkpoints of another architecture version cannot be loaded (2: masked, per-frame norm)


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
    embed_dim: int = 0  # > 0: an utterance head too (attentive statistics pooling -> embedding of this size ->
    #   vocab_size classes), as language ID uses; 0 = frame outputs only (ASR)


def dims_from_config(model_cfg, n_mels: int, vocab_size: int, embed_dim: int = 0) -> ModelDims:
    """Preset dimensions, overridden by any non-None field of a config.ModelConfig."""
    if model_cfg.preset not in PRESETS:
        raise ValueError(f"unknown model preset {model_cfg.preset!r}; choose one of {sorted(PRESETS)}")
    dims = dict(PRESETS[model_cfg.preset])
    dims.update({k: v for k, v in asdict(model_cfg).items() if k in dims and v is not None})
    if dims["d_model"] % dims["n_heads"]:
        raise ValueError(f"d_model {dims['d_model']} must be divisible by n_heads {dims['n_heads']}")
    return ModelDims(n_mels=n_mels, vocab_size=vocab_size, embed_dim=embed_dim, **dims)


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frame counts after two stride-2 convolutions with padding 1: ceil(ceil(T/2)/2)."""
    return ((lengths + 1) // 2 + 1) // 2


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True at padded positions (as torchaudio's key_padding_mask)."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class _Subsampling(nn.Module):
    """Two stride-2 3x3 convolutions over (time, frequency): 10 ms frames -> 40 ms, projected to d_model."""

    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        # channels-last convolutions: 1.03-1.11x faster training on CPU, same loss to 1e-7 (results/bench/)
        self.to(memory_format=torch.channels_last)
        freq = ((n_mels + 1) // 2 + 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) with zeros at padded frames, lengths (B,) -> (B, T', d_model), T' = subsampled_lengths(T)."""
        x = torch.relu(self.conv1(x.unsqueeze(1)))  # (B, C, ceil(T/2), F')
        half = (lengths + 1) // 2
        # the frames past an utterance's end are conv output over padding: zero them, as they would be (the
        # convolution's own zero padding) if the utterance were alone
        x = x * (~padding_mask(half, x.shape[2]))[:, None, :, None]
        x = torch.relu(self.conv2(x))  # (B, C, T', F''), channels-last: laid out as (B, T', F'', C)
        b, c, t, f = x.shape
        # proj's inputs are ordered (C, F''); reading x as (B, T', F'' C), a view of its memory, and the weight's
        # columns in that order is the same product without a copy, and keeps the gradients channels-last (0.35 ms of
        # a 3.4 ms frontend step on the benchmark model; bench/optimizations.py, lean_step)
        w = self.proj.weight.view(-1, c, f).transpose(1, 2).reshape(-1, f * c)
        return F.linear(x.permute(0, 2, 3, 1).reshape(b, t, f * c), w, self.proj.bias)


class _FrameNorm(nn.Module):
    """LayerNorm over the channels of each frame of a (B, C, T) tensor: no statistics shared across frames or
    utterances (the conformer convolution module's norm; BatchNorm there would make outputs batch-dependent)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _conv_module(m: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """torchaudio's conformer convolution module with padded frames zeroed before the depthwise convolution.

    x (B, T, D), pad (B, T) True at padded frames -> (B, T, D). Layers of m.sequential: pointwise conv, GLU,
    depthwise conv, norm (a _FrameNorm), SiLU, pointwise conv, dropout.

    The same weights and the same arithmetic as running m.sequential on (B, D, T), but every step stays in the
    (B, T, D) layout: the pointwise convolutions are linear layers over the channels, the norm acts on the last
    dimension, and the depthwise convolution runs as a channels-last 2-d convolution over a (B, D, 1, T) view.
    The (B, D, T) path copied the tensor between layouts five times per layer; this one makes the benchmark
    model's whole training step 1.06x faster on the CPU (bench/optimizations.py, lean_step). Outputs and dropout
    masks are the same; gradients differ by float rounding (another summation order).
    """
    pw1, _, dw, norm, act, pw2, drop = m.sequential  # _: the GLU, here over dim -1 (the channels)
    y = F.glu(F.linear(m.layer_norm(x), pw1.weight.squeeze(-1), pw1.bias), dim=-1)  # (B, T, D)
    y = y.masked_fill(pad[..., None], 0.0)
    y = F.conv2d(y.transpose(1, 2).unsqueeze(2), dw.weight.unsqueeze(2), dw.bias, padding=(0, dw.padding[0]),
                 groups=dw.groups)  # (B, D, 1, T): a channels-last view of (B, T, D) in and out
    y = act(norm.norm(y.squeeze(2).transpose(1, 2)))  # _FrameNorm's LayerNorm over the channels of each frame
    # the dropout mask drawn for a (B, D, T) tensor, as in torchaudio's module: the same masks as that path
    return drop(F.linear(y, pw2.weight.squeeze(-1), pw2.bias).transpose(1, 2)).transpose(1, 2)


def _self_attention(layer: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """The layer's self-attention (torch.nn.MultiheadAttention), x (T, B, D), pad (B, T) -> (T, B, D).

    A model built with cheap dropout masks (dropout.py; its layers' self_attn_dropout is a FastDropout) computes
    attention itself when training on the CPU with dropout, so that the dropout of the attention weights, the largest
    mask of a step (B x heads x T x T), is cheap as well; otherwise, and always in eval, torch's module runs.
    """
    mha = layer.self_attn
    if mha.training and mha.dropout > 0 and x.device.type == "cpu" and \
            isinstance(layer.self_attn_dropout, FastDropout):
        return attention(mha, x, pad, mha.dropout)
    return mha(query=x, key=x, value=x, key_padding_mask=pad, need_weights=False)[0]


def attention(mha: nn.MultiheadAttention, x: torch.Tensor, pad: torch.Tensor, p: float) -> torch.Tensor:
    """What nn.MultiheadAttention computes for self-attention (packed in-projection, no extra bias or zero
    attention, as torchaudio builds it), with dropout p on the attention weights drawn by dropout.dropout.

    x (T, B, D), pad (B, T) True at padded keys -> (T, B, D).
    """
    t, b, d = x.shape
    h = mha.num_heads
    q, k, v = (z.reshape(t, b * h, d // h).transpose(0, 1)  # (B H, T, D/H) each
               for z in F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1))
    # padded keys get -inf added: scaling, the product and the mask in one batched matmul (baddbmm) instead of
    # three passes over the (B H, T, T) scores
    bias = x.new_zeros(b, 1, t).masked_fill_(pad[:, None, :], float("-inf")).repeat_interleave(h, 0)  # (B H, 1, T)
    scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=(d // h) ** -0.5)  # (B H, T, T)
    weights = dropout(scores.softmax(-1), p, True)
    out = torch.bmm(weights, v).transpose(0, 1).reshape(t, b, d)
    return mha.out_proj(out)


def _conformer_layer(layer: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """torchaudio ConformerLayer.forward (macaron FFN, attention, convolution, FFN) with the masked convolution.

    x (T, B, D), pad (B, T) -> (T, B, D).
    """
    x = torch.add(x, layer.ffn1(x), alpha=0.5)  # x + 0.5 * ffn(x) in one pass (the same numbers: 0.5 is exact)
    if layer.convolution_first:
        x = x + _conv_module(layer.conv_module, x.transpose(0, 1), pad).transpose(0, 1)
    y = _self_attention(layer, layer.self_attn_layer_norm(x), pad)
    x = x + layer.self_attn_dropout(y)
    if not layer.convolution_first:
        x = x + _conv_module(layer.conv_module, x.transpose(0, 1), pad).transpose(0, 1)
    x = torch.add(x, layer.ffn2(x), alpha=0.5)
    return layer.final_layer_norm(x)


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al. 2018): a learned weight per frame, then the weighted mean and
    standard deviation of the frames. (B, T, D), pad (B, T) -> (B, 2 D); padded frames get zero weight."""

    def __init__(self, d_model: int, hidden: int = 64):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        w = self.attention(h).squeeze(-1).masked_fill(pad, float("-inf")).softmax(-1)  # (B, T)
        mean = (w[..., None] * h).sum(1)
        var = (w[..., None] * (h - mean[:, None]) ** 2).sum(1)
        return torch.cat([mean, var.clamp_min(1e-6).sqrt()], dim=-1)


class AcousticModel(nn.Module):
    """Features -> per-frame logits (and, with dims.embed_dim, per-utterance logits and embeddings).

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
        self.encoder = _new_conformer(dims)
        self.adapters = nn.ModuleList([nn.Identity() for _ in range(dims.n_layers)])
        self.head = nn.Linear(dims.d_model, dims.vocab_size)
        if dims.embed_dim:
            self.pool = AttentiveStatsPool(dims.d_model)
            self.embed = nn.Sequential(nn.Linear(2 * dims.d_model, dims.embed_dim), nn.LayerNorm(dims.embed_dim))
            self.utt_head = nn.Linear(dims.embed_dim, dims.vocab_size)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.conformer_layers

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels), lengths (B,) -> hidden (B, T', d_model) (zeros at padded frames), lengths (B,)."""
        keep = (~padding_mask(lengths, feats.shape[1]))[..., None]
        x = self.input_net((feats - self.cmvn_mean) / self.cmvn_std * keep) * keep  # padded frames stay 0
        x = self.frontend(x, lengths)
        out_lengths = subsampled_lengths(lengths)
        pad = padding_mask(out_lengths, x.shape[1])
        x = x.transpose(0, 1)  # conformer layers work on (T, B, D)
        for layer, adapter in zip(self.layers, self.adapters):
            x = adapter(_conformer_layer(layer, x, pad))
        return x.transpose(0, 1).masked_fill(pad[..., None], 0.0), out_lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, utterance: bool = False):
        """feats (B, T, n_mels), lengths (B,) -> logits (B, T', vocab_size), lengths (B,).

        utterance=True returns `self.utterance(feats, lengths)` instead (through forward, so that a
        DistributedDataParallel wrapper can run it).
        """
        if utterance:
            return self.utterance(feats, lengths)
        hidden, out_lengths = self.encode(feats, lengths)
        return self.head(hidden), out_lengths

    def utterance(self, feats: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The utterance head: {"logits" (B, vocab_size), "embedding" (B, embed_dim), "frame_logits" (B, T', V),
        "lengths" (B,)}. Needs dims.embed_dim > 0."""
        if not self.dims.embed_dim:
            raise ValueError("this model has no utterance head (dims.embed_dim = 0)")
        hidden, out_lengths = self.encode(feats, lengths)
        emb = self.embed(self.pool(hidden, padding_mask(out_lengths, hidden.shape[1])))
        return {"logits": self.utt_head(emb), "embedding": emb, "frame_logits": self.head(hidden),
                "lengths": out_lengths}

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """The model's trainable body, bottom to top: frontend, layer0..layer{n-1}, head.

        Fine-tuning schedules (discriminative LRs, chain-thaw, gradual unfreezing) act on these groups; the
        utterance head (pooling, embedding, classifier) belongs to "head". Adaptation layers (input_net, adapters)
        are not part of any group: adapters.py manages them.
        """
        groups = [("frontend", list(self.frontend.parameters()))]
        groups += [(f"layer{i}", list(layer.parameters())) for i, layer in enumerate(self.layers)]
        head = list(self.head.parameters())
        if self.dims.embed_dim:
            head += [*self.pool.parameters(), *self.embed.parameters(), *self.utt_head.parameters()]
        groups.append(("head", head))
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
            fresh = _new_conformer(self.dims)
        for i in range(k, self.dims.n_layers):
            self.layers[i].load_state_dict(fresh.conformer_layers[i].state_dict())


def _new_conformer(dims: ModelDims) -> Conformer:
    """torchaudio's Conformer with a per-frame norm in place of BatchNorm in every convolution module."""
    conformer = Conformer(input_dim=dims.d_model, num_heads=dims.n_heads, ffn_dim=dims.ffn_dim,
                          num_layers=dims.n_layers, depthwise_conv_kernel_size=dims.conv_kernel,
                          dropout=dims.dropout)
    for layer in conformer.conformer_layers:
        seq = layer.conv_module.sequential
        seq[3] = _FrameNorm(seq[3].num_features)
    return use_fast_dropout(conformer)


def dims_to_dict(dims: ModelDims) -> dict:
    return asdict(dims)


def dims_from_dict(d: dict) -> ModelDims:
    names = {f.name for f in fields(ModelDims)}
    required = {f.name for f in fields(ModelDims) if f.default is MISSING}  # fields added later have defaults
    missing, extra = required - set(d), set(d) - names
    if missing or extra:
        raise ValueError(f"checkpoint model dims do not match this toolkit: missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}")
    return ModelDims(**d)
