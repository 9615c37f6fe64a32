"""Self-supervised speech encoders (wav2vec 2.0, HuBERT, XLS-R, WavLM) as transfer sources, with a CTC head on top.

An SSL source is a local file: a torchaudio encoder's state dict and the builder call that rebuilds it
(`save_encoder`; `xlingual ssl-save` writes one from a torchaudio bundle such as WAV2VEC2_XLSR_300M, or from a Hugging
Face checkpoint through torchaudio's importer). A run of kind "ssl" (runspec.RunSpec) adapts it to a target language
with the machinery that adapts conformer sources (transfer.py), through the one training loop:

  - the model (`SSLModel`): waveform -> convolutional feature extractor, projection and convolutional position
    embedding (group "frontend") -> the bottom `ssl.layers` transformer layers ("layer0".."layer{k-1}"), each followed
    by an adaptation slot (adapters.py: residual adapters, LHUC) -> a new linear CTC head ("head") over the target's
    units. schedules.py's freezing plans (head, full, adaptation, chain-thaw, gradual unfreezing) and discriminative
    LRs act on those groups; the fine-tuning run's schedule (STLR by default) is the adaptation's, as for any source.
  - input: the waveform, cached per utterance as rows of WAVE_FRAME samples (10 ms), so that the training loop's
    length-bucketed batches (budgeted in 10 ms frames), the dev evaluator and the decoders run unchanged.
  - a frozen encoder (mode "head" without adaptation layers, ssl.cache_features) runs once per utterance and its output
    is cached beside the corpus's filterbanks, keyed by the encoder file's content and the layers kept; the run trains
    the head alone on those features. The cache is per utterance, so every later run adapting from the same encoder
    reuses whatever an earlier one computed: other methods and seeds, nested budgets, pools that contain a target
    already adapted to, and decoding.

Real pretrained weights need a download (README, "Self-supervised encoders"); the tests use a tiny encoder of the same
architecture with random weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .adapters import adaptation_parameters, adaptation_spec, add_adaptation
from .asr import build_tokenizer, decode_and_score, fixed_tokenizer, make_evaluator
from .audio import SAMPLE_RATE
from .checkpoint import CheckpointError, load_checkpoint
from .config import AdaptConfig, DecodeConfig, FeatureConfig, SSLConfig, UnitConfig, from_dict, to_dict
from .corpus import Utterance, ctc_feasible
# _extract_all: the filterbank cache's shard writer, reused as is (its extractor protocol: n_mels + __call__)
from .features import INDEX_FILE, SHARD_MB, FeatureStore, _extract_all, cache_dir
from .fileio import read_json, write_json
from .runspec import RunSpec, digest, file_digest
from .schedules import (ADAPTATION, apply_trainable, named_groups, new_groups_after_reinit, param_groups, plan_for,
                        trainable_at)
from .tokenizer import Tokenizer
from .train import FRAMES_PER_SECOND, Example, Setup, pick_device
from .transfer import check_adapt_config

log = logging.getLogger(__name__)

FORMAT = "xlingual-ssl-encoder"  # the "format" field of an SSL source file (save_encoder)
BUILDERS = ("wav2vec2_model", "wavlm_model")  # torchaudio.models builders: wav2vec 2.0, HuBERT and XLS-R share the
#   first (hubert_base & co. call it with HuBERT's settings); WavLM adds relative position buckets
WAVE_FRAME = SAMPLE_RATE // FRAMES_PER_SECOND  # 160 samples per cached waveform row: 10 ms, the loop's frame unit
CACHE_VERSION = 1  # bump when what a cached encoder output means changes (stale caches are then not reused)
SAVE_HINT = ("save the encoder with its own builder config: `xlingual ssl-save <torchaudio bundle or Hugging Face "
             "model> <out.pt>` (README, 'Self-supervised encoders'), or xlingual.ssl.save_encoder(model, config, path)")


# ----------------------------------------------------------------------------------------------------------------
# The source file: a state dict and the builder call that rebuilds its model


@dataclass
class EncoderFile:
    """An SSL source file, read and checked (`read_encoder`)."""

    path: Path  # where it was read from
    builder: str  # a name in BUILDERS
    config: dict  # the builder's keyword arguments (aux_num_out excluded: xlingual adds its own head)
    normalize_waveform: bool  # the encoder was pre-trained on waveforms normalized to zero mean, unit variance
    #   per utterance (XLS-R, the large wav2vec 2.0 / HuBERT models); xlingual does the same before it
    name: str  # where the weights came from, for people (e.g. "WAV2VEC2_XLSR_300M")
    state: dict  # the encoder's state dict (tensors memory-mapped from the file)

    @property
    def n_layers(self) -> int:
        return int(self.config["encoder_num_layers"])

    @property
    def d_model(self) -> int:
        return int(self.config["encoder_embed_dim"])


# torchaudio's feature extractor when a config leaves extractor_conv_layer_config None: (channels, kernel, stride)
DEFAULT_CONV = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2


def conv_layers(config: dict) -> list[list[int]]:
    """The feature extractor's (channels, kernel, stride) per convolution; their strides multiply to the samples per
    encoder frame (320 = 20 ms for every released wav2vec 2.0-family model)."""
    layers = config.get("extractor_conv_layer_config")
    return [list(x) for x in layers] if layers is not None else [list(x) for x in DEFAULT_CONV]


def build_encoder(builder: str, config: dict):
    """A randomly initialized torchaudio Wav2Vec2Model from `builder(**config)`, without an auxiliary head."""
    import torchaudio.models as tam

    if builder not in BUILDERS:
        raise ValueError(f"unknown SSL encoder builder {builder!r}; valid builders: {', '.join(BUILDERS)}")
    return getattr(tam, builder)(**{**config, "aux_num_out": None})


def save_encoder(model: nn.Module, config: dict, path: str | Path, builder: str = "wav2vec2_model",
                 normalize_waveform: bool = False, name: str = "") -> Path:
    """Write an SSL source file: `model`'s state dict (a torchaudio Wav2Vec2Model, or torchaudio's bundle wrapper
    around one) with the builder config that rebuilds it. An auxiliary (CTC) head is left out.

    Raises:
        CheckpointError: `config` does not build a model that these weights fit.
    """
    from .checkpoint import save_checkpoint

    inner = getattr(model, "model", model)  # torchaudio bundles wrap the model to normalize the waveform
    state = {k: v.detach().cpu() for k, v in inner.state_dict().items() if not k.startswith("aux.")}
    config = {**{k: v for k, v in config.items() if k != "aux_num_out"},
              "extractor_conv_layer_config": conv_layers(config)}  # lists: plain data for a weights_only load
    enc = EncoderFile(Path(path), builder, config, bool(normalize_waveform), name, state)
    _check_weights(enc)
    save_checkpoint(path, {"format": FORMAT, "version": 1, "builder": builder, "config": config,
                           "normalize_waveform": bool(normalize_waveform), "name": name, "model": state})
    return Path(path)


def _load(path: Path):
    """torch.load, safely (weights_only) and memory-mapped where the file allows it: reading a 1.2 GB encoder to
    look at its config costs nothing, and its weights are paged in only when a model loads them."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def is_encoder_file(path: str | Path) -> bool:
    """Whether `path` is an SSL source file (as save_encoder writes), without building anything."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        ck = _load(path)
    except Exception:
        return False
    return isinstance(ck, dict) and ck.get("format") == FORMAT


def read_encoder(path: str | Path) -> EncoderFile:
    """Read an SSL source file and check that its weights fit the model its builder config describes.

    Raises:
        FileNotFoundError: nothing at `path`.
        IsADirectoryError: a folder (a Hugging Face checkpoint must be converted first).
        CheckpointError: not loadable safely, an xlingual conformer checkpoint, a bare state dict, an unknown builder,
            or weights of another architecture than the config's; the message names the file and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"SSL encoder {path} is a folder; convert a Hugging Face checkpoint into an xlingual "
                                f"SSL source file first: `xlingual ssl-save {path} <out.pt>`")
    if not path.is_file():
        raise FileNotFoundError(f"SSL encoder checkpoint not found: {path}; {SAVE_HINT}")
    try:
        ck = _load(path)
    except Exception:  # torch's own words here advise weights_only=False, which would let a crafted file run code
        raise CheckpointError(f"cannot load SSL encoder {path} safely (plain tensors and data only): it is damaged, "
                              f"or not a file that torch.save wrote; {SAVE_HINT}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path} is not an SSL encoder file (it holds a {type(ck).__name__}); {SAVE_HINT}")
    meta = ck.get("meta")
    if isinstance(meta, dict) and meta.get("toolkit") == "xlingual":
        what = ("an SSL model adapted by xlingual (a run's best.pt), not the encoder it started from"
                if meta.get("model") == "ssl" else
                "an xlingual conformer checkpoint, not a self-supervised encoder: adapt it as a source of kind "
                "'adapt' (`xlingual adapt` tells the two apart by itself)")
        raise CheckpointError(f"{path} is {what}. An SSL source is an encoder file: {SAVE_HINT}")
    if ck.get("format") != FORMAT:
        if ck and all(isinstance(v, torch.Tensor) for v in ck.values()):
            raise CheckpointError(f"{path} holds a bare state dict ({len(ck)} tensors) without the builder config "
                                  f"that rebuilds its model; {SAVE_HINT}")
        raise CheckpointError(f"{path} is not an SSL encoder file (no format {FORMAT!r}); {SAVE_HINT}")
    builder, config, state = ck.get("builder"), ck.get("config"), ck.get("model")
    if builder not in BUILDERS:
        raise CheckpointError(f"{path}: unknown encoder builder {builder!r} (valid: {', '.join(BUILDERS)}); "
                              f"{SAVE_HINT}")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: its builder config or weights are missing; {SAVE_HINT}")
    enc = EncoderFile(path, builder, dict(config), bool(ck.get("normalize_waveform", False)), str(ck.get("name", "")),
                      state)
    _check_weights(enc)
    return enc


def _check_weights(enc: EncoderFile) -> None:
    """Raise CheckpointError unless the state dict fits `builder(**config)` exactly (names and shapes).

    The reference is built with at most two transformer layers, whose names and shapes stand for all the layers
    above the first (WavLM's first layer alone has a relative position embedding): checking a 24-layer XLS-R costs
    a fraction of a second and of its memory. (The meta device would cost nothing per model, but its first use
    imports torch's compiler stack: seconds at every start.)
    """
    n = enc.config.get("encoder_num_layers")
    try:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"encoder_num_layers must be a positive integer, not {n!r}")
        with torch.random.fork_rng():  # building draws random weights: the caller's generator is left alone
            small = build_encoder(enc.builder, {**enc.config, "encoder_num_layers": min(n, 2)}).state_dict()
    except Exception as e:
        raise CheckpointError(f"{enc.path}: its config cannot build a {enc.builder}: {str(e)[:200]}; "
                              f"{SAVE_HINT}") from None
    layer = "encoder.transformer.layers."
    ref = {k: v.shape for k, v in small.items() if not k.startswith(layer) or k.startswith(layer + "0.")}
    for k, v in small.items():
        if k.startswith(layer + "1."):
            ref.update({f"{layer}{i}.{k[len(layer) + 2:]}": v.shape for i in range(1, n)})
    missing = sorted(set(ref) - set(enc.state))
    extra = sorted(set(enc.state) - set(ref))
    shapes = sorted(k for k in set(ref) & set(enc.state) if tuple(ref[k]) != tuple(enc.state[k].shape))
    if missing or extra or shapes:
        found = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("of another shape", shapes)):
            if keys:
                e = keys[0] + (f" {tuple(enc.state[keys[0]].shape)} vs {tuple(ref[keys[0]])}"
                               if what == "of another shape" else "")
                found.append(f"{len(keys)} weight(s) {what}, e.g. {e}")
        raise CheckpointError(f"{enc.path}: its weights are not those of the {enc.builder} its config describes "
                              f"({n} transformer layers, width {enc.config.get('encoder_embed_dim')}): "
                              f"{'; '.join(found)}. The config and the weights come from different models; {SAVE_HINT}")
    bad = [k for k, v in enc.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{enc.path} holds non-finite weights ({bad[0]}); re-save it from the original model")


def save_pretrained(source: str, out: str | Path, normalize_waveform: bool | None = None) -> Path:
    """`xlingual ssl-save`: write an SSL source file from a torchaudio bundle name (e.g. "WAV2VEC2_XLSR_300M",
    downloaded by torchaudio) or a Hugging Face model (a name on the Hub or a local folder; needs `transformers`).

    normalize_waveform: None = the bundle's setting, or for Hugging Face the checkpoint's feature extractor's
    do_normalize (else its do_stable_layer_norm, which the large pre-LN models that normalize have).
    """
    import torchaudio.pipelines as pipelines

    bundle = getattr(pipelines, source, None)
    if bundle is not None:
        builder, config, norm = bundle_config(source)
        norm = norm if normalize_waveform is None else normalize_waveform
        return save_encoder(bundle.get_model(), config, out, builder, norm, name=source)
    return _save_huggingface(source, out, normalize_waveform)


def bundle_config(name: str) -> tuple[str, dict, bool]:
    """(builder, builder config, normalize_waveform) of the torchaudio.pipelines bundle `name`, without downloading.

    torchaudio keeps a bundle's builder arguments in its _params; a torchaudio that moved them fails here, naming
    the bundle, rather than writing a wrong config.
    """
    import torchaudio.pipelines as pipelines

    bundle = getattr(pipelines, name, None)
    if bundle is None or not hasattr(bundle, "get_model") or not isinstance(getattr(bundle, "_params", None), dict):
        raise ValueError(f"torchaudio.pipelines.{name} is not a wav2vec 2.0-family bundle whose builder config this "
                         f"torchaudio exposes (_params); use e.g. WAV2VEC2_XLSR_300M, or a Hugging Face checkpoint")
    builder = "wavlm_model" if "wavlm" in str(getattr(bundle, "_model_type", "")).lower() else "wav2vec2_model"
    return builder, dict(bundle._params), bool(getattr(bundle, "_normalize_waveform", False))


def _save_huggingface(source: str, out: str | Path, normalize_waveform: bool | None) -> Path:
    try:  # optional: only this conversion needs transformers
        import transformers
    except ImportError:
        raise ImportError(f"{source!r} is not a torchaudio bundle name (e.g. WAV2VEC2_XLSR_300M, HUBERT_BASE), and "
                          f"reading it as a Hugging Face checkpoint needs the optional package transformers: "
                          f"pip install transformers") from None
    from torchaudio.models.wav2vec2.utils import import_huggingface_model
    from torchaudio.models.wav2vec2.utils.import_huggingface import _get_config, _get_config_wavlm

    hf = transformers.AutoModel.from_pretrained(source)
    wavlm = type(hf).__name__.startswith("WavLM")
    config = (_get_config_wavlm if wavlm else _get_config)(hf.config)
    if normalize_waveform is None:
        try:
            normalize_waveform = bool(transformers.AutoFeatureExtractor.from_pretrained(source).do_normalize)
        except Exception:  # no preprocessor_config.json: the large pre-LN models are the ones trained normalized
            normalize_waveform = bool(getattr(hf.config, "do_stable_layer_norm", False))
    model = import_huggingface_model(hf)
    return save_encoder(model, config, out, "wavlm_model" if wavlm else "wav2vec2_model", normalize_waveform,
                        name=str(source))


# ----------------------------------------------------------------------------------------------------------------
# The model


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


# ----------------------------------------------------------------------------------------------------------------
# Feature caches: the waveform as rows, and a frozen encoder's outputs, per utterance


def _span(u: Utterance) -> str:
    return f"{u.audio}\t{u.offset}\t{u.duration}"


@contextlib.contextmanager
def _index_lock(folder: Path):
    """A blocking lock on a cache's index: parallel runs extract on their own and merge their entries one at a
    time (fileio.exclusive_lock refuses a second holder at once, which suits a run's folder, not a shared cache)."""
    try:
        import fcntl
    except ImportError:  # no flock: a single process at a time is assumed
        yield
        return
    fd = os.open(folder / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_index(folder: Path) -> dict:
    path = folder / INDEX_FILE
    return read_json(path) if path.is_file() else {"n_mels": None, "shards": [], "utts": {}, "spans": {}}


def cached_store(utts: list[Utterance], folder: Path, make_extractor: Callable[[], Callable], width: int,
                 progress: bool = False, desc: str = "features") -> FeatureStore:
    """The features of `utts` from the per-utterance cache in `folder`, extracting only the utterances it lacks.

    make_extractor() -> an object with `n_mels` (= width) and `(N,) waveform -> (T, width)` tensor; called only
    when something is missing (a frozen encoder is then loaded once). New utterances go to new shards in a
    folder of their own (features._extract_all); the index (features.INDEX_FILE, which FeatureStore reads, plus
    each utterance's audio span) is merged under a lock, so parallel runs can fill the same cache. An utterance
    whose audio span changed is extracted again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder)
    missing = list({u.id: u for u in utts if index["spans"].get(u.id) != _span(u)}.values())
    if missing:
        extract = make_extractor()
        part = f"part-{uuid.uuid4().hex[:12]}"
        shards, entries = _extract_all(missing, extract, folder / part, int(SHARD_MB * 2 ** 20), progress, desc)
        with _index_lock(folder):
            index = _read_index(folder)  # another run may have merged its own part meanwhile
            base = len(index["shards"])
            index["n_mels"] = width
            index["shards"] += [f"{part}/{s}" for s in shards]
            for u in missing:
                shard, start, n = entries[u.id]
                index["utts"][u.id] = [base + shard, start, n]
                index["spans"][u.id] = _span(u)
            write_json(folder / INDEX_FILE, index)  # last: an interrupted extraction leaves an unused part only
    return FeatureStore(folder)


class _WaveRows:
    """waveform (N,) -> (ceil(N / WAVE_FRAME), WAVE_FRAME) rows (features._extract_all's extractor protocol)."""

    n_mels = WAVE_FRAME

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(waveform_rows(np.asarray(wav, dtype=np.float32)))


class _EncoderOutputs:
    """waveform (N,) -> the frozen encoder's output (T', d_model), one utterance at a time, in eval mode."""

    def __init__(self, model: SSLModel, device: torch.device):
        self.model, self.device, self.n_mels = model.eval().to(device), device, model.dims.d_model

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(waveform_rows(np.asarray(wav, dtype=np.float32)))
        if int(self.model.output_lengths(torch.tensor(rows.shape[0]))) < 1:  # shorter than one encoder frame
            return torch.zeros(0, self.n_mels)
        with torch.no_grad():
            hidden, _ = self.model.encode(rows[None].to(self.device), torch.tensor([rows.shape[0]], device=self.device))
        return hidden[0].float().cpu()


def waveform_store(utts: list[Utterance], corpus, progress: bool = False, desc: str = "waveforms") -> FeatureStore:
    """The waveforms of `utts` as rows, cached once per corpus (corpus.dir/.features/waveform/) for every SSL run."""
    return cached_store(utts, cache_dir(corpus) / "waveform", _WaveRows, WAVE_FRAME, progress, desc)


def encoder_cache_folder(corpus, encoder_digest: str, layers: int, normalize: bool) -> Path:
    """Where a frozen encoder's outputs are cached: one folder per (encoder content, layers kept, input norm)."""
    return cache_dir(corpus) / f"ssl-{digest(CACHE_VERSION, encoder_digest, layers, normalize)}"


def encoder_store(utts: list[Utterance], corpus, enc: EncoderFile | Callable[[], EncoderFile], encoder_digest: str,
                  layers: int, normalize: bool, width: int, device: torch.device, progress: bool = False,
                  desc: str = "encoder outputs") -> FeatureStore:
    """A frozen encoder's outputs for `utts` (eval mode: no dropout, LayerDrop or masking), cached per utterance.

    enc: the encoder file, or a function that reads it (called only when some utterance is not cached yet).
    """
    def extractor():
        source = enc() if callable(enc) else enc
        with torch.random.fork_rng():  # its unused head must not move the caller's generator
            return _EncoderOutputs(model_from_file(source, layers, vocab_size=1), device)

    return cached_store(utts, encoder_cache_folder(corpus, encoder_digest, layers, normalize), extractor, width,
                        progress, desc)


# ----------------------------------------------------------------------------------------------------------------
# One run of kind "ssl"


def ssl_spec(source: str | Path, language: str, cfg: AdaptConfig, corpus, units: UnitConfig,
             ssl: SSLConfig | None = None, hours: float | None = None, decode: DecodeConfig | None = None) -> RunSpec:
    """The RunSpec of adapting the SSL encoder file `source` to `language` with method `cfg` (its `train` is the
    run's)."""
    return RunSpec(kind="ssl", languages=[language], hours=hours, corpus=corpus, units=units, train=cfg.train,
                   adapt=cfg, source=str(source), ssl=ssl or SSLConfig(), decode=decode or DecodeConfig())


def uses_cache(cfg: AdaptConfig, ssl: SSLConfig) -> bool:
    """Whether the run trains a head on cached encoder outputs: nothing in the encoder trains or changes."""
    return ssl.cache_features and cfg.mode == "head" and not cfg.adaptation and cfg.transfer_layers is None


def check_source(source: str | Path, cfg: AdaptConfig, ssl: SSLConfig) -> EncoderFile:
    """The SSL source file, read and checked against the adaptation settings, before anything is written.

    Raises:
        FileNotFoundError, IsADirectoryError, CheckpointError: see read_encoder.
        ValueError: ssl.layers beyond the encoder's, a linear input network (it transforms filterbanks; an SSL
            encoder reads the waveform), or adaptation settings that cannot work with the layers kept.
    """
    enc = read_encoder(source)
    k = enc.n_layers if ssl.layers is None else ssl.layers
    if not 1 <= k <= enc.n_layers:
        raise ValueError(f"ssl.layers={ssl.layers}: {source} has {enc.n_layers} transformer layers, so it must be "
                         f"1..{enc.n_layers} (or null for all)")
    if "lin" in cfg.adaptation:
        raise ValueError("adapt.adaptation 'lin' (a linear input network) transforms filterbank features, and an SSL "
                         "encoder reads the waveform; use adapter and/or lhuc")
    check_adapt_config(cfg, k)
    return enc


def make_examples(utts: list[Utterance], store: FeatureStore, tokenizer: Tokenizer,
                  model: SSLModel) -> tuple[list[Example], list[str]]:
    """(examples, ids left out): as asr.make_examples, with the encoder's frame rate (frames in 10 ms units for
    batching; CTC feasibility on the encoder's output frames)."""
    examples, infeasible = [], []
    for u in utts:
        ids = tokenizer.encode(tokenizer.to_units(u.text, u.language), where=f"utterance {u.id!r}")
        rows = store.num_frames(u.id)
        if ctc_feasible(int(model.output_lengths(torch.tensor(rows))), ids):
            examples.append(Example(u.id, model.frames_10ms(rows), ids))
        else:
            infeasible.append(u.id)
    if infeasible:
        log.warning("%d utterance(s) are too short for their transcripts (CTC needs one encoder frame per unit) "
                    "and are left out: %s%s", len(infeasible), ", ".join(infeasible[:5]),
                    " ..." if len(infeasible) > 5 else "")
    return examples, infeasible


def setup_ssl(spec: RunSpec, data: dict, out_dir: Path, key: str) -> Setup:
    """The SSL encoder at spec.source with a new CTC head for spec.languages, prepared for the training loop: its
    examples, dev evaluator, parameter groups and freezing plan (see the module docstring).

    Raises:
        see check_source; ValueError on a unit missing from the target's unit set.
    """
    cfg, scfg = spec.adapt, spec.ssl
    enc = check_source(spec.source, cfg, scfg)
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    tokenizer, _ = fixed_tokenizer(out_dir, key, lambda: (build_tokenizer(train, spec.units), {"kept_head": False}))
    k = enc.n_layers if scfg.layers is None else scfg.layers
    cached = uses_cache(cfg, scfg)
    enc_digest = file_digest(spec.source)
    progress = spec.train.progress
    threads = torch.get_num_threads()
    if spec.train.threads:  # extraction shares the machine as training will (parallel matrix-style runs)
        torch.set_num_threads(spec.train.threads)
    if cached:
        device = pick_device(spec.train.device)
        stores = [encoder_store(utts, spec.corpus, enc, enc_digest, k, enc.normalize_waveform, enc.d_model, device,
                                progress, f"{spec.language} {what} encoder outputs")
                  for utts, what in ((train, "train"), (dev, "dev"))]
    else:
        stores = [waveform_store(utts, spec.corpus, progress, f"{spec.language} {what} waveforms")
                  for utts, what in ((train, "train"), (dev, "dev"))]
    torch.set_num_threads(threads)
    # the head's initialization is part of the run's configuration; the same seed gives a cached and an uncached
    # run the same head (it is drawn after the encoder is built)
    model = model_from_file(enc, k, tokenizer.vocab_size, scfg, cached=cached, seed=spec.train.seed)
    store, dev_store = stores
    names = [n for n, _ in model.layer_groups()]
    new = [names[-1]]  # the head is always new: SSL encoders have no output layer for the target's units
    if cfg.transfer_layers is not None and cfg.transfer_layers < k:
        model.reinit_layers_from(cfg.transfer_layers, seed=spec.train.seed)
        new = new_groups_after_reinit(names, cfg.transfer_layers)
    if cfg.adaptation:
        add_adaptation(model, cfg.adaptation, cfg.bottleneck)
    plan = plan_for(cfg.mode, names, spec.train.epochs, cfg.stage_epochs, new)
    if cfg.lr_decay and cfg.lr_decay ** (len(names) - 1) > 1e3 and len(plan[-1][0]) > 1:
        # ULMFiT's 2.6 suits a few layer groups; over a 24-layer encoder it leaves the bottom ones untrained
        log.warning("adapt.lr_decay=%g over %d layer groups gives the frontend 1/%.3g of the head's learning rate; "
                    "for a deep encoder use a decay near 1 (e.g. adapt.lr_decay=1.1) or null", cfg.lr_decay,
                    len(names), cfg.lr_decay ** (len(names) - 1))
    extra = {ADAPTATION: adaptation_parameters(model)} if cfg.adaptation else None
    groups = param_groups(model, spec.train.lr, cfg.lr_decay, extra=extra)
    by_name = named_groups(model)
    frozen_extractor = model.extractor_parameters() if scfg.freeze_extractor else []

    def on_epoch_start(epoch: int) -> None:
        apply_trainable(model, by_name, trainable_at(plan, epoch))
        for p in frozen_extractor:  # in every stage of every plan: AdamW then never touches it
            p.requires_grad_(False)
            p.grad = None

    source = source_record(spec.source, enc, enc_digest)
    info = {"builder": enc.builder, "config": enc.config, "normalize_waveform": enc.normalize_waveform,
            "layers": k, "cached": cached, "frame_samples": model.frame_samples, "source": source,
            "settings": to_dict(scfg)}
    meta = {"toolkit": "xlingual", "version": __version__, "model": "ssl", "task": "asr", "ssl": info,
            "ssl_dims": asdict(model.dims), "tokenizer": tokenizer.to_dict(), "adaptation": adaptation_spec(model),
            "language": spec.language, "languages": list(spec.languages), "train_hours": spec.hours,
            "source": source, "adapt": to_dict(cfg), "kept_head": False}
    write_json(out_dir / "adapt.json", {"source": source, "language": spec.language, "train_hours": spec.hours,
                                        "kept_head": False, "new_groups": new, "cached": cached, "layers": k,
                                        "plan": [[sorted(g), n] for g, n in plan], "adapt": to_dict(cfg),
                                        "ssl": to_dict(scfg)})
    examples, skipped = make_examples(train, store, tokenizer, model)
    return Setup(model, examples, store, make_evaluator(dev_store, dev, tokenizer), ("dev_cer", "min"), meta,
                 FeatureConfig(specaugment=False),  # SpecAugment masks filterbanks; the encoder masks time itself
                 param_groups=groups, on_epoch_start=on_epoch_start, skipped=len(skipped))


def source_record(path: str | Path, enc: EncoderFile, enc_digest: str | None = None) -> dict:
    """What results.json and the checkpoint say about an SSL source."""
    return {"checkpoint": str(path), "digest": enc_digest or file_digest(path), "name": enc.name,
            "builder": enc.builder, "layers": enc.n_layers, "language": None, "train_hours": None}


def source_info(spec: RunSpec) -> dict:
    """results.json's "source" of an ssl run (runs.execute)."""
    enc = read_encoder(spec.source)
    r = source_record(spec.source, enc)
    return {"checkpoint": r["checkpoint"], "digest": r["digest"], "language": None, "hours": None, "name": r["name"],
            "builder": r["builder"], "layers": r["layers"]}


# ----------------------------------------------------------------------------------------------------------------
# An adapted model: loading, decoding


def load_ssl_model(path: str | Path) -> tuple[SSLModel, Tokenizer, dict]:
    """(model, tokenizer, meta) of a best.pt/last.pt an ssl run wrote; the encoder is rebuilt from the builder
    config the checkpoint records (a cached run's checkpoint holds the head alone).

    Raises:
        CheckpointError: not an adapted SSL model, or weights that do not fit what it records.
    """
    ck = load_checkpoint(path)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if not isinstance(meta, dict) or meta.get("model") != "ssl" or "ssl" not in meta:
        raise CheckpointError(f"{path} is not an adapted SSL model (a best.pt of a run of kind 'ssl')")
    info = meta["ssl"]
    tok = Tokenizer.from_dict(meta["tokenizer"])
    enc = EncoderFile(Path(info["source"]["checkpoint"]), info["builder"], info["config"],
                      bool(info["normalize_waveform"]), info["source"].get("name", ""), {})
    try:
        cfg = from_dict(SSLConfig, info.get("settings", {}), f"{path}: ssl settings")
        model = model_from_file(enc, info["layers"], tok.vocab_size, cfg, load_weights=False, cached=info["cached"])
        spec = meta.get("adaptation") or {}
        if spec.get("kinds"):
            add_adaptation(model, spec["kinds"], spec.get("bottleneck", 32))
        model.load_state_dict(ck["model"])
    except Exception as e:
        raise CheckpointError(f"{path}: its weights do not fit the SSL model it records: {str(e)[:300]}") from None
    return model, tok, meta


def model_store(model: SSLModel, meta: dict, utts: list[Utterance], corpus, device: torch.device | None = None,
                progress: bool = False) -> FeatureStore:
    """The store an adapted model reads: waveform rows, or (cached) its encoder's outputs, computed from the source
    file it records only for utterances not cached yet.

    Raises:
        CheckpointError: a cached model whose encoder outputs are missing and whose source file is gone or changed.
    """
    info = meta["ssl"]
    if not info["cached"]:
        return waveform_store(utts, corpus, progress)
    src = info["source"]

    def read() -> EncoderFile:
        path = Path(src["checkpoint"])
        if not path.is_file() or file_digest(path) != src["digest"]:
            raise CheckpointError(f"this model is a head over the outputs of the SSL encoder {path} (digest "
                                  f"{src['digest']}), which is {'gone' if not path.is_file() else 'changed'} and "
                                  f"not cached for every utterance to decode; put that encoder file back")
        return read_encoder(path)

    return encoder_store(utts, corpus, read, src["digest"], info["layers"], info["normalize_waveform"],
                         model.dims.d_model, device or pick_device("auto"), progress)


def evaluate_ssl(checkpoint: str | Path, utts: list[Utterance], out_dir: str | Path, corpus,
                 decode: DecodeConfig) -> dict:
    """Decode and score `utts` with an adapted SSL model: {wer, cer, n_utts, len_ratio}; files in out_dir."""
    model, tok, meta = load_ssl_model(checkpoint)
    store = model_store(model, meta, utts, corpus)
    summary = decode_and_score(model, tok, store, utts, out_dir, decode)
    return {k: summary[k] for k in ("wer", "cer", "n_utts", "len_ratio")}
