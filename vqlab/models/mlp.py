"""MLP encoder and decoder for vector data (the papers' synthetic experiments)."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: int, depth: int, out_dim: int) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with ReLU, then a linear map to ``out_dim``.

    ``hidden`` is the capacity knob of the embeddings-collapse experiment (2 to 128 in the papers).
    """
    if min(in_dim, hidden, depth, out_dim) < 1:
        raise ValueError(
            f"mlp sizes must be >= 1; got in_dim={in_dim}, hidden={hidden}, depth={depth}, "
            f"out_dim={out_dim}"
        )
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, in_dim) -> (B, latent_dim)."""

    def __init__(self, in_dim: int, hidden: int, depth: int, latent_dim: int) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden, depth, latent_dim)

    def forward(self, x):
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, latent_dim) -> (B, out_dim)."""

    def __init__(self, latent_dim: int, hidden: int, depth: int, out_dim: int) -> None:
        super().__init__()
        self.net = mlp(latent_dim, hidden, depth, out_dim)

    def forward(self, z):
        return self.net(z)
