"""Convolutional encoder and decoder for images (a small taming-VQGAN-style VQ-VAE).

Images are ``(B, C, H, W)`` scaled to [-1, 1]. The encoder maps them to ``z_e`` of shape
``(B, D, H/f, W/f)`` (D = ``latent_dim``, f = ``downsample``); the decoder maps a latent grid of
that shape back to ``(B, C, H, W)``. The decoder output is unbounded (no tanh): the loss is a
plain MSE against [-1, 1] targets, and a tanh would only flatten its gradient near the ends.

Layout, with ``channels[i] = width * channel_mult[i]`` at level ``i`` and ``L = len(channel_mult)``
levels (one stride-2 step between neighbouring levels, so ``f = 2 ** (L - 1)``)::

    encoder: conv3x3(C -> ch[0])
             level i = 0..L-1: res_blocks x ResBlock(-> ch[i]), then Downsample unless last
             mid: ResBlock [+ Attention + ResBlock]
             GroupNorm, SiLU, conv1x1(ch[L-1] -> D)
    decoder: conv3x3(D -> ch[L-1])
             mid: ResBlock [+ Attention + ResBlock]
             level i = L-1..0: res_blocks x ResBlock(-> ch[i]), then Upsample(-> ch[i-1]) unless 0
             GroupNorm, SiLU, conv3x3(ch[0] -> C)

The encoder widens in the first residual block of a level (after the cheap stride-2 conv at the
lower resolution); the decoder narrows in the upsampling conv, so that the costly convs at the
high resolutions run at the narrow width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.errors import ConfigError

MAX_GROUPS = 32


def norm(channels: int, max_groups: int = MAX_GROUPS) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``.

    32 groups is the usual choice; small or odd widths (8, 16, 48) fall back to fewer groups
    instead of failing. At 32 channels or fewer the default is one group per channel, an
    InstanceNorm: it removes each image's per-channel mean, so the encoder's last norm leaves
    the image-mean latent (what a multi-scale tokenizer's 1x1 scale quantizes) nearly constant
    (results/var-findings-cpu). ``max_groups=8`` keeps >= 4 channels per group at 32 channels.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1; got {max_groups}")
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """(B, in_ch, H, W) -> (B, out_ch, H, W): two GroupNorm-SiLU-conv3x3 steps plus a skip.

    The skip is the identity, or a 1x1 conv when the channel count changes.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int = MAX_GROUPS) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = norm(out_ch, groups), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """(B, ch, H, W) -> same: one-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, groups: int = MAX_GROUPS) -> None:
        super().__init__()
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2)  # (B, 3, HW, C)
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # (B, HW, C)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """(B, ch, H, W) -> (B, ch, H/2, W/2) by a stride-2 conv3x3 (a learned, not a fixed, pool)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """(B, in_ch, H, W) -> (B, out_ch, 2H, 2W): nearest-neighbour x2, then conv3x3.

    Nearest + conv rather than a transposed conv avoids checkerboard artefacts.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, attention: bool, groups: int) -> nn.Sequential:
    """The block at the lowest resolution: ResBlock, or ResBlock-Attention-ResBlock."""
    if not attention:
        return nn.Sequential(ResBlock(channels, channels, groups))
    return nn.Sequential(
        ResBlock(channels, channels, groups),
        Attention(channels, groups),
        ResBlock(channels, channels, groups),
    )


def _check_sizes(width: int, channel_mult: tuple[int, ...], res_blocks: int, dim: int) -> None:
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult needs one or more entries >= 1; got {channel_mult}")
    if min(width, res_blocks, dim) < 1:
        raise ValueError(
            f"conv sizes must be >= 1; got width={width}, res_blocks={res_blocks}, dim={dim}"
        )


class ConvEncoder(nn.Module):
    """(B, in_channels, H, W) -> z_e (B, latent_dim, H/f, W/f), f = 2 ** (len(channel_mult) - 1).

    Args:
        in_channels: image channels C (1 or 3).
        width: base channel count; level ``i`` has ``width * channel_mult[i]`` channels.
        channel_mult: one multiplier per resolution level.
        latent_dim: code dimension D.
        res_blocks: residual blocks per level.
        attention: add self-attention in the lowest-resolution block (off by default).
        norm_groups: the most GroupNorm groups a norm may have (:func:`norm`).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        channel_mult: tuple[int, ...],
        latent_dim: int,
        *,
        res_blocks: int = 1,
        attention: bool = False,
        norm_groups: int = MAX_GROUPS,
    ) -> None:
        super().__init__()
        _check_sizes(width, channel_mult, res_blocks, latent_dim)
        channels = [width * m for m in channel_mult]
        self.downsample = 2 ** (len(channels) - 1)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        ch = channels[0]
        for level, out_ch in enumerate(channels):
            for _ in range(res_blocks):
                layers.append(ResBlock(ch, out_ch, norm_groups))
                ch = out_ch
            if level < len(channels) - 1:
                layers.append(Downsample(ch))
        self.down = nn.Sequential(*layers)
        self.mid = _mid(ch, attention, norm_groups)
        self.norm_out = norm(ch, norm_groups)
        # 1x1: the projection to D mixes channels only; the spatial work is done above
        self.conv_out = nn.Conv2d(ch, latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDecoder(nn.Module):
    """z (B, latent_dim, h, w) -> (B, out_channels, h * f, w * f); mirrors :class:`ConvEncoder`.

    Args are those of :class:`ConvEncoder`, with ``out_channels`` the image channels C.
    """

    def __init__(
        self,
        latent_dim: int,
        width: int,
        channel_mult: tuple[int, ...],
        out_channels: int,
        *,
        res_blocks: int = 1,
        attention: bool = False,
        norm_groups: int = MAX_GROUPS,
    ) -> None:
        super().__init__()
        _check_sizes(width, channel_mult, res_blocks, latent_dim)
        channels = [width * m for m in channel_mult]
        self.upsample = 2 ** (len(channels) - 1)
        ch = channels[-1]
        self.conv_in = nn.Conv2d(latent_dim, ch, 3, padding=1)
        self.mid = _mid(ch, attention, norm_groups)
        layers: list[nn.Module] = []
        for level in reversed(range(len(channels))):
            for _ in range(res_blocks):
                layers.append(ResBlock(ch, channels[level], norm_groups))
                ch = channels[level]
            if level > 0:
                layers.append(Upsample(ch, channels[level - 1]))
                ch = channels[level - 1]
        self.up = nn.Sequential(*layers)
        self.norm_out = norm(ch, norm_groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


def check_image_shape(input_shape: tuple[int, ...], downsample: int) -> None:
    """Refuse sample shapes the conv model cannot reconstruct exactly.

    ``input_shape`` is one sample's ``(C, H, W)``; H and W must be multiples of ``downsample``
    (28 with f=4 gives a 7x7 grid; 28 with f=8 is refused rather than silently cropped).
    A mismatch is a :class:`~vqlab.config.ConfigError`: the config does not fit the data.
    """
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.kind=conv needs images (B, C, H, W); got samples of shape {input_shape}"
            " (use model.kind=mlp for vector data)"
        )
    c, h, w = input_shape
    if c < 1:
        raise ConfigError(f"model.kind=conv needs >= 1 image channel; got {input_shape}")
    if h % downsample or w % downsample:
        ok = [s for s in (1, 2, 4, 8, 16, 32) if h % s == 0 and w % s == 0]
        raise ConfigError(
            f"image size {h}x{w} is not divisible by model.downsample={downsample}; "
            f"factors that fit this size: {ok}"
        )
