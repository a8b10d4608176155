"""VQGAN-style losses: perceptual distance, PatchGAN discriminator and adversarial losses."""

from vqlab.losses.discriminator import NORMS, PatchDiscriminator
from vqlab.losses.gan import (
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
)
from vqlab.losses.perceptual import LPIPSLoss, PerceptualLoss, load_lpips, unit_normalize

__all__ = [
    "NORMS",
    "LPIPSLoss",
    "PatchDiscriminator",
    "PerceptualLoss",
    "adaptive_weight",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_lpips",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
    "r1_penalty",
    "unit_normalize",
]
