"""Difference-driven feature extraction (paper Sec. III-B, Algorithm 1).

One ``DiffExtractionStage`` is one iteration n -> n+1 of Algorithm 1:

    1-2: F_vi^self <- VSS_vi(F_vi^self),  F_ir^self <- VSS_ir(F_ir^self)      (own weights)
    3:   F_vi^share, F_ir^share <- VSS_sh(Conv_sh(.)) applied to each modality (shared weights)
    4:   Diff = tanh |F_vi^share - F_ir^share|
    5:   F_ir^self <- (1 - Diff) * F_ir^self + Diff * F_vi^self                (IR first ...)
    6:   F_vi^self <- (1 - Diff) * F_vi^self + Diff * F_ir^self(new)           (... then visible)

Variants (Table III): ``v1`` re-weights the visible branch first, then IR with the new visible
features; ``v2`` re-weights both in parallel from the old features. ``none`` (Table II, "w/o
difference guidance") adds the shared-branch features back to the self branches instead.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.modules.vss import VSSBlock


def guide(ir: torch.Tensor, vi: torch.Tensor, diff: torch.Tensor, mode: str):
    """Lines 5-6 of Algorithm 1 (or a Table III variant): returns (ir, vi)."""
    if mode == "paper":
        ir = (1 - diff) * ir + diff * vi
        vi = (1 - diff) * vi + diff * ir
    elif mode == "v1":
        vi = (1 - diff) * vi + diff * ir
        ir = (1 - diff) * ir + diff * vi
    elif mode == "v2":
        ir, vi = (1 - diff) * ir + diff * vi, (1 - diff) * vi + diff * ir
    else:
        raise ValueError(f"unknown guidance mode {mode!r}")
    return ir, vi


class DiffExtractionStage(nn.Module):
    """One repeat of Algorithm 1 on channels-last maps (b, H, W, C)."""

    def __init__(self, cfg):
        super().__init__()
        dim = cfg.embed_dim
        self.guidance = cfg.guidance
        self.vss_ir = VSSBlock(dim, cfg)
        self.vss_vi = VSSBlock(dim, cfg)
        self.share_conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.share_vss = VSSBlock(dim, cfg)

    def forward(self, ir_self, vi_self, ir_share, vi_share):
        vi_self = self.vss_vi(vi_self)
        ir_self = self.vss_ir(ir_self)
        both = torch.cat((vi_share, ir_share), dim=0)  # one pass through the shared weights
        both = F.gelu(self.share_conv(both.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        vi_share, ir_share = self.share_vss(both).chunk(2, dim=0)
        if self.guidance == "none":
            return ir_self + ir_share, vi_self + vi_share, ir_share, vi_share
        diff = torch.tanh((vi_share - ir_share).abs())
        ir_self, vi_self = guide(ir_self, vi_self, diff, self.guidance)
        return ir_self, vi_self, ir_share, vi_share


class DiffDrivenExtraction(nn.Module):
    """N stages of Algorithm 1; returns (F_ir^e, F_vi^e)."""

    def __init__(self, cfg):
        super().__init__()
        self.stages = nn.ModuleList(DiffExtractionStage(cfg) for _ in range(cfg.extraction_depth))

    def forward(self, ir, vi):
        ir_self, vi_self, ir_share, vi_share = ir, vi, ir, vi
        for stage in self.stages:
            ir_self, vi_self, ir_share, vi_share = stage(ir_self, vi_self, ir_share, vi_share)
        return ir_self, vi_self
