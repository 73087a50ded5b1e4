"""The DIFF-MF network (paper Fig. 2): embedding -> difference-driven feature extraction ->
channel-exchange -> spatial-exchange -> decoder to the fused luminance.

Input: infrared and visible luminance (b, 1, H, W) in [0, 1] (the caller passes the Y channel of a
colour visible image and restores colour from its Cb/Cr). Output: fused luminance (b, 1, H, W) in
[0, 1]. Any H, W: inputs are reflect-padded to ``cfg.multiple`` and the output is cropped back.

Choices where the paper is silent (also listed in docs/model.md):
- Embedding: a ``patch_size`` x ``patch_size`` strided conv per modality (1 = full resolution, as
  in the paper preset; the ``live`` preset runs all SSMs on an 8x coarser grid).
- Decoder (``modules.pyramid_decoder``): the fused features predict per-band selection and gain
  maps for a Laplacian pyramid of both sources plus a base selection and correction; the pyramid
  supplies every pixel of detail, so texture survives even when the SSMs run on a coarse grid.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.config import DiffMFConfig
from diffmf_core.modules.exchange import ChannelExchange, SpatialExchange
from diffmf_core.modules.extraction import DiffDrivenExtraction
from diffmf_core.modules.pyramid_decoder import PyramidDecoder


class PatchEmbed(nn.Module):
    """(b, 1, H, W) -> channels-last (b, H/p, W/p, C)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch) if patch > 1 else nn.Conv2d(1, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class DiffMF(nn.Module):
    """DIFF-MF built from one ``DiffMFConfig`` (see diffmf_core.config for the ablation switches)."""

    def __init__(self, cfg: DiffMFConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_ir = PatchEmbed(cfg.embed_dim, cfg.patch_size)
        self.embed_vi = PatchEmbed(cfg.embed_dim, cfg.patch_size)
        self.extraction = DiffDrivenExtraction(cfg) if cfg.feature_extraction else None
        self.channel_exchange = ChannelExchange(cfg) if cfg.channel_exchange else None
        self.spatial_exchange = SpatialExchange(cfg)
        self.decoder = PyramidDecoder(cfg.embed_dim, cfg.pyramid_levels, cfg.output_stretch, cfg.head_region,
                                      cfg.warm_margin, cfg.head_maps)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        H, W = ir.shape[-2:]
        m = self.cfg.multiple
        pad_h, pad_w = (-H) % m, (-W) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < H and pad_w < W else "replicate"
            ir = F.pad(ir, (0, pad_w, 0, pad_h), mode=mode)
            vi = F.pad(vi, (0, pad_w, 0, pad_h), mode=mode)
        f_ir, f_vi = self.embed_ir(ir), self.embed_vi(vi)
        if self.extraction is not None:
            f_ir, f_vi = self.extraction(f_ir, f_vi)
        if self.channel_exchange is not None:
            f_ir, f_vi = self.channel_exchange(f_ir, f_vi)
        fused = self.spatial_exchange(f_ir, f_vi)
        return self.decoder(fused, ir, vi)[..., :H, :W]
