"""The shared codebook mechanics (vqlab.quantizers.codebook) on hand-sized layers."""

import pytest
import torch
from torch import nn

from vqlab.quantizers.codebook import (
    check_indices,
    ema_step,
    flatten,
    register_codebook,
    register_statistics,
    reset_statistics,
    restart_dead_codes,
    stored_codebook,
    unflatten,
)


class Layer(nn.Module):
    def __init__(self, update: str, k: int = 4, d: int = 2) -> None:
        super().__init__()
        self.codebook_size, self.update, self.decay, self.eps = k, update, 0.5, 1e-5
        register_codebook(self, torch.arange(k * d, dtype=torch.float32).reshape(k, d), update)
        register_statistics(self, k)


def test_storage_is_a_parameter_for_grad_and_buffers_for_ema():
    grad, ema = Layer("grad"), Layer("ema")
    assert isinstance(grad.codebook, nn.Parameter) and "ema_sums" not in grad.state_dict()
    assert set(ema.state_dict()) == {"codebook", "ema_sums", "ema_counts", "initialized"}
    assert not any(p is ema.codebook for p in ema.parameters())
    assert stored_codebook(ema) is ema.codebook and stored_codebook(nn.Module()) is None
    assert torch.equal(ema.ema_counts, torch.ones(4)) and not bool(ema.initialized)


def test_ema_step_by_hand():
    layer = Layer("ema", k=2, d=1)  # codes 0 and 1, counts 1 and 1, sums 0 and 1
    counts, sums = torch.tensor([2.0, 0.0]), torch.tensor([[6.0], [0.0]])
    ema_step(layer, counts, sums)
    # N = 0.5 * 1 + 0.5 * counts = (1.5, 0.5); S = 0.5 * (0, 1) + 0.5 * (6, 0) = (3, 0.5)
    assert torch.allclose(layer.ema_counts, torch.tensor([1.5, 0.5]))
    assert torch.allclose(layer.ema_sums, torch.tensor([[3.0], [0.5]]))
    # e = S / N~, with N~ ~ N for eps this small
    assert torch.allclose(layer.codebook, torch.tensor([[2.0], [1.0]]), atol=1e-4)


def test_grad_layers_only_track_usage():
    layer = Layer("grad", k=2, d=1)
    before = layer.codebook.detach().clone()
    ema_step(layer, torch.tensor([4.0, 0.0]), None)
    assert torch.equal(layer.ema_counts, torch.tensor([2.5, 0.5]))
    assert torch.equal(layer.codebook.detach(), before)


def test_reset_after_a_fit():
    layer = Layer("ema")
    layer.codebook.fill_(3.0)
    layer.ema_counts.zero_()
    reset_statistics(layer)
    assert torch.equal(layer.ema_sums, layer.codebook) and bool(layer.initialized)
    assert torch.equal(layer.ema_counts, torch.ones(4))


def test_restart_reseeds_only_dead_codes_from_batch_rows():
    torch.manual_seed(0)
    layer = Layer("ema")
    layer.ema_counts.copy_(torch.tensor([1.0, 0.01, 1.0, 0.02]))
    z = torch.full((5, 2), 7.0) + torch.arange(5.0)[:, None]  # rows 7, 8, ..., 11
    kept = layer.codebook[[0, 2]].clone()
    assert restart_dead_codes(layer, z, layer.codebook, threshold=0.1) == 2
    assert torch.equal(layer.codebook[[0, 2]], kept)
    fresh = layer.codebook[[1, 3]]
    assert all(any(torch.equal(row, r) for r in z) for row in fresh)  # rows of the batch
    assert not torch.equal(fresh[0], fresh[1])  # distinct rows
    assert torch.allclose(layer.ema_counts[[1, 3]], torch.tensor([0.1, 0.1]))
    assert torch.allclose(layer.ema_sums[[1, 3]], fresh * 0.1)
    assert restart_dead_codes(layer, z, layer.codebook, threshold=0.1) == 0


def test_flatten_round_trip_channel_first():
    z = torch.randn(2, 3, 4, 5)  # (B, D, h, w)
    flat, lead = flatten(z, 3, 1, z.device)
    assert flat.shape == (40, 3) and lead == (2, 4, 5)
    assert torch.equal(flat[0], z[0, :, 0, 0])
    assert torch.equal(unflatten(flat, lead, 3, 1), z)
    with pytest.raises(ValueError):
        flatten(torch.randn(2, 4, 4, 5), 3, 1, z.device)


def test_indices_out_of_range_are_refused():
    check_indices(torch.tensor([0, 3]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\); got values in \[0, 4\]"):
        check_indices(torch.tensor([0, 4]), 4)
    with pytest.raises(TypeError):
        check_indices(torch.tensor([0.0]), 4)
