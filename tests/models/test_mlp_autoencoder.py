import pytest
import torch

from vqlab.config import ModelConfig, VQConfig
from vqlab.models.mlp import mlp
from vqlab.models.registry import build_model


def test_mlp_shapes_and_capacity_knob():
    net = mlp(8, hidden=3, depth=2, out_dim=5)
    assert net(torch.randn(7, 8)).shape == (7, 5)
    widths = [m.out_features for m in net if isinstance(m, torch.nn.Linear)]
    assert widths == [3, 3, 5]
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        mlp(8, 0, 2, 5)


def test_autoencoder_bypass_and_quantize():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, latent_dim=4), VQConfig(codebook_size=8), (6,))
    x = torch.randn(10, 6)
    plain = model(x, quantize=False)
    assert plain.vq is None and plain.recon.shape == x.shape
    assert torch.equal(plain.recon, model.decode(model.encode(x)))
    q = model(x, quantize=True)
    assert q.vq is not None and q.vq.indices.shape == (10,)
    model.eval()
    q = model(x, quantize=True)
    assert torch.equal(q.recon, model.decode(model.quantizer.lookup(q.vq.indices)))


def test_mlp_refuses_image_shapes():
    with pytest.raises(ValueError, match="needs vector data"):
        build_model(ModelConfig(), VQConfig(), (3, 32, 32))
