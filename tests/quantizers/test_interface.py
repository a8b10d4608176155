import pytest
import torch

from vqlab.quantizers import QUANTIZERS
from vqlab.quantizers.fsq import FSQ
from vqlab.quantizers.interface import (
    MultiLevelOutput,
    Quantizer,
    QuantizerOutput,
)
from vqlab.quantizers.lfq import LFQ
from vqlab.quantizers.multiscale import MultiScaleQuantizer
from vqlab.quantizers.vq import VectorQuantizer

ARGS = {
    "single": {"dim": 4, "codebook_size": 8, "channel_dim": 1},
    "multiscale": {"dim": 4, "codebook_size": 8, "scales": (1, 2, 4)},
    "fsq": {"dim": 4, "levels": (3, 3, 3, 3), "channel_dim": 1},
    "lfq": {"dim": 4, "codebook_size": 16, "channel_dim": 1},
}


CLASSES = {"single": VectorQuantizer, "multiscale": MultiScaleQuantizer, "fsq": FSQ, "lfq": LFQ}


def test_every_kind_registers_itself_and_builds_its_class():
    from vqlab import load_config
    from vqlab.models.registry import build_model

    assert QUANTIZERS.names() == ("single", "multiscale", "fsq", "lfq")
    conv = ["model.kind=conv", "model.width=8", "model.latent_dim=4", "vq.codebook_size=256"]
    for kind, cls in CLASSES.items():
        cfg = load_config(None, [*conv, f"vq.kind={kind}"])
        assert type(build_model(cfg.model, cfg.vq, (3, 8, 8)).quantizer) is cls


@pytest.mark.parametrize("kind", ["single", "multiscale"])
def test_every_searching_quantizer_keeps_the_contract(kind):
    torch.manual_seed(0)
    q = CLASSES[kind](**ARGS[kind])
    assert isinstance(q, Quantizer)
    z = torch.randn(2, 4, 4, 4)  # (B, D, h, w)
    q.init_from_data(z.permute(0, 2, 3, 1).reshape(-1, 4), method="kmeans", iters=3, seed=0)
    out = q.eval()(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape and out.loss.dim() == 0 and "commitment" in out.losses
    assert torch.equal(q.lookup(out.indices), out.quantized)
    assert q.codebook.shape == (q.codebook_size, q.dim)
    # to_code_space rows pair one to one with the ids, and each id is its row's nearest code
    space = q.to_code_space(z)
    ids = out.indices.reshape(-1)
    assert space.shape == (ids.numel(), q.dim)
    assert torch.equal(torch.cdist(space, q.codebook).argmin(1), ids)


@pytest.mark.parametrize("kind", ["fsq", "lfq"])
def test_grid_quantizers_keep_the_contract_with_their_implicit_codebook(kind):
    # a fixed grid rounds in its own (bounded) space, so its ids need not be the nearest
    # implicit code in the input space; everything else holds as for the searching layers
    torch.manual_seed(0)
    q = CLASSES[kind](**ARGS[kind])
    assert isinstance(q, Quantizer)
    z = torch.randn(2, 4, 4, 4)
    q.init_from_data(z.permute(0, 2, 3, 1).reshape(-1, 4), method="kmeans", iters=3, seed=0)
    out = q.eval()(z)
    assert out.quantized.shape == z.shape and out.loss.dim() == 0
    assert torch.equal(q.lookup(out.indices), out.quantized)
    assert q.codebook.shape == (q.codebook_size, q.dim)
    ids = out.indices.reshape(-1)
    rows = out.quantized.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(q.codebook[ids], rows)  # each output is its id's code
    assert q.to_code_space(z).shape == (ids.numel(), q.dim)


def test_multi_level_members_only_on_the_multiscale_layer():
    single = CLASSES["single"](**ARGS["single"])
    multi = CLASSES["multiscale"](**ARGS["multiscale"])
    # callers tell a multi-level layer by its members (Tokenizer, the VAR prior's loader)
    members = ("scales", "split_indices", "per_scale_counts", "next_scale_input")
    assert all(hasattr(multi, m) for m in members)
    assert not any(hasattr(single, m) for m in members[1:])
    z = torch.randn(2, 4, 4, 4)
    assert isinstance(multi(z), MultiLevelOutput)
    assert not isinstance(single(z), MultiLevelOutput)


def test_an_object_missing_a_member_is_not_a_quantizer():
    class NoLookup(torch.nn.Module):
        dim, codebook_size, channel_dim = 4, 8, 1
        codebook = torch.zeros(8, 4)

        def init_from_data(self, z, *, method="kmeans", iters=20, seed=0): ...

        def to_code_space(self, z_e): ...

    assert not isinstance(NoLookup(), Quantizer)
