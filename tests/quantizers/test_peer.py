"""vector-quantize-pytorch inside vqlab's model (``vq.impl=vector_quantize_pytorch``)."""

import sys

import pytest
import torch

from vqlab.config import ConfigError, ModelConfig, VQConfig
from vqlab.models.registry import build_model
from vqlab.quantizers.peer import MissingDependency, PeerQuantizer, load_peer
from vqlab.quantizers.vq import VectorQuantizer, fit_codes

D, K = 4, 8


def pair(**kwargs) -> tuple[VectorQuantizer, PeerQuantizer, torch.Tensor]:
    """vqlab's layer and the peer's, initialised to the same codes from the same data."""
    pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    x = torch.randn(200, D)
    ours, peer = VectorQuantizer(D, K, **kwargs), PeerQuantizer(D, K, **kwargs)
    ours.init_from_data(x, method="kmeans", iters=5, seed=0)
    peer.init_from_data(x, method="kmeans", iters=5, seed=0)
    return ours, peer, x


def test_same_codes_same_forward_in_eval():
    ours, peer, x = pair(beta=0.25)
    torch.testing.assert_close(peer.codebook, ours.codebook, rtol=0, atol=0)
    ours.eval(), peer.eval()
    z = torch.randn(64, D)
    a, b = ours(z), peer.forward_peer(z)  # the peer's own eval, not vqlab's search
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.quantized, a.quantized)
    assert b.loss.item() == 0.0  # the peer computes its losses only in training mode


def test_one_ema_step_moves_both_codebooks_alike():
    """Same EMA rule (decay, Laplace smoothing) on the same batch: the same new codebook."""
    ours, peer, _ = pair(decay=0.9, eps=1e-5)
    ours.train(), peer.train()
    z = torch.randn(128, D)
    a, b = ours(z), peer(z)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.loss, a.loss)  # beta * mse(z, sg(z_q)) in both
    torch.testing.assert_close(peer.codebook, ours.codebook, rtol=1e-5, atol=1e-6)


def test_init_from_data_writes_vqlab_codes_and_none_keeps_the_peers():
    pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    x = torch.randn(300, D)
    peer = PeerQuantizer(D, K)
    own = peer.codebook.clone()
    peer.init_from_data(x, method="none")
    assert bool(peer.initialized) and torch.equal(peer.codebook, own)
    peer.init_from_data(x, method="kmeans++", seed=2)
    torch.testing.assert_close(peer.codebook, fit_codes(x, K, "kmeans++", seed=2))
    with pytest.raises(ValueError, match="unknown init method"):
        peer.init_from_data(x, method="magic")


def test_channel_first_input_and_gradient_to_the_encoder():
    pytest.importorskip("vector_quantize_pytorch")
    peer = PeerQuantizer(D, K, channel_dim=1, estimator="rotation")
    z = torch.randn(2, D, 3, 5, requires_grad=True)
    out = peer(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 5)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert peer.to_code_space(z).shape == (30, D)


def test_model_wiring_and_refusals():
    pytest.importorskip("vector_quantize_pytorch")
    vq = VQConfig(codebook_size=K, impl="vector_quantize_pytorch", code_dim=2, normalize=True)
    model = build_model(ModelConfig(latent_dim=D, hidden=8), vq, (3,))
    assert isinstance(model.quantizer, PeerQuantizer)
    assert model.quantizer.codebook.shape == (K, 2)
    with pytest.raises(ConfigError, match="no SimVQ"):
        VQConfig(impl="vector_quantize_pytorch", simvq=True, update="grad")
    with pytest.raises(ConfigError, match="vq.impl"):
        VQConfig(impl="faiss")
    with pytest.raises(ConfigError, match="vq.search=fast is vqlab's own"):
        VQConfig(impl="vector_quantize_pytorch", search="fast")


def test_missing_peer_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)  # import now fails
    with pytest.raises(MissingDependency, match="pip install 'vector-quantize-pytorch==1.32.0'"):
        load_peer()
    from vqlab.cli import main

    assert (
        main(["train", "--out", "/nonexistent/x", "--set", "vq.impl=vector_quantize_pytorch"]) == 2
    )


def test_eval_runs_in_bounded_chunks_with_the_same_codes_and_training_in_one_call():
    """Outside training the peer is called on row chunks whose (rows, K) distances fit
    ``eval_max_bytes`` (a whole K = 16384 test set in one call needs tens of GB); the chunks
    give exactly the one-call codes. In training it stays one call, so its EMA sees the batch."""
    _, peer, _ = pair()
    peer.eval()
    z = torch.randn(1000, D)
    whole = peer(z)
    calls = []
    hook = peer.layer.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    peer.eval_max_bytes = 4 * K * 300  # 300 rows a chunk
    chunked = peer.forward_peer(z)
    assert calls == [300, 300, 300, 100]
    assert torch.equal(chunked.indices, whole.indices)
    torch.testing.assert_close(chunked.quantized, whole.quantized, rtol=0, atol=0)
    calls.clear()
    peer.train()
    peer(z)
    assert calls == [1000]
    hook.remove()


def test_eval_of_plain_euclidean_codes_is_vqlabs_search_with_the_peers_answer():
    """Outside training, Euclidean codes without projections are searched by vqlab's exact
    search (the peer's own eval builds dense (N, K) distances, roots and one-hots: minutes for
    a test set at K = 16384); the codes and outputs are the peer's own eval answer."""
    _, peer, _ = pair()
    peer.eval()
    z = torch.randn(500, D) * 2
    calls = []
    hook = peer.layer.register_forward_hook(lambda m, args, out: calls.append(1))
    fast = peer(z)
    assert calls == []  # the peer's forward was not needed
    own = peer.forward_peer(z)
    hook.remove()
    assert calls == [1]
    assert torch.equal(fast.indices, own.indices)
    torch.testing.assert_close(fast.quantized, own.quantized, rtol=0, atol=0)
    assert fast.loss.item() == own.loss.item() == 0.0
    cosine = PeerQuantizer(D, K, normalize=True).eval()
    assert not cosine._plain_euclidean()  # cosine codes keep the peer's own eval
