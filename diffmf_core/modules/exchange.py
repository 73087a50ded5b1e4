"""Channel-exchange (Sec. III-C, Eq. 4-8) and spatial-exchange (Sec. III-D, Eq. 9-10) modules.

Channels-last maps (b, H, W, C) throughout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.modules.vss import SSDMixer2D, VSSBlock, head_dim_for


class CrossModalSSDExchange(nn.Module):
    """Eq. 4-6: each modality's tokens are projected to (x, B, C); the SSM of one modality runs with
    its own x and the other modality's B and C (C, B, x ~ Q, K, V: a dual form of cross-attention).

    ``mode``: ``paper`` both directions; ``v1`` (Eq. 15) both use visible B/C; ``v2`` (Eq. 16) both
    use infrared B/C; ``none`` each keeps its own (Table IV "w/o SSD exchange").
    """

    def __init__(self, cfg):
        super().__init__()
        dim = cfg.embed_dim
        args = (dim, cfg.d_state, cfg.expand, head_dim_for(dim, cfg), cfg.conv_kernel, cfg.chunk_size, cfg.scan_backend)
        self.norm_ir, self.norm_vi = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mixer_ir, self.mixer_vi = SSDMixer2D(*args), SSDMixer2D(*args)
        self.mode = cfg.ssd_exchange

    def forward(self, f_ir, f_vi):
        t_ir = self.mixer_ir.project(self.norm_ir(f_ir))
        t_vi = self.mixer_vi.project(self.norm_vi(f_vi))
        bc_ir, bc_vi = (t_ir.B, t_ir.C), (t_vi.B, t_vi.C)
        source = {"paper": (bc_vi, bc_ir), "v1": (bc_vi, bc_vi), "v2": (bc_ir, bc_ir), "none": (bc_ir, bc_vi)}
        (t_ir.B, t_ir.C), (t_vi.B, t_vi.C) = source[self.mode]
        return self.mixer_ir.mix(t_ir), self.mixer_vi.mix(t_vi)


class ChannelReweighting(nn.Module):
    """Gated channel re-weighting (Fig. 3, Eq. 7-8).

        F_ir'' = (F_ir' + alpha * F_ir^e) * sigmoid(P_ir(F_ir'))        (Eq. 7; residual optional)
        F_vi'' = (F_vi' + beta  * F_vi^e) * sigmoid(P_vi(F_vi'))
        omega  = sigmoid(P_w(GAP(concat(F_ir^e, F_ir'))))  in R^{b x C}   (Eq. 8)
        F_ir^c = (1 - omega) F_ir'' + omega F_vi'',  F_vi^c = (1 - omega) F_vi'' + omega F_ir''

    alpha and beta are per-channel, "learned from F_vi^e and F_ir^e": a projection of the pooled
    concat(F_ir^e, F_vi^e), initialised to 1.
    """

    def __init__(self, dim: int, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.gate_ir, self.gate_vi = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.alpha_beta = nn.Linear(2 * dim, 2 * dim) if residual else None
        if residual:
            nn.init.zeros_(self.alpha_beta.weight)
            nn.init.ones_(self.alpha_beta.bias)
        self.omega = nn.Linear(2 * dim, dim)

    def forward(self, e_ir, e_vi, x_ir, x_vi):
        gate_ir, gate_vi = torch.sigmoid(self.gate_ir(x_ir)), torch.sigmoid(self.gate_vi(x_vi))
        omega = torch.sigmoid(self.omega(torch.cat((e_ir, x_ir), dim=-1).mean(dim=(1, 2), keepdim=True)))
        if self.residual:
            pooled = torch.cat((e_ir, e_vi), dim=-1).mean(dim=(1, 2), keepdim=True)
            alpha, beta = self.alpha_beta(pooled).chunk(2, dim=-1)
            ir2, vi2 = (x_ir + alpha * e_ir) * gate_ir, (x_vi + beta * e_vi) * gate_vi
        else:
            ir2, vi2 = x_ir * gate_ir, x_vi * gate_vi
        return (1 - omega) * ir2 + omega * vi2, (1 - omega) * vi2 + omega * ir2


class ChannelExchange(nn.Module):
    """Cross-modal SSD exchange followed by channel re-weighting: (F^e_ir, F^e_vi) -> (F^c_ir, F^c_vi).

    Without re-weighting (Table IV) the exchanged features are added to the inputs as a residual.
    """

    def __init__(self, cfg):
        super().__init__()
        self.exchange = CrossModalSSDExchange(cfg)
        self.reweight = ChannelReweighting(cfg.embed_dim, cfg.reweight_residual) if cfg.channel_reweighting else None

    def forward(self, f_ir, f_vi):
        x_ir, x_vi = self.exchange(f_ir, f_vi)
        if self.reweight is None:
            return f_ir + x_ir, f_vi + x_vi
        return self.reweight(f_ir, f_vi, x_ir, x_vi)


def interleave_columns(ir, vi):
    """Eq. 10 "column" arrangement: (b, H, W, C) x2 -> (b, H, 2W, C) as ir_0 vi_0 ir_1 vi_1 ..."""
    b, H, W, C = ir.shape
    return torch.stack((ir, vi), dim=3).reshape(b, H, 2 * W, C)


def deinterleave_columns(m):
    b, H, W2, C = m.shape
    pair = m.reshape(b, H, W2 // 2, 2, C)
    return pair[:, :, :, 0], pair[:, :, :, 1]


def side_by_side(ir, vi):
    """Eq. 10 "row" arrangement: every row holds all ir tokens, then all vi tokens: (b, H, 2W, C)."""
    return torch.cat((ir, vi), dim=2)


class CrossModalScanning(nn.Module):
    """One scale of the spatial-exchange module (Fig. 2, Eq. 10).

    The column (interleaved), row (side-by-side) and concat (channel) arrangements each pass a VSS
    block; each output is folded back to (b, H, W, C) by adding its ir and vi token halves; the
    three are concatenated (3C) and projected back to C.
    """

    def __init__(self, cfg):
        super().__init__()
        dim = cfg.embed_dim
        self.vss_column, self.vss_row = VSSBlock(dim, cfg), VSSBlock(dim, cfg)
        self.vss_concat = VSSBlock(2 * dim, cfg)
        self.proj = nn.Linear(3 * dim, dim)

    def forward(self, ir, vi):
        W = ir.shape[2]
        col_ir, col_vi = deinterleave_columns(self.vss_column(interleave_columns(ir, vi)))
        row = self.vss_row(side_by_side(ir, vi))
        cat_ir, cat_vi = self.vss_concat(torch.cat((ir, vi), dim=-1)).chunk(2, dim=-1)
        merged = torch.cat((col_ir + col_vi, row[:, :, :W] + row[:, :, W:], cat_ir + cat_vi), dim=-1)
        return self.proj(merged)


def _resize(m, size):
    """Channels-last bilinear resize."""
    return F.interpolate(m.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


class SpatialExchange(nn.Module):
    """Multi-scale cross-modal scanning: high (H, W), middle (H/2), low (H/4).

    Low is up-sampled and concatenated into middle, middle into high (each concat projected back
    to C). ``average`` mode (Table II "w/o spatial-exchange") returns (F_ir^c + F_vi^c) / 2.
    """

    def __init__(self, cfg):
        super().__init__()
        self.average = cfg.spatial_exchange == "average"
        if self.average:
            return
        dim, levels = cfg.embed_dim, cfg.spatial_levels
        self.scales = nn.ModuleList(CrossModalScanning(cfg) for _ in range(levels))
        self.down = nn.ModuleList(nn.Conv2d(dim, dim, 2, stride=2, groups=dim) for _ in range(levels - 1))
        self.merge = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(levels - 1))

    def _down(self, i, m):
        return self.down[i](m.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, ir, vi):
        if self.average:
            return (ir + vi) / 2
        pyramid = [(ir, vi)]
        for i in range(len(self.down)):
            both = self._down(i, torch.cat(pyramid[-1], dim=0))  # shared down-sampling for ir and vi
            pyramid.append(both.chunk(2, dim=0))
        out = None
        for level in reversed(range(len(self.scales))):  # low -> middle -> high
            f = self.scales[level](*pyramid[level])
            if out is not None:
                f = self.merge[level](torch.cat((f, _resize(out, f.shape[1:3])), dim=-1))
            out = f
        return out
