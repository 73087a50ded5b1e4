"""Full spatial multi-head self-attention mixer, used only for the FLOPs study of Table VII.

The paper replaces every VSS block with a Restormer block and counts attention as 4 B (HW)^2 D
FLOPs, i.e. attention over all H*W tokens; this mixer is that (quadratic) token mixer.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class SpatialAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V over all H*W tokens of a (b, H, W, C) map."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads if dim % heads == 0 else 1
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        b, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(b, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, H, W, C))
