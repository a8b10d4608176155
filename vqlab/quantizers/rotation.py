"""Gradient estimators through the nearest-code step: straight-through and the rotation trick.

Both return a tensor whose *value* is the code ``q`` and differ only in the gradient that reaches
the encoder output ``e`` (rows of ``(N, d)``):

- straight-through (STE): ``dL/de = dL/dq``, the gradient copied unchanged;
- rotation trick (Fifty et al., arXiv 2410.06424): the value is written as ``q = sg(lam * R) e``,
  with ``lam = ||q|| / ||e||`` and ``R`` the rotation in the plane of ``e`` and ``q`` that takes
  the direction ``e^ = e / ||e||`` to ``q^ = q / ||q||`` (identity on the orthogonal complement).
  ``lam`` and ``R`` are constants in backward, so ``dL/de = lam * R^T dL/dq``: the gradient turns
  by the angle between ``e`` and ``q`` and scales by their length ratio, so outputs in the same
  code region receive different gradients.

``R`` is the product of two Householder reflections and is applied without building a ``d x d``
matrix: with ``r = (e^ + q^) / ||e^ + q^||``,

    R x = x - 2 r (r . x) + 2 q^ (e^ . x).
"""

from __future__ import annotations

import torch

# Rows shorter than this (e or q) have no direction to rotate from or to.
MIN_NORM = 1e-8
# ||e^ + q^|| = 2 cos(angle / 2); below this e and q are (nearly) opposite, the rotation plane is
# undefined and r would be mostly rounding error (angle within ~0.06 degrees of 180).
MIN_HALF_ANGLE_COS = 1e-3


def _check(e: torch.Tensor, q: torch.Tensor) -> None:
    if e.dim() != 2 or e.shape != q.shape:
        raise ValueError(
            f"expected e and q of the same shape (N, d); got {tuple(e.shape)} and {tuple(q.shape)}"
        )


def rotate_to(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``lam * R e`` for each row: (N, d), (N, d) -> (N, d), equal to ``q`` up to rounding.

    ``lam`` and ``R`` are built from detached ``e`` and ``q``, so the result is linear in ``e``
    for autograd and its Jacobian per row is ``lam * R``. Degenerate rows (``e`` or ``q`` of
    near-zero length, or ``e`` opposite ``q``) return ``e`` itself, i.e. fall back to the
    straight-through gradient.
    """
    _check(e, q)
    e_const, q = e.detach(), q.detach()
    e_norm = e_const.norm(dim=1, keepdim=True)  # (N, 1)
    q_norm = q.norm(dim=1, keepdim=True)  # (N, 1)
    e_hat = e_const / e_norm.clamp_min(MIN_NORM)
    q_hat = q / q_norm.clamp_min(MIN_NORM)
    half = e_hat + q_hat  # (N, d), along the bisector of e and q
    half_norm = half.norm(dim=1, keepdim=True)  # (N, 1)
    r = half / half_norm.clamp_min(MIN_NORM)
    rotated = (
        e
        - 2.0 * r * (r * e).sum(dim=1, keepdim=True)
        + 2.0 * q_hat * (e_hat * e).sum(dim=1, keepdim=True)
    )  # (N, d) = R e
    scaled = rotated * (q_norm / e_norm.clamp_min(MIN_NORM))
    ok = (e_norm > MIN_NORM) & (q_norm > MIN_NORM) & (half_norm > MIN_HALF_ANGLE_COS)  # (N, 1)
    return torch.where(ok, scaled, e)


def straight_through(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value exactly ``q``, gradient to ``e`` copied unchanged. (N, d), (N, d) -> (N, d)."""
    _check(e, q)
    # e - sg(e) is exactly 0, so the sum is q bit for bit
    return q.detach() + (e - e.detach())


def rotation_trick(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value exactly ``q``, gradient to ``e`` through ``lam * R`` (see :func:`rotate_to`).

    (N, d), (N, d) -> (N, d). Adding only the zero-valued ``x - sg(x)`` of the rotated ``e``
    keeps the output equal to ``q`` bit for bit (``rotate_to`` alone is off by rounding), so
    ``quantized == lookup(indices)`` holds as it does for the straight-through estimator.
    """
    rotated = rotate_to(e, q)
    return q.detach() + (rotated - rotated.detach())


ESTIMATORS = {"ste": straight_through, "rotation": rotation_trick}
