"""GAN losses, adaptive weight and R1 against hand-computed values."""

import math

import pytest
import torch

from vqlab.losses import (
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
)

# Distinct real and fake terms, so that a swapped sign or a swapped argument changes the value.
REAL = torch.tensor([[2.0, 0.5, -1.0]])  # relu(1 - real) = [0, 0.5, 2], mean 5/6
FAKE = torch.tensor([[-3.0, 0.0, 1.0]])  # relu(1 + fake) = [0, 1, 2], mean 1


def test_hinge_d_loss_is_the_halved_sum_of_its_terms():
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (5 / 6 + 1))
    # all logits 0 (chance): each term is 1, so the halved loss is 1, not 2
    zeros = torch.zeros(4, 1, 2, 2)
    assert hinge_d_loss(zeros, zeros).item() == pytest.approx(1.0)
    # confident and right: beyond the margins there is nothing left to push
    assert hinge_d_loss(torch.full((3,), 1.5), torch.full((3,), -1.5)).item() == 0.0


def test_nonsaturating_d_loss_hand_value():
    real = torch.tensor([0.0, math.log(3)])  # softplus(-0) = log 2, softplus(-log 3) = log 4/3
    fake = torch.tensor([math.log(3)])  # softplus(log 3) = log 4
    expected = 0.5 * ((math.log(2) + math.log(4 / 3)) / 2 + math.log(4))
    assert nonsaturating_d_loss(real, fake).item() == pytest.approx(expected)


def test_g_losses_hand_values():
    fake = torch.tensor([[1.0, -3.0, 0.5]])
    assert hinge_g_loss(fake).item() == pytest.approx(0.5)  # -mean = -(-1.5 / 3)
    fake = torch.tensor([0.0, math.log(3)])
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert nonsaturating_g_loss(fake).item() == pytest.approx(expected)


def test_softplus_forms_stay_finite_for_huge_logits():
    big = torch.tensor([1e4])
    assert nonsaturating_g_loss(big).item() == 0.0
    assert nonsaturating_d_loss(-big, big).item() == pytest.approx(1e4)


def _two_by_two(v_scale: float = 1.0):
    """Last layer W = I (2x2), input u = (1, 2), so y = W u = (1, 2).

    rec = ||y||² -> dW = 2 y uᵀ = [[2, 4], [4, 8]], norm 10.
    g = -(v · y), v = s (3, 4) -> dW = -v uᵀ = -s [[3, 6], [4, 8]], norm s 5√5.
    """
    w = torch.nn.Parameter(torch.eye(2))
    u = torch.tensor([1.0, 2.0])
    y = w @ u
    rec = y.square().sum()
    g = -(v_scale * torch.tensor([3.0, 4.0]) * y).sum()
    return w, rec, g


def test_adaptive_weight_hand_value():
    w, rec, g = _two_by_two()
    weight = adaptive_weight(rec, g, w)
    assert weight.item() == pytest.approx(10 / (5 * math.sqrt(5) + 1e-4), rel=1e-6)
    assert weight.ndim == 0 and not weight.requires_grad  # a detached scalar
    w, rec, g = _two_by_two()
    assert adaptive_weight(rec, g, w, eps=1.0).item() == pytest.approx(10 / (5 * math.sqrt(5) + 1))


def test_adaptive_weight_leaves_grads_and_graphs_for_the_caller():
    w, rec, g = _two_by_two()
    adaptive_weight(rec, g, w)
    assert w.grad is None  # autograd.grad, not backward: nothing accumulated
    (rec + g).backward()  # the graphs were retained
    expected = torch.tensor([[2.0, 4.0], [4.0, 8.0]]) - torch.tensor([[3.0, 6.0], [4.0, 8.0]])
    torch.testing.assert_close(w.grad, expected)


def test_adaptive_weight_clamps():
    w, rec, g = _two_by_two()
    assert adaptive_weight(rec, g, w, max_weight=0.5).item() == 0.5
    # a vanishing GAN gradient: 10 / (1.1e-5 + 1e-4) ~ 9e4 > 1e4
    w, rec, g = _two_by_two(v_scale=1e-6)
    assert adaptive_weight(rec, g, w).item() == 1e4


def test_adaptive_weight_rejects_a_loss_that_misses_the_layer():
    w, rec, _ = _two_by_two()
    other = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="g_loss does not depend on last_layer"):
        adaptive_weight(rec, other.sum(), w)
    with pytest.raises(ValueError, match="rec_loss has no graph"):
        adaptive_weight(rec.detach(), other.sum(), w)


def test_r1_of_a_linear_discriminator_is_the_squared_norm_of_its_weight():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, 4))
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum((1, 2, 3)).reshape(5, 1, 1, 1)  # D(x) = w · x, ∇_x D = w
    penalty = r1_penalty(logits, x)
    torch.testing.assert_close(penalty, w.detach().square().sum())  # a batch mean, not a sum
    penalty.backward()  # create_graph=True: the penalty reaches D's weight, d||w||²/dw = 2w
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_r1_is_a_mean_over_images_of_per_image_gradients():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).reshape(2, 1, 1, 2).requires_grad_(True)
    # two patches per image, D summed over them: ∇_x Σ_p x_p² / 2 = x
    logits = (x.square() / 2).reshape(2, 1, 1, 2)
    # ||x_0||² = 5, ||x_1||² = 9 -> mean 7
    assert r1_penalty(logits, x).item() == pytest.approx(7.0)


def test_r1_needs_images_that_require_grad():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(x.sum((1, 2, 3)), x)
