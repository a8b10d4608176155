"""PatchDiscriminator: the pix2pix/taming PatchGAN that scores overlapping image patches.

Layout for ``layers = L`` (every conv 4x4 with padding 1, channels capped at 8 * width):

    conv(in -> width, stride 2), LeakyReLU(0.2)
    L - 1 times: conv(stride 2), norm, LeakyReLU(0.2)      channels width * 2^i
    conv(stride 1), norm, LeakyReLU(0.2)
    conv(-> 1, stride 1)                                   per-patch logits

A stride-2 4x4 conv with padding 1 halves an even side; a stride-1 one takes one off. So an
(H, W) input gives an (H / 2^L - 2, W / 2^L - 2) grid of logits: with the default L = 3, a
32x32 CIFAR image gives 2x2 and a 64x64 image 6x6 (256 gives taming's 30x30). Each logit sees
a :meth:`PatchDiscriminator.receptive_field` of 70 px at L = 3 (34 at L = 2, 16 at L = 1):
at 32x32 every logit sees the whole image, so for a true patch critic on CIFAR use L = 1 or 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("batch", "group", "none")
_KERNEL, _PAD = 4, 1


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Up to 32 groups (GroupNorm's usual count) but always a divisor of the width, so small
        # test-sized widths work too.
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _init_weights(m: nn.Module) -> None:
    """taming's init: conv weights N(0, 0.02); norm scales N(1, 0.02), shifts 0.

    Conv biases (only the first and last convs, or all with ``norm="none"``) start at 0, where
    taming keeps PyTorch's default uniform init: a 0 start leaves the logits centred.
    """
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PatchDiscriminator(nn.Module):
    """(B, in_channels, H, W) images in [-1, 1] -> (B, 1, H / 2^layers - 2, W / 2^layers - 2)
    per-patch logits (real > 0 > fake under the losses of :mod:`vqlab.losses.gan`).

    Args:
        in_channels: image channels.
        width: channels of the first conv; the i-th stride-2 block has width * min(2^i, 8).
        layers: the number of stride-2 convs, L; the input side must be at least 3 * 2^L for
            a 1x1 grid (:meth:`output_size`).
        norm: ``"batch"`` (taming's default), ``"group"`` or ``"none"``. BatchNorm makes each
            logit depend on the rest of the batch: with :func:`vqlab.losses.gan.r1_penalty`, or
            under DDP without SyncBatchNorm, prefer ``"group"`` or ``"none"``.
    """

    def __init__(
        self, in_channels: int = 3, width: int = 64, layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("width", width), ("layers", layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        _norm(norm, 1)  # rejects an unknown norm before anything is built
        self.layers = layers
        # A conv followed by a norm needs no bias: the norm's shift takes its place.
        bias = norm == "none"
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, width, _KERNEL, 2, _PAD),
            nn.LeakyReLU(0.2),
        ]
        c_in = width
        for i in range(1, layers + 1):
            c_out = width * min(2**i, 8)
            stride = 2 if i < layers else 1  # the last block keeps the resolution
            blocks += [
                nn.Conv2d(c_in, c_out, _KERNEL, stride, _PAD, bias=bias),
                _norm(norm, c_out),
                nn.LeakyReLU(0.2),
            ]
            c_in = c_out
        blocks.append(nn.Conv2d(c_in, 1, _KERNEL, 1, _PAD))
        self.net = nn.Sequential(*blocks)
        self.apply(_init_weights)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) logit grid for an (height, width) input; a side < 1 means too small."""

        def side(n: int) -> int:
            for _ in range(self.layers):
                n = (n + 2 * _PAD - _KERNEL) // 2 + 1
            return n - 2  # two stride-1 convs, one pixel each

        return side(height), side(width)

    @property
    def receptive_field(self) -> int:
        """The side in input pixels that one logit sees (70 for layers=3, as in pix2pix)."""
        r = 1 + 2 * (_KERNEL - 1)  # the two stride-1 convs
        for _ in range(self.layers):
            r = (r - 1) * 2 + _KERNEL
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"discriminator expects (B, C, H, W) images, got {tuple(x.shape)}")
        h, w = self.output_size(x.shape[2], x.shape[3])
        if h < 1 or w < 1:
            need = 3 * 2**self.layers
            raise ValueError(
                f"a {self.layers}-layer discriminator needs images of side >= {need}, "
                f"got {tuple(x.shape[2:])}; use fewer layers"
            )
        return self.net(x)
