"""Visual State Space (VSS) block with an SSD mixer over four scan routes (VMamba SS2D, Mamba-2 scan).

All tensors are channels-last, (b, H, W, C). ``SSDMixer2D`` is split in two halves so the
channel-exchange module can swap B and C between modalities between them:

    tokens = mixer.project(m)    # in-proj, depth-wise conv, SiLU, cross-scan, per-route (x, B, C, dt)
    out    = mixer.mix(tokens)   # SSD scan over the 4 routes, cross-merge, norm, SiLU(z) gate, out-proj

The four routes are folded into the SSD heads (route k owns heads [k*H, (k+1)*H) and B/C group k),
so one scan call covers all of them; each route has its own B/C/dt projection, decay A and skip D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.modules.attention import SpatialAttention
from diffmf_core.ops.cross_scan import cross_merge, cross_scan
from diffmf_core.ops.scan import MAX_BLOCK_ELEMENTS, selective_scan

ROUTES = 4


@dataclass
class ScanTokens:
    """Inputs of one SSD scan over the four routes of a (H, W) map."""

    x: torch.Tensor   # (b, L, 4*heads, head_dim)
    dt: torch.Tensor  # (b, L, 4*heads), positive
    B: torch.Tensor   # (b, L, 4, d_state)
    C: torch.Tensor   # (b, L, 4, d_state)
    z: torch.Tensor   # (b, H, W, inner) output gate
    H: int
    W: int


class SSDMixer2D(nn.Module):
    """SS2D token mixer: y = out_proj(norm(CrossMerge(SSD(CrossScan(x)))) * SiLU(z))."""

    def __init__(self, dim: int, d_state: int, expand: int, head_dim: int, conv_kernel: int,
                 chunk_size: int, scan_backend: str):
        super().__init__()
        inner = expand * dim
        self.inner, self.d_state, self.head_dim = inner, d_state, head_dim
        self.heads = inner // head_dim
        self.chunk_size, self.scan_backend = chunk_size, scan_backend
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, conv_kernel, padding=conv_kernel // 2, groups=inner)
        # per-route projection of each token to (B, C, dt): weight (4, 2N + heads, inner)
        self.route_proj = nn.Parameter(torch.randn(ROUTES, 2 * d_state + self.heads, inner) / math.sqrt(inner))
        dt = torch.exp(torch.rand(ROUTES * self.heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.empty(ROUTES * self.heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(ROUTES * self.heads))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def project(self, m: torch.Tensor) -> ScanTokens:
        b, H, W, _ = m.shape
        x, z = self.in_proj(m).chunk(2, dim=-1)
        x = F.silu(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        seq = cross_scan(x)  # (b, L, 4, inner)
        bcdt = torch.einsum("blki,kfi->blkf", seq, self.route_proj)
        Bm, Cm, dt = bcdt.split((self.d_state, self.d_state, self.heads), dim=-1)
        dt = F.softplus(dt + self.dt_bias.view(ROUTES, self.heads)).reshape(b, H * W, ROUTES * self.heads)
        xs = seq.reshape(b, H * W, ROUTES * self.heads, self.head_dim)
        return ScanTokens(xs, dt, Bm, Cm, z, H, W)  # B, C: strided views; the scan lays them out once

    def mix(self, t: ScanTokens) -> torch.Tensor:
        A = -torch.exp(self.A_log.float())
        y = selective_scan(t.x, t.dt, A, t.B, t.C, self.D, backend=self.scan_backend, chunk_size=self.chunk_size)
        b = y.shape[0]
        y = cross_merge(y.reshape(b, t.H * t.W, ROUTES, self.inner), t.H, t.W)
        return self.out_proj(self.out_norm(y) * F.silu(t.z))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.mix(self.project(m))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VSSBlock(nn.Module):
    """x + Mixer(LN(x)) [+ MLP(LN(x))]; the mixer is SSD (paper) or attention (Table VII)."""

    def __init__(self, dim: int, cfg, mixer: str | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if (mixer or cfg.mixer) == "attention":
            self.mixer = SpatialAttention(dim, heads=cfg.attention_heads)
        else:
            self.mixer = SSDMixer2D(dim, cfg.d_state, cfg.expand, head_dim_for(dim, cfg), cfg.conv_kernel,
                                    cfg.chunk_size, cfg.scan_backend)
        self.mlp = None
        if cfg.mlp_ratio > 0:
            self.mlp_norm, self.mlp = nn.LayerNorm(dim), MLP(dim, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, H, W, dim = x.shape
        if b > 1 and not torch.is_grad_enabled() and ROUTES * H * W * dim > MAX_BLOCK_ELEMENTS:
            # Inference on large maps (the route tokens of one item exceed the scan's memory bound):
            # one batch item at a time bounds the mixer's working memory (exact: no operation mixes
            # batch items).
            return torch.cat([self._block(xi) for xi in x.split(1)])
        return self._block(x)

    def _block(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


def head_dim_for(dim: int, cfg) -> int:
    """Head width for a block of width ``dim`` (blocks on concatenated maps are twice as wide)."""
    inner = cfg.expand * dim
    return cfg.head_dim if inner % cfg.head_dim == 0 else inner
