"""The file of a self-supervised speech encoder (wav2vec 2.0, HuBERT, XLS-R, WavLM) used as a transfer source.

An SSL source file holds a torchaudio encoder's state dict and the builder call that rebuilds it (`save_encoder`;
`xlingual ssl-save` writes one from a torchaudio bundle such as WAV2VEC2_XLSR_300M, or from a Hugging Face checkpoint
through torchaudio's importer). `read_encoder` reads one and checks that its weights fit its builder config; the model
over it is ssl_model.py's, a run of kind "ssl" over it ssl.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError

FORMAT = "xlingual-ssl-encoder"  # the "format" field of an SSL source file (save_encoder)
BUILDERS = ("wav2vec2_model", "wavlm_model")  # torchaudio.models builders: wav2vec 2.0, HuBERT and XLS-R share the
#   first (hubert_base & co. call it with HuBERT's settings); WavLM adds relative position buckets
SAVE_HINT = ("save the encoder with its own builder config: `xlingual ssl-save <torchaudio bundle or Hugging Face "
             "model> <out.pt>` (README, 'Self-supervised encoders'), or "
             "xlingual.ssl_encoder.save_encoder(model, config, path)")


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
