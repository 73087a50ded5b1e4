"""VMamba-style cross-scan / cross-merge over four directions, channels-last.

``cross_scan`` turns a map (b, H, W, d) into four token sequences stacked on a direction axis,
(b, L = H*W, 4, d): 0 row-major, 1 column-major, 2 row-major reversed, 3 column-major reversed.
``cross_merge`` is its adjoint: it maps each sequence back to its pixels and sums the four, so
``cross_merge(cross_scan(m)) == 4 * m``. Folding the directions into the SSD heads/groups lets
one scan call process all four routes.
"""
from __future__ import annotations

import torch


def cross_scan(m: torch.Tensor) -> torch.Tensor:
    """(b, H, W, d) -> (b, H*W, 4, d)."""
    b, H, W, d = m.shape
    rows = m.reshape(b, H * W, d)
    cols = m.transpose(1, 2).reshape(b, H * W, d)
    forward = torch.stack((rows, cols), dim=2)  # (b, L, 2, d)
    return torch.cat((forward, forward.flip(1)), dim=2)


def cross_merge(tokens: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(b, H*W, 4, d) -> (b, H, W, d): sum of the four routes at each pixel."""
    b, L, _, d = tokens.shape
    both = tokens[:, :, :2] + tokens[:, :, 2:].flip(1)  # undo the reversal
    rows = both[:, :, 0].reshape(b, H, W, d)
    cols = both[:, :, 1].reshape(b, W, H, d).transpose(1, 2)
    return rows + cols
