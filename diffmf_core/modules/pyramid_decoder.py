"""Decoder of DIFF-MF in this implementation: fused features decide, a Laplacian pyramid of the
two sources supplies every pixel of detail.

Both luminance sources are split into L-1 detail bands and a base (``ops.pyramid``). One
region-coherent selection map comes from the sources themselves: the brighter source, judged on
their difference smoothed to a quarter of the resolution (two binomial reductions):

    w    = sigmoid(SELECT_SHARPNESS * up(pyr_down^2(ir - vi)))      (a soft, smooth max rule)

A small head on the fused features (any grid: 1/8 in ``live``, full resolution in ``paper``)
predicts, per band k, a selection logit a_k and a gain logit g_k, and for the base a selection
logit a_B, a contrast logit c and an offset o; every map is resized to its band's size. Then

    s_k  = sigmoid(logit(w_k) + SELECT_RANGE tanh(a_k))   (w_k: w resized to band k; likewise s_B)
    D_k  = s_k D_ir + (1 - s_k) D_vi
    n_k  = sigmoid((|D_k| - CORING) / CORING_WIDTH)                      (1 above the noise level)
    F_k  = D_k + (G_k exp(GAIN_RANGE tanh(g_k)) - 1) n_k T_k tanh(D_k / T_k)
    B    = s_B B_ir + (1 - s_B) B_vi,   m = mean of B over the image
    F_B  = m + CONTRAST exp(CONTRAST_RANGE tanh(c)) (B - m) + OFFSET_RANGE tanh(o)
    fused = clip(collapse(F_0 .. F_{L-2}, F_B), 0, 1)

G_k (``DETAIL_GAIN``, finest band first) and ``CONTRAST`` are the starting detail gains and
contrast. Gains apply only to detail above the noise level ``CORING``, and what they add to a
coefficient is limited to about (gain - 1) T_k (``BOOST_LIMIT``): faint texture between the two
is raised by the full gain, strong edges only by a little. Sensor noise is not amplified, and the
strong edges, whose every movement in a video would otherwise be amplified too, barely change:
sharpness on stills at far less temporal flicker than a linear gain.

With every map zero the decoder is its built-in rule (``rule_fusion``, computed without the
network): a pyramid blend that takes every band of a region from the same (brighter) source, with
sharpened detail and stretched contrast. The rule fails where the brighter source is the wrong
one: a warm person behind bright smoke or in daylight clutter fades into the visible image. The
head decides against it: SELECT_RANGE lets a_k overturn the rule's selection anywhere, band by
band (take a warm target's detail and base from the thermal image inside bright visible
surroundings), and g_k, c, o set detail and contrast per region. The head starts with small random
weights (``HEAD_INIT_STD``), so the untrained network is the rule to within a few grey levels and
the trunk learns from the first step. This departs from the paper's convolutional decoder; see
the model docs.

Three options of the network's config (defaults: off) change what the head may do and the output:
- ``head_maps="selection"``: the head sets only a_k and a_B; gains, contrast and offset stay the rule's.
- ``head_region="warm"``: every map is multiplied by the warm envelope E (``warm_envelope``: near a
  structure of the thermal image that stands at least WARM_LEVEL above its surroundings), so the
  head departs from the rule only on and around warm targets.
- ``output_stretch`` s: fused <- clip(m + s (fused - m)), m the fused image's mean (the rule's too):
  a linear contrast stretch of the whole output, which amplifies one-source regions without
  adding distortion, unlike the band gains.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmf_core.ops.pyramid import laplacian_pyramid, pyr_down, pyramid_levels, reconstruct

SELECT_SHARPNESS = 50.0  # logit per unit of smoothed intensity difference (0.05 -> 92 % the brighter)
DETAIL_GAIN = (2.5, 1.3, 1.3, 1.1)   # starting gain of the detail bands, finest first (1 beyond)
BOOST_LIMIT = (0.02, 0.03, 0.1, 0.1)  # sharpening adds at most about (gain - 1) * this (1 beyond)
GAIN_RANGE = 0.5         # the head scales a band's gain by exp(+-0.5): x0.61 .. x1.65
CONTRAST = 1.1           # starting contrast of the base about its mean
CONTRAST_RANGE = 0.5
OFFSET_RANGE = 0.25      # largest base correction, in intensity units
CORING = 0.02            # detail below about 5 grey levels (noise) keeps gain 1
CORING_WIDTH = 0.005
LOGIT_EPS = 1e-4         # the rule's selection stays within [1e-4, 1 - 1e-4]: logits within +-9.2
SELECT_RANGE = 16.0      # the head moves a selection logit by up to +-16: it can overturn the rule anywhere
HEAD_INIT_STD = 1e-3
WARM_LEVEL = 20 / 255    # a warm structure stands this far above the thermal image's opening
WARM_WIDTH = 5 / 255     # E ramps from 0 at WARM_LEVEL - WARM_WIDTH to 1 at WARM_LEVEL + WARM_WIDTH
WARM_RADIUS = 8          # half side of the opening's square on the quarter grid (32 px at full size)
WARM_RULE_SELECT = 3.0   # the warm rule's selection logit on the envelope: +16 tanh(3), the thermal image
WARM_RULE_MARGIN = 16    # ... on and within 16 px of a warm structure
WARM_RULE_STRETCH = 1.2  # ... and its output stretch


def _of_band(values: tuple, k: int) -> float:
    """Band k's entry of a per-band constant (finest first); 1.0 for bands beyond it."""
    return values[k] if k < len(values) else 1.0


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


def brighter_source(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """w = sigmoid(SELECT_SHARPNESS * pyr_down^2(ir - vi)): where the infrared is the brighter
    source, judged on the difference smoothed to a quarter of the size (tiny images: as far as they
    allow). (b, 1, H, W) each -> (b, 1, about H/4, W/4)."""
    difference = ir - vi
    for _ in range(2):
        if min(int(difference.shape[-2]), int(difference.shape[-1])) > 2:
            difference = pyr_down(difference)
    return torch.sigmoid(SELECT_SHARPNESS * difference)


def source_blend(ir: torch.Tensor, vi: torch.Tensor, levels: int) -> torch.Tensor:
    """The decoder's selection alone: every band of a region from its brighter source, with no
    gain, contrast or head (what PyramidDecoder(levels) outputs with unit gains and contrast and a
    zero head). The part of a fused image that only passes its sources on; (b, 1, H, W) in [0, 1]."""
    brighter = brighter_source(ir, vi)
    sources = laplacian_pyramid(torch.cat((ir, vi), dim=1), pyramid_levels(ir.shape[-2], ir.shape[-1], levels))
    bands = [b[:, 1:] + _resize(brighter, b.shape[-2:]) * (b[:, :1] - b[:, 1:]) for b in sources]
    return reconstruct(bands).clamp(0, 1)


def _square_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2 radius + 1)^2 square around every pixel (separable; same size)."""
    x = F.max_pool2d(x, (1, 2 * radius + 1), stride=1, padding=(0, radius))
    return F.max_pool2d(x, (2 * radius + 1, 1), stride=1, padding=(radius, 0))


def warm_envelope(ir: torch.Tensor, margin: int) -> torch.Tensor:
    """E in [0, 1] on the quarter grid: 1 on and within ``margin`` pixels (full size, multiple of 4)
    of a warm structure, a structure of the thermal image that stands at least WARM_LEVEL above its
    opening by a square of half side 4 WARM_RADIUS (a white top-hat, as the warm-target measure):

        x = pyr_down^2(ir),   t = x - open(x)   (the white top-hat)
        E = box_5(dilate_{margin/4}(clip((t - WARM_LEVEL + WARM_WIDTH) / (2 WARM_WIDTH), 0, 1)))

    E is exactly 0 away from warm structures. (b, 1, H, W) -> (b, 1, about H/4, W/4)."""
    x = ir
    for _ in range(2):
        if min(int(x.shape[-2]), int(x.shape[-1])) > 2:
            x = pyr_down(x)
    opened = _square_pool(-_square_pool(-x, WARM_RADIUS), WARM_RADIUS)  # erosion, then dilation
    warm = ((x - opened - WARM_LEVEL + WARM_WIDTH) / (2 * WARM_WIDTH)).clamp(0, 1)
    if margin >= 4:
        warm = _square_pool(warm, margin // 4)
    return F.avg_pool2d(warm, 5, stride=1, padding=2, count_include_pad=False)


class PyramidDecoder(nn.Module):
    """Fused features (b, h, w, C) + sources (b, 1, H, W) -> fused luminance (b, 1, H, W) in [0, 1].
    ``stretch``, ``head_region``, ``warm_margin``, ``head_maps``: the config's options (module doc)."""

    def __init__(self, dim: int, levels: int, stretch: float = 1.0, head_region: str = "everywhere",
                 warm_margin: int = 8, head_maps: str = "all"):
        super().__init__()
        self.levels, self.stretch, self.warm_margin = levels, stretch, warm_margin
        self.warm_only = head_region == "warm"
        self.selection_only = head_maps == "selection"
        self.body = nn.Conv2d(dim, dim, 3, padding=1)
        self.head = nn.Conv2d(dim, 2 * levels + 1, 1)  # (a_k, g_k) per detail band, then (a_B, c, o)
        # Small random weights, zero bias: the untrained network is its rule to within a few grey
        # levels, and the trunk receives gradient from the first step (a zero head passes none).
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)

    def maps(self, f: torch.Tensor) -> torch.Tensor:
        """Fused features (b, h, w, C) -> the head's 2L+1 maps (b, 2L+1, h, w)."""
        return self.head(F.gelu(self.body(f.permute(0, 3, 1, 2))))

    def forward(self, f: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        maps = self.maps(f)
        if self.warm_only:
            maps = maps * _resize(warm_envelope(ir, self.warm_margin), maps.shape[-2:])
        return decode(maps, ir, vi, self.levels, self.stretch, self.selection_only)


def decode(maps: torch.Tensor | None, ir: torch.Tensor, vi: torch.Tensor, levels: int, stretch: float = 1.0,
           selection_only: bool = False) -> torch.Tensor:
    """The decoder's equations (module docstring) for head maps (b, 2L+1, h, w) on any grid;
    ``maps=None`` is the rule alone (every map zero), computed without a network. ``stretch``: the
    output stretch s; ``selection_only``: only the selection maps a_k, a_B are used."""
    levels = pyramid_levels(ir.shape[-2], ir.shape[-1], levels)
    sources = laplacian_pyramid(torch.cat((ir, vi), dim=1), levels)  # both in one pass: channel 0 ir, 1 vi
    brighter = brighter_source(ir, vi)

    def band_maps(first: int, count: int, size) -> list:
        if maps is None:
            return [None] * count
        return list(_resize(maps[:, first:first + count], size).unbind(1))

    def selection(logits: torch.Tensor | None, size) -> torch.Tensor:
        p = _resize(brighter, size).clamp(LOGIT_EPS, 1 - LOGIT_EPS)
        if logits is None:
            return p
        return torch.sigmoid(torch.log(p) - torch.log1p(-p) + SELECT_RANGE * torch.tanh(logits[:, None]))

    bands = []
    for k, (d_ir, d_vi) in enumerate(band.split(1, dim=1) for band in sources[:-1]):
        a, g = band_maps(2 * k, 2, d_ir.shape[-2:])
        g = None if selection_only else g
        d = d_vi + selection(a, d_ir.shape[-2:]) * (d_ir - d_vi)
        gain = _of_band(DETAIL_GAIN, k)
        if g is not None:
            gain = gain * torch.exp(GAIN_RANGE * torch.tanh(g[:, None]))
        limit = _of_band(BOOST_LIMIT, k)
        above_noise = torch.sigmoid((d.abs() - CORING) / CORING_WIDTH)
        bands.append(d + (gain - 1) * above_noise * limit * torch.tanh(d / limit))
    b_ir, b_vi = sources[-1].split(1, dim=1)
    a_b, c, offset = band_maps(2 * len(bands), 3, b_ir.shape[-2:])
    if selection_only:
        c = offset = None
    base = b_vi + selection(a_b, b_ir.shape[-2:]) * (b_ir - b_vi)
    mean = base.mean(dim=(-2, -1), keepdim=True)
    contrast = CONTRAST if c is None else CONTRAST * torch.exp(CONTRAST_RANGE * torch.tanh(c[:, None]))
    shift = 0.0 if offset is None else OFFSET_RANGE * torch.tanh(offset[:, None])
    bands.append(mean + contrast * (base - mean) + shift)
    fused = reconstruct(bands).clamp(0, 1)
    if stretch != 1.0:
        mean = fused.mean(dim=(-2, -1), keepdim=True)
        fused = (mean + stretch * (fused - mean)).clamp(0, 1)
    return fused


def rule_fusion(ir: torch.Tensor, vi: torch.Tensor, levels: int, stretch: float = 1.0) -> torch.Tensor:
    """The decoder's built-in rule without the network (every head map zero): the brighter source
    region by region, with the starting detail gains and contrast, and the output stretch s.
    (b, 1, H, W) -> (b, 1, H, W)."""
    return decode(None, ir, vi, levels, stretch)


def warm_rule_fusion(ir: torch.Tensor, vi: torch.Tensor, levels: int, stretch: float = WARM_RULE_STRETCH,
                     margin: int = WARM_RULE_MARGIN, select: float = WARM_RULE_SELECT) -> torch.Tensor:
    """The warm rule: the decoder's rule, except that on the warm envelope E (``warm_envelope``,
    ``margin`` px) every band and the base take the thermal image, and the output is stretched:

        a_k = a_B = select E   (gain, contrast and offset maps 0),   fused = decode(a, s = stretch)

    i.e. the decoder with a constant head confined to E (``head_region="warm"``, ``head_maps=
    "selection"``, head weight 0, bias ``select``), computed without the network on the quarter
    grid. A warm target keeps its thermal contrast in bright visible surroundings (smoke, daylight)
    where the plain rule takes the visible image. (b, 1, H, W) -> (b, 1, H, W)."""
    envelope = warm_envelope(ir, margin)
    levels = pyramid_levels(ir.shape[-2], ir.shape[-1], levels)
    selection, zero = select * envelope, torch.zeros_like(envelope)
    maps = torch.cat([selection, zero] * (levels - 1) + [selection, zero, zero], dim=1)
    return decode(maps, ir, vi, levels, stretch, selection_only=True)
