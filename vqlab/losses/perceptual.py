"""Perceptual distance in LPIPS's "baseline" form, and real LPIPS when it is installed locally.

:class:`PerceptualLoss` compares two image batches through the feature maps of a frozen network
(anything with ``feature_maps(x) -> [(B, C_l, H_l, W_l), ...]``, e.g.
:class:`vqlab.evaluation.featnet.FeatNet` with ``arch="vgg"``). For each chosen layer l:

    d_l(x, y) = mean over (h, w) of  sum over c of (f̂_l(x) - f̂_l(y))²,
    f̂ = f / (||f||₂ over C + eps)   (unit-normalised at every position)

and ``d = mean over layers of d_l``. This is LPIPS with its learnt per-channel weights replaced
by ones (``lpips=False`` in the ``lpips`` package), except that the layers are averaged rather
than summed, so ``d`` lies in [0, 4] whatever the number of layers. Summing (not averaging) over
C keeps each layer's term the squared chord between unit vectors, in [0, 4] whatever C_l is,
so wide deep layers weigh as much as narrow shallow ones, as in LPIPS.

:func:`load_lpips` builds the real LPIPS (learnt weights on an ImageNet backbone) only from
files already on disk; vqlab never downloads, and never builds LPIPS on a random backbone.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from vqlab.errors import ConfigError

REDUCTIONS = ("mean", "none")
LPIPS_NETS = ("vgg", "alex")
# The ImageNet backbones lpips asks torchvision for, under torch.hub's checkpoint folder (the
# file names are torchvision's, the ones its download would write).
_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W) float32: each position's C-vector over (its L2 norm + eps).

    In float32 because an fp16 feature map (autocast) would round eps = 1e-10 to 0 and turn an
    all-zero vector (a ReLU map has many) into 0/0. ``vector_norm``'s backward is defined as 0
    at a zero vector, so the gradient stays finite there too.
    """
    f = f.float()
    return f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + eps)


def _reduce(d: torch.Tensor, reduction: str) -> torch.Tensor:
    return d.mean() if reduction == "mean" else d


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"perceptual distance needs two (B, C, H, W) batches of one shape, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


class _Frozen(nn.Module):
    """A module holding a frozen ``self.net``: no parameter gradients, always in eval mode.

    ``train()`` is overridden because a parent's ``model.train()`` recurses into every child:
    without it, the first training step would switch the feature net's BatchNorm/dropout back
    to training behaviour, and the distance would change between steps.
    """

    net: nn.Module

    def _freeze(self, net: nn.Module) -> None:
        self.net = net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> _Frozen:
        super().train(mode)
        self.net.eval()
        return self


class PerceptualLoss(_Frozen):
    """LPIPS-baseline distance through a frozen feature net (see the module docstring).

    Args:
        net: a network with ``feature_maps(x) -> list[(B, C_l, H_l, W_l)]``; it is frozen in
            place (``requires_grad_(False)``, eval mode for good).
        layers: indices into ``feature_maps``' list to compare; ``None`` = all of them.
        reduction: ``"mean"`` (a scalar, the batch mean) or ``"none"`` (per-image, (B,)).
        eps: added to each position's norm, so an all-zero feature vector maps to zero.

    forward(x, y): x, y (B, C, H, W) images on vqlab's scale [-1, 1], passed to the net as they
    are -> () or (B,). Gradients reach ``x`` and ``y`` (whichever requires them), never the net.
    """

    def __init__(
        self,
        net: nn.Module,
        layers: list[int] | None = None,
        *,
        reduction: Literal["mean", "none"] = "mean",
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        if not callable(getattr(net, "feature_maps", None)):
            raise TypeError(f"{type(net).__name__} has no feature_maps(x) method")
        if layers is not None:
            if not layers or any(not isinstance(i, int) or i < 0 for i in layers):
                raise ValueError(f"layers must be a non-empty list of indices >= 0, got {layers}")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers has repeated indices: {layers}")
        _check_reduction(reduction)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self._freeze(net)
        self.layers = None if layers is None else list(layers)
        self.reduction = reduction
        self.eps = eps

    def _select(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.layers is None:
            return list(maps)
        if max(self.layers) >= len(maps):
            raise ValueError(
                f"layers {self.layers} asks for more maps than the net's {len(maps)} "
                f"(valid indices 0..{len(maps) - 1})"
            )
        return [maps[i] for i in self.layers]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        # Two passes rather than one on cat([x, y]): each image's features then never depend on
        # its batch position, so d(x, x) is exactly 0 and d(x, y) exactly equals d(y, x).
        fx = self._select(self.net.feature_maps(x))
        fy = self._select(self.net.feature_maps(y))
        per_layer = [
            (unit_normalize(a, self.eps) - unit_normalize(b, self.eps)).square().sum(1).mean((1, 2))
            for a, b in zip(fx, fy, strict=True)
        ]  # each (B,)
        return _reduce(torch.stack(per_layer).mean(0), self.reduction)


class LPIPSLoss(_Frozen):
    """Real LPIPS (an ``lpips.LPIPS`` module), frozen, with :class:`PerceptualLoss`'s interface.

    forward(x, y): (B, 3, H, W) images in [-1, 1] (LPIPS's own input scale) -> () or (B,).
    Build it with :func:`load_lpips`.
    """

    def __init__(self, model: nn.Module, *, reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self._freeze(model)
        self.reduction = reduction

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        d = self.net(x, y).reshape(x.shape[0])  # lpips returns (B, 1, 1, 1)
        return _reduce(d, self.reduction)


def load_lpips(
    net: Literal["vgg", "alex"] = "vgg", *, reduction: Literal["mean", "none"] = "mean"
) -> LPIPSLoss:
    """Real LPIPS from local files only, or a one-line :class:`ConfigError` saying what is missing.

    Needs the ``lpips`` package (with torchvision), its bundled linear weights
    (``lpips/weights/v0.1/<net>.pth``) and torchvision's ImageNet backbone in torch.hub's
    checkpoint folder (``$TORCH_HOME/hub/checkpoints/``, see ``torch.hub.get_dir()``). Both files
    are checked before anything is built, so lpips never reaches for the network, and a
    random-backbone LPIPS (which is not LPIPS) is never returned.
    """
    if net not in LPIPS_NETS:
        raise ConfigError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    try:
        import lpips
    except ImportError as e:  # lpips itself, or the torchvision it imports
        raise ConfigError(
            f"real LPIPS needs the 'lpips' package and torchvision (missing: {e.name or e}); "
            f"install them with: pip install lpips torchvision"
        ) from None
    lin = os.path.join(os.path.dirname(os.path.abspath(lpips.__file__)), "weights", "v0.1")
    lin = os.path.join(lin, f"{net}.pth")
    if not os.path.isfile(lin):
        raise ConfigError(
            f"LPIPS linear weights not found at {lin}: reinstall the 'lpips' package "
            f"(pip install --force-reinstall lpips)"
        )
    backbone = os.path.join(torch.hub.get_dir(), "checkpoints", _BACKBONE_FILES[net])
    if not os.path.isfile(backbone):
        raise ConfigError(
            f"LPIPS ({net}) needs torchvision's ImageNet backbone at {backbone} and vqlab never "
            f"downloads it: copy {_BACKBONE_FILES[net]} there (or point TORCH_HOME at a folder "
            f"with hub/checkpoints/{_BACKBONE_FILES[net]})"
        )
    # pretrained=True loads the linear weights, pnet_rand=False the ImageNet backbone: torchvision
    # finds the file checked above in its cache and does not download.
    model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=False, verbose=False)
    return LPIPSLoss(model, reduction=reduction)
