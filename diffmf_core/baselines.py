"""Classical infrared-visible fusers: the evaluation baselines and the node's fallback fuser.

Luminance functions take and return float32 HxW in [0, 1]:
- ``fuse_mean``: (ir + vi) / 2.
- ``fuse_max``: element-wise maximum.
- ``fuse_laplacian``: Laplacian pyramid (up to 5 levels), max-abs detail selection, averaged base
  (Burt & Adelson 1983 / Burt & Kolczynski 1993).
- ``fuse_laplacian(base="max")`` (``laplacian_max``): the same pyramid with the element-wise
  maximum as the base (brighter targets; the strongest classical rule on EN/SD/SF/AG in this
  project's tables).
- ``fuse_rule`` (``rule``): the DIFF-MF decoder's built-in rule without the network
  (``modules.pyramid_decoder.rule_fusion``: every band of a region from its brighter source, with
  the decoder's starting detail gains and contrast); what the network's decisions are measured
  against, and a fast classical choice for the node. Needs PyTorch (imported on first use).
- ``fuse_gff``: guided filtering fusion (Li, Kang, Hu, IEEE TIP 2013): 31x31 mean-filter two-scale
  decomposition, saliency = Gaussian(11x11, sigma 5)-smoothed |3x3 Laplacian|, binary max-saliency
  weight maps refined by a guided filter (base r1 = 45, eps1 = 0.3, computed as a fast guided
  filter on a 4x subsampled grid; detail r2 = 7, eps2 = 1e-6, full resolution), refined weights
  clipped to [0, 1] and normalised to sum to one.
``ClassicalFuser(name)`` mirrors ``Fuser``: ``fuse(ir, vi)`` fuses luminance and keeps the visible
chroma (YCrCb, see color.py), returning BGR u8 (gray u8 when vi is gray); ``fuse_y`` as above.
"""
from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

from diffmf_core.common.color import fuse_in_colour

_LAPLACIAN_3x3 = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def fuse_mean(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Average of the two luminance images."""
    return ((ir.astype(np.float32) + vi.astype(np.float32)) * 0.5).astype(np.float32)


def fuse_max(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Element-wise maximum of the two luminance images."""
    return np.maximum(ir, vi).astype(np.float32)


def _laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid, current = [], img
    for _ in range(levels - 1):
        down = cv2.pyrDown(current)
        pyramid.append(current - cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0])))
        current = down
    pyramid.append(current)
    return pyramid


def fuse_laplacian(ir: np.ndarray, vi: np.ndarray, levels: int = 5, base: str = "mean") -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs detail coefficients; the coarsest level is the mean of
    the two (``base="mean"``) or their element-wise maximum (``base="max"``)."""
    levels = max(1, min(levels, int(np.log2(max(1, min(ir.shape)))) - 2))
    pa = _laplacian_pyramid(ir.astype(np.float32), levels)
    pb = _laplacian_pyramid(vi.astype(np.float32), levels)
    fused = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(pa[:-1], pb[:-1])]
    out = np.maximum(pa[-1], pb[-1]) if base == "max" else (pa[-1] + pb[-1]) * 0.5
    for detail in reversed(fused):
        out = cv2.pyrUp(out, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _box(img: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(img, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float, subsample: int = 1) -> np.ndarray:
    """Gray guided filter (He, Sun, Tang, ECCV 2010) with (2r+1)^2 box windows.

    ``subsample`` > 1 computes the linear coefficients on an area-downsampled grid and upsamples
    them bilinearly (fast guided filter, He & Sun 2015); use it only for large radii.
    """
    h, w = guide.shape
    g, p = guide, src
    if subsample > 1:
        size = (max(1, w // subsample), max(1, h // subsample))
        g = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
        p = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        r = max(1, round(r / subsample))
    mean_i, mean_p = _box(g, r), _box(p, r)
    var_i = _box(g * g, r) - mean_i * mean_i
    cov_ip = _box(g * p, r) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    mean_a, mean_b = _box(a, r), _box(mean_p - a * mean_i, r)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide + mean_b


def fuse_gff(ir: np.ndarray, vi: np.ndarray, r1: int = 45, eps1: float = 0.3,
             r2: int = 7, eps2: float = 1e-6) -> np.ndarray:
    """Guided filtering fusion (Li et al. 2013) of two luminance images in [0, 1]."""
    sources = [ir.astype(np.float32), vi.astype(np.float32)]
    bases = [cv2.blur(s, (31, 31), borderType=cv2.BORDER_REFLECT) for s in sources]
    saliency = [cv2.GaussianBlur(np.abs(cv2.filter2D(s, -1, _LAPLACIAN_3x3, borderType=cv2.BORDER_REFLECT)),
                                 (11, 11), 5, borderType=cv2.BORDER_REFLECT) for s in sources]
    ir_wins = (saliency[0] >= saliency[1]).astype(np.float32)
    masks = [ir_wins, 1.0 - ir_wins]
    w_base = [np.clip(guided_filter(s, m, r1, eps1, subsample=4), 0, 1) for s, m in zip(sources, masks)]
    w_detail = [np.clip(guided_filter(s, m, r2, eps2), 0, 1) for s, m in zip(sources, masks)]
    sum_b = w_base[0] + w_base[1] + 1e-6
    sum_d = w_detail[0] + w_detail[1] + 1e-6
    base = (w_base[0] * bases[0] + w_base[1] * bases[1]) / sum_b
    detail = (w_detail[0] * (sources[0] - bases[0]) + w_detail[1] * (sources[1] - bases[1])) / sum_d
    return np.clip(base + detail, 0.0, 1.0).astype(np.float32)


def fuse_rule(ir: np.ndarray, vi: np.ndarray, levels: int = 5, stretch: float = 1.0) -> np.ndarray:
    """The DIFF-MF decoder's rule alone (no trunk, no head) on two luminance images in [0, 1], with
    a network's pyramid levels and output stretch (defaults: the shipped network's)."""
    import torch

    from diffmf_core.modules.pyramid_decoder import rule_fusion

    def tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]

    with torch.inference_mode():
        return rule_fusion(tensor(ir), tensor(vi), levels, stretch)[0, 0].numpy()


CLASSICAL_FUSERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": fuse_mean,
    "max": fuse_max,
    "laplacian": fuse_laplacian,
    "laplacian_max": functools.partial(fuse_laplacian, base="max"),
    "gff": fuse_gff,
    "rule": fuse_rule,
}


class ClassicalFuser:
    """A classical fuser with the Fuser interface (``name``, ``device``, ``fuse``, ``fuse_y``)."""

    device = "cpu"

    def __init__(self, name: str, **options):
        """``options``: keyword arguments of the fuse function (e.g. ``levels``, ``stretch`` of the rule)."""
        if name not in CLASSICAL_FUSERS:
            raise ValueError(f"unknown classical fuser {name!r}; choose from {sorted(CLASSICAL_FUSERS)}")
        self.name = name
        self._fn = functools.partial(CLASSICAL_FUSERS[name], **options) if options else CLASSICAL_FUSERS[name]

    def fuse_y(self, ir_y: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
        """float32 [0, 1] HxW luminance pair -> fused float32 [0, 1] HxW."""
        if ir_y.shape != vi_y.shape:
            raise ValueError(f"size mismatch: ir {ir_y.shape}, vi {vi_y.shape}")
        return np.clip(self._fn(ir_y, vi_y), 0.0, 1.0).astype(np.float32)

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """ir HxW (or HxWx3) u8 + vi BGR u8 (or gray u8) of equal HxW -> fused in vi's layout."""
        return fuse_in_colour(self.fuse_y, ir, vi)
