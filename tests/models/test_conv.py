import pytest
import torch
from torch import nn

from vqlab.config import ConfigError, ModelConfig, VQConfig, build_config
from vqlab.models.conv import Attention, ConvDecoder, ConvEncoder, ResBlock, norm
from vqlab.models.registry import build_model


@pytest.fixture(autouse=True)
def one_thread():
    """These convs are tiny: a second thread's start-up and barrier waits cost more than it
    saves, and many times more when other processes share the cores (the overfit test went
    from ~2 s to over a minute on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conv_config(**kw) -> ModelConfig:
    return ModelConfig(**{"kind": "conv", "width": 8, "latent_dim": 4, **kw})


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("channels", "groups"), [(3, 3), (8, 8), (16, 16), (48, 24), (64, 32)])
def test_group_norm_fits_small_and_odd_widths(channels, groups):
    assert norm(channels).num_groups == groups


def test_res_block_skip_is_a_1x1_conv_only_when_channels_change():
    assert isinstance(ResBlock(8, 8).skip, nn.Identity)
    block = ResBlock(8, 16)
    assert isinstance(block.skip, nn.Conv2d) and block.skip.kernel_size == (1, 1)
    assert block(torch.randn(2, 8, 5, 5)).shape == (2, 16, 5, 5)


@pytest.mark.parametrize(
    ("shape", "downsample"),
    [((1, 28, 28), 4), ((3, 32, 32), 4), ((3, 32, 32), 8), ((3, 64, 64), 4), ((1, 64, 64), 8)],
)
def test_shapes(shape, downsample):
    model = build_model(conv_config(downsample=downsample), VQConfig(codebook_size=16), shape)
    c, h, w = shape
    x = torch.rand(2, *shape) * 2 - 1
    out = model(x)
    grid = (h // downsample, w // downsample)
    assert out.z_e.shape == (2, 4, *grid)
    assert out.vq.indices.shape == (2, *grid)
    assert out.recon.shape == x.shape
    assert model.encoder.downsample == model.decoder.upsample == downsample


def test_refuses_sizes_it_cannot_reconstruct():
    with pytest.raises(ValueError, match=r"28x28 is not divisible by model.downsample=8"):
        build_model(conv_config(downsample=8), VQConfig(), (1, 28, 28))
    with pytest.raises(ValueError, match="not divisible"):
        build_model(conv_config(), VQConfig(), (3, 30, 30))
    with pytest.raises(ValueError, match="needs images"):
        build_model(conv_config(), VQConfig(), (6,))


def test_config_keys_and_validation():
    assert conv_config().channel_multipliers() == (1, 2, 2)
    assert conv_config(downsample=8).channel_multipliers() == (1, 2, 2, 2)
    assert conv_config(downsample=8, channel_mult="1,1,2,4").channel_multipliers() == (1, 1, 2, 4)
    # '-' separators, so a comma-separated --grid can sweep channel_mult
    assert conv_config(channel_mult="1-2-4").channel_multipliers() == (1, 2, 4)
    cfg = build_config(
        overrides=["model.kind=conv", "model.channel_mult=1,2,4,4"]
        + ["model.downsample=8", "model.res_blocks=2", "model.attention=true"]
    )
    assert cfg.model.channel_multipliers() == (1, 2, 4, 4) and cfg.model.attention
    with pytest.raises(ConfigError, match="power of two"):
        conv_config(downsample=6)
    with pytest.raises(ConfigError, match="needs 3"):
        conv_config(channel_mult="1,2")
    with pytest.raises(ConfigError, match="positive integers"):
        conv_config(channel_mult="1,x,2")
    with pytest.raises(ConfigError, match="positive integers"):
        conv_config(channel_mult="1,0,2")
    with pytest.raises(ConfigError, match="res_blocks"):
        conv_config(res_blocks=0)


def test_quantize_and_bypass():
    torch.manual_seed(0)
    model = build_model(conv_config(), VQConfig(codebook_size=16), (3, 32, 32))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    plain = model(x, quantize=False)
    assert plain.vq is None
    assert torch.equal(plain.recon, model.decode(model.encode(x)))
    model.eval()
    q = model(x, quantize=True)
    assert q.vq.indices.shape == (3, 8, 8)
    assert torch.equal(q.recon, model.decode(model.quantizer.lookup(q.vq.indices)))


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_gradient_reaches_encoder(update):
    torch.manual_seed(0)
    model = build_model(conv_config(), VQConfig(codebook_size=16, update=update), (3, 32, 32))
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    ((out.recon - 0.5) ** 2).mean().add(out.vq.loss).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    codebook = model.quantizer.codebook
    if update == "grad":
        assert codebook.grad is not None and codebook.grad.abs().sum() > 0
    else:
        assert not codebook.requires_grad and codebook.grad is None


def test_attention_option_and_capacity_grows_with_width():
    shape = (3, 32, 32)
    plain = build_model(conv_config(width=16), VQConfig(), shape)
    attn = build_model(conv_config(width=16, attention=True), VQConfig(), shape)
    assert not any(isinstance(m, Attention) for m in plain.modules())
    assert any(isinstance(m, Attention) for m in attn.modules())
    assert n_params(attn) > n_params(plain)
    x = torch.rand(2, *shape)
    assert attn(x).recon.shape == x.shape
    sizes = [n_params(build_model(conv_config(width=w), VQConfig(), shape)) for w in (8, 16, 32)]
    assert sizes[0] < sizes[1] < sizes[2]
    deeper = build_model(conv_config(width=16, res_blocks=2), VQConfig(), shape)
    assert n_params(deeper) > n_params(plain)


def test_encoder_decoder_refuse_bad_sizes():
    with pytest.raises(ValueError, match="channel_mult"):
        ConvEncoder(3, 8, (), 4)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        ConvDecoder(4, 0, (1, 2), 3)


def test_overfits_a_few_images():
    torch.manual_seed(0)
    enc, dec = ConvEncoder(3, 8, (1, 2), 8), ConvDecoder(8, 8, (1, 2), 3)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    losses = []
    for _ in range(100):
        loss = (dec(enc(x)) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5
