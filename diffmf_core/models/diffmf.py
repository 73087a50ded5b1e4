"""The DIFF-MF network (paper Fig. 2): embedding -> difference-driven feature extraction ->
channel-exchange -> spatial-exchange -> decoder to the fused luminance.

Input: infrared and visible luminance (b, 1, H, W) in [0, 1] (the caller passes the Y channel of a
colour visible image and restores colour from its Cb/Cr). Output: fused luminance (b, 1, H, W) in
[0, 1]. Any H, W: inputs are reflect-padded to ``cfg.multiple`` and the output is cropped back.

Choices where the paper is silent (also listed in the README):
- Embedding: a ``patch_size`` x ``patch_size`` strided conv per modality (1 = full resolution, as
  in the paper preset; the ``live`` preset runs all SSMs on a 4x coarser grid).
- Decoder: conv on the fused features, pixel-shuffle back to full resolution, concatenated with a
  full-resolution shallow feature map of both inputs, two convs giving a per-pixel source weight w
  and a detail term d: fused = clip(w * I_ir + (1 - w) * I_vi + d, 0, 1). Expressing the output
  relative to the sources keeps full-resolution texture even when the SSMs run on a coarse grid.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.config import DiffMFConfig
from diffmf_core.modules.exchange import ChannelExchange, SpatialExchange
from diffmf_core.modules.extraction import DiffDrivenExtraction


class PatchEmbed(nn.Module):
    """(b, 1, H, W) -> channels-last (b, H/p, W/p, C)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch) if patch > 1 else nn.Conv2d(1, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class Decoder(nn.Module):
    """Fused features (b, h, w, C) + both inputs -> fused Y = clip(w * ir + (1 - w) * vi + d, 0, 1)."""

    def __init__(self, dim: int, patch: int, skip: int):
        super().__init__()
        self.body = nn.Conv2d(dim, dim, 3, padding=1)
        self.up = nn.Conv2d(dim, skip * patch * patch, 1)
        self.shuffle = nn.PixelShuffle(patch)
        self.shallow = nn.Conv2d(2, skip, 3, padding=1)
        self.refine = nn.Conv2d(2 * skip, skip, 3, padding=1)
        self.head = nn.Conv2d(skip, 2, 3, padding=1)  # source-weight logit, detail
        nn.init.zeros_(self.head.bias)

    def forward(self, f, ir, vi):
        f = F.gelu(self.body(f.permute(0, 3, 1, 2)))
        f = self.shuffle(self.up(f))
        detail = F.gelu(self.shallow(torch.cat((ir, vi), dim=1)))
        f = F.gelu(self.refine(torch.cat((f, detail), dim=1)))
        logit, d = self.head(f).chunk(2, dim=1)
        w = torch.sigmoid(logit)
        return (w * ir + (1 - w) * vi + d).clamp(0, 1)


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
        self.decoder = Decoder(cfg.embed_dim, cfg.patch_size, cfg.skip_dim)

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
