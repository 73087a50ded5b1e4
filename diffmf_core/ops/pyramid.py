"""Laplacian pyramids of (b, c, H, W) tensors (Burt & Adelson 1983), differentiable.

- ``pyr_down(x)``: 5-tap binomial blur [1 4 6 4 1]/16 (separable, reflect padding), every second
  pixel kept: (H, W) -> (ceil(H/2), ceil(W/2)).
- ``pyr_up(x, size)``: bilinear resize to ``size`` (half-pixel centres).
- ``laplacian_pyramid(x, levels)``: ``[D_0, ..., D_{L-2}, G_{L-1}]`` with ``G_0 = x``,
  ``G_{k+1} = pyr_down(G_k)`` and ``D_k = G_k - pyr_up(G_{k+1})``.
- ``reconstruct(pyramid)``: the inverse, exact for any ``pyr_up``: ``G_k = D_k + pyr_up(G_{k+1})``.
- ``pyramid_levels(h, w, levels)``: how many levels an h x w image can hold (coarsest side >= 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Binomial blur then 2x decimation; (b, c, H, W) -> (b, c, ceil(H/2), ceil(W/2))."""
    b, c, h, w = x.shape
    k = torch.tensor(_BINOMIAL, device=x.device, dtype=x.dtype) / 16.0
    y = F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, 5), stride=(1, 2))
    y = F.conv2d(y, k.view(1, 1, 5, 1), stride=(2, 1))
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (b, c, h, w) to ``size`` = (H, W)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pyramid_levels(h: int, w: int, levels: int) -> int:
    """Levels (<= ``levels``, >= 1) such that the coarsest level is at least 4 pixels a side."""
    n, side = 1, min(h, w)
    while n < levels and (side + 1) // 2 >= 4:
        side = (side + 1) // 2
        n += 1
    return n


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[D_0 .. D_{L-2}, G_{L-1}]``: detail bands finest first, then the low-pass base."""
    out, current = [], x
    for _ in range(levels - 1):
        down = pyr_down(current)
        out.append(current - pyr_up(down, current.shape[-2:]))
        current = down
    out.append(current)
    return out


def reconstruct(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of ``laplacian_pyramid``: collapse from the base up."""
    out = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        out = detail + pyr_up(out, detail.shape[-2:])
    return out
