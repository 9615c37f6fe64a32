"""dropout.py: cheap CPU dropout masks with torch's dropout semantics (rate, scaling, seeding, gradient)."""

import numpy as np
import pytest
import torch
from torch import nn

from xlingual.config import ModelConfig
from xlingual.dropout import FastDropout, dropout, keep_mask, use_fast_dropout
from xlingual.model import AcousticModel, dims_from_config


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5])
def test_drop_rate_and_expectation(p):
    torch.manual_seed(0)
    y = dropout(torch.ones(1_000_000), p, True)
    dropped = float((y == 0).float().mean())
    sigma = (p * (1 - p) / 1_000_000) ** 0.5
    assert abs(dropped - p) < 5 * sigma + 1 / 65536  # p to the mask's 16-bit resolution
    assert abs(float(y.mean()) - 1.0) < 0.01  # kept values scaled up: the expectation is the input's
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-3)


def test_masks_follow_torchs_seed():
    x = torch.randn(64, 33)
    torch.manual_seed(7)
    a = dropout(x, 0.2, True)
    torch.manual_seed(7)
    b = dropout(x, 0.2, True)
    c = dropout(x, 0.2, True)  # the generator moved on: a new mask
    assert torch.equal(a, b) and not torch.equal(b, c)


@pytest.mark.parametrize("p, training", [(0.0, True), (0.3, False)])
def test_identity_when_off(p, training):
    x = torch.randn(5, 7)
    assert dropout(x, p, training) is x


def test_p_one_drops_everything():
    assert torch.count_nonzero(dropout(torch.ones(100), 1.0, True)) == 0


def test_gradient_is_the_mask():
    x = torch.full((4, 50, 8), 2.0, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.25, True)
    y.sum().backward()
    assert torch.allclose(x.grad, y.detach() / 2.0)  # d(x * m)/dx = m


@pytest.mark.parametrize("shape, p, dtype", [((400, 256), 0.1, torch.float32), ((3, 5, 7), 0.3, torch.float32),
                                           ((1,), 0.1, torch.float32), ((2, 4, 9, 9), 0.1, torch.float64),
                                           ((0, 4), 0.1, torch.float32)])
def test_keep_mask_is_numpys_16_bit_integers(shape, p, dtype):
    # the mask keeps the numbers of its first version (Generator.integers): runs before and after the faster
    # drawing train identically
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, ()))
    bits = np.random.Generator(np.random.PCG64(seed)).integers(0, 1 << 16, size=shape, dtype=np.uint16)
    threshold = round(p * 65536)
    want = torch.from_numpy(bits >= threshold).to(dtype).mul_(65536 / (65536 - threshold))
    torch.manual_seed(11)
    got = keep_mask(shape, p, dtype)
    assert got.dtype == dtype and torch.equal(got, want)


def test_keep_mask_shape_and_dtype():
    m = keep_mask((3, 4, 5), 0.1, torch.float64)
    assert m.shape == (3, 4, 5) and m.dtype == torch.float64


def test_module_and_replacement():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.4), nn.ReLU()))
    use_fast_dropout(net)
    kinds = [(type(m).__name__, getattr(m, "p", None)) for m in net.modules() if "Dropout" in type(m).__name__]
    assert kinds == [("FastDropout", 0.2), ("FastDropout", 0.4)]
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.5)


def test_models_use_it_and_keep_their_checkpoint_layout():
    """Every dropout of the acoustic model is cheap; the state dict is what it was with torch's (no buffers)."""
    model = AcousticModel(dims_from_config(ModelConfig(preset="tiny", n_layers=1), 80, 20))
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == 6  # 2 FFNs x 2, convolution, attention out
    keys = set(model.state_dict())
    for parent in model.modules():  # back to torch's dropout
        for name, child in list(parent.named_children()):
            if isinstance(child, FastDropout):
                setattr(parent, name, nn.Dropout(child.p))
    assert set(model.state_dict()) == keys
