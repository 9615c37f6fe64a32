import pytest
import torch

from xlingual.config import ModelConfig
from xlingual import model as model_module
from xlingual.model import (PRESETS, AcousticModel, _conv_module, attention, dims_from_config, dims_from_dict,
                            dims_to_dict, padding_mask, subsampled_lengths)


@pytest.mark.parametrize("t, expected", [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (400, 100), (401, 101)])
def test_subsampled_lengths(t, expected):
    assert int(subsampled_lengths(torch.tensor([t]))[0]) == expected


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_shapes(preset):
    m = AcousticModel(dims_from_config(ModelConfig(preset=preset), 80, 30)).eval()
    x, lens = torch.randn(2, 57, 80), torch.tensor([57, 20])
    y, out = m(x, lens)
    assert y.shape == (2, 15, 30) and out.tolist() == [15, 5]


def _batched_vs_alone(model, lengths, utterance=False):
    """Max difference between each utterance's outputs alone and padded in a batch with the others."""
    torch.manual_seed(1)
    feats = [torch.randn(n, model.dims.n_mels) * 3 + 1 for n in lengths]
    batch = torch.zeros(len(feats), max(lengths), model.dims.n_mels)
    for i, f in enumerate(feats):
        batch[i, : len(f)] = f
    lens = torch.tensor(lengths)
    worst = 0.0
    with torch.no_grad():
        if utterance:
            together = model.utterance(batch, lens)
            for i, f in enumerate(feats):
                alone = model.utterance(f[None], lens[i:i + 1])
                for key in ("logits", "embedding"):
                    worst = max(worst, float((alone[key][0] - together[key][i]).abs().max()))
        else:
            together, out_lens = model(batch, lens)
            for i, f in enumerate(feats):
                alone, n = model(f[None], lens[i:i + 1])
                assert int(n[0]) == int(out_lens[i])
                worst = max(worst, float((alone[0] - together[i, : int(n[0])]).abs().max()))
    return worst


# (embed_dim, mode): ASR (frame head) and LID (utterance head), in eval and in training mode without dropout
@pytest.mark.parametrize("embed_dim, mode", [(0, "eval"), (0, "train"), (16, "eval"), (16, "train")])
def test_outputs_do_not_depend_on_the_batch(embed_dim, mode):
    """An utterance's outputs are the same alone or padded beside longer ones: padded frames are zeroed before
    every convolution, masked in attention and pooling, and no norm mixes frames or utterances."""
    torch.manual_seed(0)
    m = AcousticModel(dims_from_config(ModelConfig(preset="tiny", dropout=0.0), 40, 12, embed_dim=embed_dim))
    m.set_cmvn(torch.randn(40), torch.rand(40) + 0.5)  # CMVN would turn zero padding into non-zero values
    getattr(m, mode)()
    lengths = [37, 130, 61, 9]
    assert _batched_vs_alone(m, lengths) < 1e-5
    if embed_dim:
        assert _batched_vs_alone(m, lengths, utterance=True) < 1e-5


def test_batch_dependence_would_be_detected():
    """The check above fails for a model that lets padding in (its zeroing switched off): it can fail."""
    torch.manual_seed(0)
    m = AcousticModel(dims_from_config(ModelConfig(preset="tiny", dropout=0.0), 40, 12)).eval()
    m.set_cmvn(torch.randn(40), torch.rand(40) + 0.5)
    import xlingual.model as model_module

    real = model_module.padding_mask
    try:  # a mask that marks nothing as padding: padded frames reach the convolutions and attention
        model_module.padding_mask = lambda lengths, n: torch.zeros(len(lengths), n, dtype=torch.bool)
        assert _batched_vs_alone(m, [37, 130]) > 1e-3
    finally:
        model_module.padding_mask = real


def test_override_and_dims_round_trip():
    dims = dims_from_config(ModelConfig(preset="tiny", n_layers=3, d_model=64), 40, 9)
    assert (dims.n_layers, dims.d_model, dims.n_mels, dims.vocab_size) == (3, 64, 40, 9)
    assert dims_from_dict(dims_to_dict(dims)) == dims
    with pytest.raises(ValueError, match="unknown"):
        dims_from_dict({**dims_to_dict(dims), "extra": 1})
    with pytest.raises(ValueError, match="divisible"):
        dims_from_config(ModelConfig(d_model=30, n_heads=4), 80, 9)
    with pytest.raises(ValueError, match="unknown model preset"):
        dims_from_config(ModelConfig(preset="huge"), 80, 9)


def test_replace_head_and_reinit_bottom_k():
    torch.manual_seed(0)
    m = AcousticModel(dims_from_config(ModelConfig(n_layers=3), 80, 10))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.replace_head(25)
    assert m.head.out_features == 25 and m.dims.vocab_size == 25
    m.reinit_layers_from(1, seed=3)
    after = m.state_dict()
    same = lambda prefix: all(torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))  # noqa
    assert same("encoder.conformer_layers.0.") and same("frontend.")
    assert not same("encoder.conformer_layers.1.") and not same("encoder.conformer_layers.2.")
    names = [n for n, _ in m.layer_groups()]
    assert names == ["frontend", "layer0", "layer1", "layer2", "head"]


@pytest.mark.parametrize("lengths", [[50, 50, 50], [50, 30, 1]])
def test_own_attention_computes_what_torchs_does(lengths):
    """model.attention (training on the CPU: it draws the attention weights' dropout cheaply) is
    nn.MultiheadAttention's self-attention, padded keys ignored."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(64, 4, dropout=0.1).eval()
    x, pad = torch.randn(50, 3, 64), padding_mask(torch.tensor(lengths), 50)
    ref = mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    assert torch.allclose(attention(mha, x, pad, 0.0), ref, atol=1e-5)


@pytest.mark.parametrize("mode, dropout, calls", [("train", 0.1, 2), ("train", 0.0, 0), ("eval", 0.1, 0)])
def test_own_attention_only_when_training_with_dropout(monkeypatch, mode, dropout, calls):
    seen = []

    def spy(*args):
        seen.append(1)
        return attention(*args)

    monkeypatch.setattr(model_module, "attention", spy)
    m = AcousticModel(dims_from_config(ModelConfig(preset="tiny", dropout=dropout), 80, 20))
    getattr(m, mode)()
    m(torch.randn(2, 40, 80), torch.tensor([40, 25]))
    assert len(seen) == calls  # one per layer when it runs; eval is torch's module, as checkpoints were made


@pytest.mark.parametrize("lengths", [[40, 40], [40, 17]])
def test_conv_module_computes_what_torchaudios_layers_do(lengths):
    """model._conv_module (every step in the (B, T, D) layout) is m.sequential run on (B, D, T) as torchaudio runs
    it, with padded frames zeroed before the depthwise convolution: the same outputs and, to float rounding, the
    same gradients."""
    torch.manual_seed(0)
    layer = AcousticModel(dims_from_config(ModelConfig(preset="tiny", dropout=0.0), 80, 20)).layers[0]
    m, pad = layer.conv_module, padding_mask(torch.tensor(lengths), 40)
    x = torch.randn(2, 40, 96, requires_grad=True)

    def reference(x):
        seq = m.sequential
        y = seq[1](seq[0](m.layer_norm(x).transpose(1, 2))).masked_fill(pad[:, None, :], 0.0)  # (B, D, T)
        return seq[6](seq[5](seq[4](seq[3](seq[2](y))))).transpose(1, 2)

    got, want = _conv_module(m, x, pad), reference(x)
    assert got.shape == want.shape == (2, 40, 96)
    assert torch.allclose(got, want, atol=1e-6)
    grads = [torch.autograd.grad(f(x).square().sum(), [x, *m.parameters()])
             for f in (lambda x: _conv_module(m, x, pad), reference)]
    for g, w in zip(*grads):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
