"""Adversarial losses for a VQGAN-style tokenizer: D and G losses, adaptive weight, R1.

Conventions (logits from :class:`vqlab.losses.discriminator.PatchDiscriminator`, any shape; a
mean runs over every element, so over batch and patches alike):

- **Sign.** The discriminator's logit is high for real images.
- **Halving.** Both D losses are the *average* of their real and fake terms,
  ``0.5 * (real_term + fake_term)``, as taming's ``hinge_d_loss``/``vanilla_d_loss``, so a
  logged ``d_loss`` reads like taming's (hinge with all logits 0: 1.0, not 2.0).
- G losses take only the fake logits and are not halved.

The step that uses them (``loss = rec + factor * adaptive_weight(...) * disc_weight * g_loss``
for the generator; ``factor * d_loss (+ r1)`` for D) is the training task's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - real) + mean relu(1 + fake)) -> () (halved, as taming)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def nonsaturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean softplus(-real) + mean softplus(fake)) -> () (halved, as taming's vanilla).

    softplus(-l) = -log sigmoid(l): binary cross-entropy with real = 1, fake = 0, in the form
    that stays finite for large logits.
    """
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """-mean(fake) -> (): the generator raises the fake logits without bound (taming's form)."""
    return -logits_fake.mean()


def nonsaturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """mean softplus(-fake) = -mean log sigmoid(fake) -> (): the non-saturating G loss."""
    return F.softplus(-logits_fake).mean()


def _grad(loss: torch.Tensor, wrt: torch.Tensor, name: str) -> torch.Tensor:
    if not loss.requires_grad:
        raise ValueError(f"{name} has no graph (computed under no_grad, or detached)")
    (g,) = torch.autograd.grad(loss, wrt, retain_graph=True, allow_unused=True)
    if g is None:
        raise ValueError(f"{name} does not depend on last_layer")
    return g


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """taming's adaptive GAN weight ||∇_W rec_loss|| / (||∇_W g_loss|| + eps), clamped, detached.

    Args:
        rec_loss: () the reconstruction loss (taming passes its whole "nll": pixel + perceptual).
        g_loss: () the generator's adversarial loss.
        last_layer: the weight W of the decoder's last layer (a Parameter both losses reach).
        max_weight: the upper clamp (the lower one is 0).
        eps: keeps the ratio finite when the GAN gradient vanishes.

    Returns a () tensor without grad: the weight balances the two gradients at the decoder's
    output, so the GAN term can neither swamp reconstruction nor vanish. The graphs are retained
    for the caller's backward.
    """
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise ValueError("last_layer must be a tensor that requires grad (the decoder's weight)")
    rec_norm = torch.linalg.vector_norm(_grad(rec_loss, last_layer, "rec_loss"))
    g_norm = torch.linalg.vector_norm(_grad(g_loss, last_layer, "g_loss"))
    return (rec_norm / (g_norm + eps)).clamp(0.0, max_weight).detach()


def r1_penalty(logits_real: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty: mean over the batch of ||∇_x Σ_patches D(x)||² -> ().

    Args:
        logits_real: (B, ...) the discriminator's logits on ``real_images``.
        real_images: (B, C, H, W), with ``requires_grad_(True)`` set *before* D ran on them.

    A patch discriminator's logits of one image are summed before the gradient (the image's
    total score); with ``norm="batch"`` an image's logits also depend on the others in the
    batch, so use group or no norm with R1. The graph is kept (``create_graph=True``), so the
    penalty back-propagates to D's parameters; the weight (gamma / 2 in Mescheder et al.) is the
    caller's.
    """
    if not real_images.requires_grad:
        raise ValueError(
            "call real_images.requires_grad_(True) before the discriminator runs on them"
        )
    if not logits_real.requires_grad:
        raise ValueError("logits_real has no graph (computed under no_grad, or detached)")
    (g,) = torch.autograd.grad(logits_real.sum(), real_images, create_graph=True)
    return g.square().flatten(1).sum(1).mean()
