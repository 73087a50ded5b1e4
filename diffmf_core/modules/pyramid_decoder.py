"""Decoder of DIFF-MF in this implementation: fused features decide, a Laplacian pyramid of the
two sources supplies every pixel of detail.

Both luminance sources are split into L-1 detail bands and a base (``ops.pyramid``). A small head
on the fused features (any grid: 1/8 in ``live``, full resolution in ``paper``) predicts, per
band k, a selection logit a_k and a gain logit g_k, and for the base a selection logit a_B and an
offset o; the maps are resized to each band's size. Then

    s_k  = sigmoid(DETAIL_SHARPNESS * (|D_ir| - |D_vi|) / (|D_ir| + |D_vi| + eps) + a_k)
    D_k  = s_k D_ir + (1 - s_k) D_vi
    F_k  = D_k * (1 + (exp(tanh(g_k)) - 1) * sigmoid((|D_k| - CORING) / CORING_WIDTH))
           (gain in [1/e, e], applied to detail above the noise level CORING: sharpening edges
           and texture does not amplify sensor noise, which would flicker from frame to frame)
    s_B  = sigmoid(BASE_SHARPNESS * (B_ir - B_vi) + a_B)
    F_B  = s_B B_ir + (1 - s_B) B_vi + OFFSET_RANGE * tanh(o)
    fused = clip(collapse(F_0 .. F_{L-2}, F_B), 0, 1)

The head's last layer starts at zero, so the untrained network is a soft Laplacian-pyramid fusion
with max-activity detail selection and a max base: it keeps each source's texture by
construction, and training only adds judgement (which source matters where, how much detail and
contrast). This departs from the paper's convolutional decoder; see the model docs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.ops.pyramid import laplacian_pyramid, pyramid_levels, reconstruct

DETAIL_SHARPNESS = 10.0  # logit per unit of normalised activity difference (|a|-|b|)/(|a|+|b|)
BASE_SHARPNESS = 50.0    # logit per unit of base intensity difference (0.05 -> 92 % the brighter)
OFFSET_RANGE = 0.25      # largest base correction, in intensity units
CORING = 0.02            # detail below about 5 grey levels (noise) keeps gain 1
CORING_WIDTH = 0.005
ACTIVITY_EPS = 1e-3


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear up; down: average over r x r blocks (r = the size ratio rounded up), then bilinear
    to the exact size. Sizes are plain ints, so an exported graph holds constants."""
    size = (int(size[0]), int(size[1]))
    if int(x.shape[-2]) > size[0]:
        r = -(-int(x.shape[-2]) // size[0])
        x = F.avg_pool2d(x, r, stride=r, ceil_mode=True, count_include_pad=False)
    if (int(x.shape[-2]), int(x.shape[-1])) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidDecoder(nn.Module):
    """Fused features (b, h, w, C) + sources (b, 1, H, W) -> fused luminance (b, 1, H, W) in [0, 1]."""

    def __init__(self, dim: int, levels: int):
        super().__init__()
        self.levels = levels
        self.body = nn.Conv2d(dim, dim, 3, padding=1)
        self.head = nn.Conv2d(dim, 2 * levels, 1)  # (a_k, g_k) per detail band, then (a_B, o)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, f: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        maps = self.head(F.gelu(self.body(f.permute(0, 3, 1, 2))))
        levels = pyramid_levels(ir.shape[-2], ir.shape[-1], self.levels)
        sources = laplacian_pyramid(torch.cat((ir, vi), dim=1), levels)  # both in one pass: channel 0 ir, 1 vi
        bands = []
        for k, (d_ir, d_vi) in enumerate(band.split(1, dim=1) for band in sources[:-1]):
            a, g = _resize(maps[:, 2 * k:2 * k + 2], d_ir.shape[-2:]).unbind(1)
            m_ir, m_vi = d_ir.abs(), d_vi.abs()
            s = torch.sigmoid(DETAIL_SHARPNESS * (m_ir - m_vi) / (m_ir + m_vi + ACTIVITY_EPS) + a[:, None])
            d = d_vi + s * (d_ir - d_vi)
            above_noise = torch.sigmoid((d.abs() - CORING) / CORING_WIDTH)
            bands.append(d * (1 + (torch.exp(torch.tanh(g[:, None])) - 1) * above_noise))
        b_ir, b_vi = sources[-1].split(1, dim=1)
        a_b, offset = _resize(maps[:, -2:], b_ir.shape[-2:]).unbind(1)
        s_b = torch.sigmoid(BASE_SHARPNESS * (b_ir - b_vi) + a_b[:, None])
        bands.append(b_vi + s_b * (b_ir - b_vi) + OFFSET_RANGE * torch.tanh(offset[:, None]))
        return reconstruct(bands).clamp(0, 1)
