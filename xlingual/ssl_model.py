"""The model of an SSL source (`SSLModel`): waveform rows -> an SSL encoder's bottom layers, each followed by an
adaptation slot -> a new linear CTC head; or the head alone over the encoder's cached outputs (ssl_cache.py).

Its input is the waveform as rows of WAVE_FRAME samples (10 ms, `waveform_rows`), so that the training loop's
length-bucketed batches (budgeted in 10 ms frames), the dev evaluator and the decoders run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .audio import SAMPLE_RATE
from .config import SSLConfig
from .ssl_encoder import EncoderFile, build_encoder, conv_layers
from .train import FRAMES_PER_SECOND

WAVE_FRAME = SAMPLE_RATE // FRAMES_PER_SECOND  # 160 samples per cached waveform row: 10 ms, the loop's frame unit


@dataclass(frozen=True)
class SSLDims:
    d_model: int  # encoder width: the CTC head's input
    n_layers: int  # transformer layers kept (the bottom ones)
    vocab_size: int  # CTC units incl. blank
    n_mels: int = WAVE_FRAME  # width of an input row (samples); adapters.py reads it (its "lin" is refused here)


def waveform_rows(wav: np.ndarray) -> np.ndarray:
    """(N,) float32 -> (ceil(N / WAVE_FRAME), WAVE_FRAME): the waveform as 10 ms rows, the last zero-padded."""
    rows = -(-len(wav) // WAVE_FRAME)
    out = np.zeros(rows * WAVE_FRAME, dtype=np.float32)
    out[:len(wav)] = wav
    return out.reshape(rows, WAVE_FRAME)


def normalize_waveform(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """wav (B, N), lengths (B,) samples -> each utterance at zero mean and unit variance over its own samples
    (F.layer_norm's, eps 1e-5), padding left at 0: batch-invariant, unlike one norm over the padded batch."""
    valid = torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]
    n = lengths.clamp_min(1)[:, None].to(wav.dtype)
    mean = (wav * valid).sum(1, keepdim=True) / n
    var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (wav - mean) / torch.sqrt(var + 1e-5) * valid


class SSLModel(nn.Module):
    """Waveform rows -> per-frame CTC logits: an SSL encoder's bottom layers, adaptation slots, a linear head.

    With `encoder=None` it is the head alone over cached encoder outputs (`forward` then takes those).
    Adaptation slots (adapters.py) are identities until filled: `adapters[i]` acts on the output of transformer layer
    i; `input_net` exists for adapters.py and stays an identity (a linear input network acts on filterbanks).
    Batch invariance as in model.py: a group-norm feature extractor (HuBERT, wav2vec 2.0 base) normalizes over time,
    so it runs on each utterance alone; padded frames are masked in attention and zeroed in the output.
    """

    def __init__(self, encoder: nn.Module | None, dims: SSLDims, frame_samples: int, normalize: bool = False,
                 per_utterance_extractor: bool = False, mask_time_prob: float = 0.0, mask_time_length: int = 10,
                 wavlm: bool = False):
        super().__init__()
        self.encoder = encoder  # torchaudio Wav2Vec2Model, transformer cut to dims.n_layers layers; None: cached
        self.dims = dims
        self.frame_samples = frame_samples  # waveform samples per encoder frame (the extractor's total stride)
        self.normalize = normalize
        self.per_utterance_extractor = per_utterance_extractor
        self.mask_time_prob, self.mask_time_length = mask_time_prob, mask_time_length
        self.wavlm = wavlm  # WavLM's attention takes a key padding mask, not the additive mask torchaudio builds
        self.input_net: nn.Module = nn.Identity()
        self.adapters = nn.ModuleList([nn.Identity() for _ in range(dims.n_layers if encoder is not None else 0)])
        self.head = nn.Linear(dims.d_model, dims.vocab_size)

    @property
    def cached(self) -> bool:
        return self.encoder is None

    @property
    def transformer(self) -> nn.Module:
        return self.encoder.encoder.transformer

    # -- shapes ----------------------------------------------------------------------------------------------

    def output_lengths(self, rows: torch.Tensor) -> torch.Tensor:
        """Input rows (B,) -> output frames (B,): the feature extractor's convolutions (cached: the same)."""
        if self.cached:
            return rows
        n = rows * WAVE_FRAME
        for layer in self.encoder.feature_extractor.conv_layers:
            n = torch.clamp(torch.div(n - layer.kernel_size, layer.stride, rounding_mode="floor") + 1, min=0)
        return n

    def frames_10ms(self, rows: int) -> int:
        """The batching budget of an input of `rows` rows, in the training loop's 10 ms frames."""
        return rows if not self.cached else -(-rows * self.frame_samples // WAVE_FRAME)

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, WAVE_FRAME) waveform rows (cached: (B, T', d_model) encoder outputs), lengths (B,) ->
        logits (B, T', vocab_size), lengths (B,)."""
        if self.cached:
            return self.head(feats), lengths
        hidden, out_lengths = self.encode(feats, lengths)
        return self.head(hidden), out_lengths

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, WAVE_FRAME), lengths (B,) rows -> hidden (B, T', d_model) (zeros at padded frames),
        lengths (B,).

        Frozen stages below the lowest trainable one run without autograd: a frozen encoder under a trainable
        head or top layers costs a forward pass only, not the activations a backward pass would keep.
        """
        b = feats.shape[0]
        wav, n = feats.reshape(b, -1), lengths * WAVE_FRAME
        if self.normalize:
            wav = normalize_waveform(wav, n)
        t = self.transformer
        first = self._first_trainable()
        grad = torch.is_grad_enabled()

        def stage(i: int):
            return torch.set_grad_enabled(grad and i >= first)

        # torchaudio's forward has no place for a module between transformer layers, so its steps are called one by
        # one (Encoder._preprocess, Transformer._preprocess: torchaudio 2.x); tests/test_ssl.py checks that the
        # result is still torchaudio's own forward
        with stage(0):
            x, out = self._extract(wav, n)
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= out[:, None]  # (B, T') True at padding
        keys = None
        with stage(1):
            x, mask = self.encoder.encoder._preprocess(x, out)  # projection; padded frames 0, attention mask
            if self.wavlm:  # (torchaudio's own WavLM forward asserts on the additive mask it builds here); additive,
                #   in the activations' type, as the relative position bias it is combined with
                mask, keys = None, torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill(pad, -torch.inf)
            if self.training and self.mask_time_prob > 0:
                x = self._mask_time(x, out)
            x = t._preprocess(x)  # convolutional position embedding (+ the input norm of a post-LN encoder)
        bias = None  # WavLM's relative position bias, computed by its first layer
        for i, (layer, adapter) in enumerate(zip(t.layers, self.adapters)):
            with stage(2 + i):
                # LayerDrop as torchaudio's Transformer.forward does it (the checkpoint's encoder_layer_drop)
                if self.training and t.layer_drop > 0 and torch.rand(1).item() <= t.layer_drop:
                    continue
                x, bias = layer(x, mask, position_bias=bias, key_padding_mask=keys)
                x = adapter(x)
        with stage(2 + len(t.layers)):
            if not t.layer_norm_first:
                # a pre-LN encoder (XLS-R) ends with a norm; it also normalizes the output of a cut-down stack
                x = t.layer_norm(x)
        return x.masked_fill(pad[..., None], 0.0), out

    def _extract(self, wav: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, N), n (B,) samples -> (B, T', C) convolutional features, lengths (B,)."""
        fe = self.encoder.feature_extractor
        if not self.per_utterance_extractor or wav.shape[0] == 1:
            return fe(wav, n)
        parts = [fe(wav[i:i + 1, :int(n[i])], n[i:i + 1]) for i in range(wav.shape[0])]
        x = nn.utils.rnn.pad_sequence([p[0][0] for p in parts], batch_first=True)
        return x, torch.cat([p[1] for p in parts])

    def _mask_time(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero about mask_time_prob of each utterance's valid frames, in spans of mask_time_length (wav2vec 2.0's
        fine-tuning regularizer; torchaudio's encoder has no learned mask embedding, so masked frames are 0).
        Drawn from torch's global generator, which the training loop seeds per step: resumes repeat the masks."""
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        for i, t in enumerate(lengths.tolist()):
            span = min(self.mask_time_length, t)
            if span < 1:
                continue
            # stochastic rounding of the expected span count, as fairseq's compute_mask_indices
            count = int(self.mask_time_prob * t / span + torch.rand(1).item())
            for s in torch.randint(0, t - span + 1, (count,)).tolist():
                keep[i, s:s + span] = False
        return x * keep[..., None].to(x.dtype)

    def _stages(self) -> list[list[nn.Parameter]]:
        """Parameters by stage of `encode`: extractor, the rest of the frontend, each layer with its adaptation
        slot, the final norm."""
        t = self.transformer
        rest = [*self.encoder.encoder.feature_projection.parameters(), *t.pos_conv_embed.parameters()]
        if t.layer_norm_first:
            rest += list(t.layer_norm.parameters())
        stages = [list(self.encoder.feature_extractor.parameters()), rest]
        stages += [[*layer.parameters(), *a.parameters()] for layer, a in zip(t.layers, self.adapters)]
        stages.append([] if t.layer_norm_first else list(t.layer_norm.parameters()))
        return stages

    def _first_trainable(self) -> int:
        for i, ps in enumerate(self._stages()):
            if any(p.requires_grad for p in ps):
                return i
        return 1 << 30

    # -- what the adaptation machinery needs -------------------------------------------------------------------

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """The trainable body, bottom to top: frontend (feature extractor, projection, position embedding),
        layer0..layer{k-1} (the kept transformer layers; the last one with a pre-LN encoder's final norm), head.
        Cached: the head alone. Adaptation layers are in no group (adapters.py manages them), as in model.py."""
        if self.cached:
            return [("head", list(self.head.parameters()))]
        t = self.transformer
        stages = self._stages()
        frontend = stages[0] + stages[1]
        layers = [list(layer.parameters()) for layer in t.layers]
        layers[-1] += stages[-1]
        return [("frontend", frontend), *[(f"layer{i}", ps) for i, ps in enumerate(layers)],
                ("head", list(self.head.parameters()))]

    def extractor_parameters(self) -> list[nn.Parameter]:
        return [] if self.cached else list(self.encoder.feature_extractor.parameters())

    def reinit_layers_from(self, k: int, seed: int = 0) -> None:
        """Re-initialize transformer layers k..n-1 (transfer only the bottom k), with PyTorch's default init of each
        module, as the builder gives a new model; a fixed seed, without disturbing the caller's generator."""
        if not 0 <= k <= self.dims.n_layers:
            raise ValueError(f"can transfer 0..{self.dims.n_layers} layers, not {k}")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for layer in self.transformer.layers[k:]:
                for m in layer.modules():
                    if m is not layer and hasattr(m, "reset_parameters"):
                        m.reset_parameters()


def model_from_file(enc: EncoderFile, layers: int | None, vocab_size: int, cfg: SSLConfig | None = None,
                    load_weights: bool = True, cached: bool = False, seed: int | None = None) -> SSLModel:
    """An SSLModel over `enc`'s bottom `layers` transformer layers (None: all) with a new head, drawn after
    torch.manual_seed(seed) (None: from the generator as it is). cached: the head alone, over the encoder's cached
    outputs. load_weights=False leaves the encoder randomly initialized (a checkpoint's state dict follows)."""
    cfg = cfg or SSLConfig()
    k = enc.n_layers if layers is None else layers
    if not 1 <= k <= enc.n_layers:
        raise ValueError(f"ssl.layers={layers}: {enc.path} has {enc.n_layers} transformer layers, so it must be "
                         f"1..{enc.n_layers} (or null for all)")
    stride = int(np.prod([s for _, _, s in conv_layers(enc.config)]))
    encoder = None
    if not cached:
        encoder = build_encoder(enc.builder, enc.config)
        if load_weights:
            encoder.load_state_dict(enc.state)
        encoder.encoder.transformer.layers = encoder.encoder.transformer.layers[:k]  # the upper layers are dropped
    if seed is not None:
        torch.manual_seed(seed)
    return SSLModel(encoder, SSLDims(d_model=enc.d_model, n_layers=k, vocab_size=vocab_size), stride,
                    normalize=enc.normalize_waveform,
                    per_utterance_extractor=enc.config.get("extractor_mode") == "group_norm",
                    mask_time_prob=cfg.mask_time_prob, mask_time_length=cfg.mask_time_length,
                    wavlm=enc.builder == "wavlm_model")
