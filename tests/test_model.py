import pytest
import torch

from xlingual.config import ModelConfig
from xlingual.model import PRESETS, AcousticModel, dims_from_config, dims_from_dict, dims_to_dict, subsampled_lengths


@pytest.mark.parametrize("t, expected", [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (400, 100), (401, 101)])
def test_subsampled_lengths(t, expected):
    assert int(subsampled_lengths(torch.tensor([t]))[0]) == expected


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_shapes(preset):
    m = AcousticModel(dims_from_config(ModelConfig(preset=preset), 80, 30)).eval()
    x, lens = torch.randn(2, 57, 80), torch.tensor([57, 20])
    y, out = m(x, lens)
    assert y.shape == (2, 15, 30) and out.tolist() == [15, 5]


def test_padding_does_not_change_outputs():
    m = AcousticModel(dims_from_config(ModelConfig(), 80, 12)).eval()
    x = torch.randn(1, 400, 80)
    y1, _ = m(x, torch.tensor([400]))
    padded = torch.cat([x, torch.randn(1, 100, 80)], 1)
    y2, _ = m(padded, torch.tensor([400]))
    # attention ignores padded frames; convolutions see them only within their receptive field of the edge
    assert torch.allclose(y1[0, :80], y2[0, :80], atol=1e-2)


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
