"""Reference-free fusion metrics (paper Table I: EN, SD, SF, MI, VIF, AG; plus Qabf and SSIM).

Conventions follow the field's MATLAB evaluation code (Linfeng-Tang/Evaluation-for-Image-Fusion,
VIFB): inputs are uint8 gray images (colour is converted with ``to_gray``, i.e. MATLAB rgb2gray),
computed in float64 on the [0, 255] scale. All metrics are "higher is better".

- EN   entropy of the 256-bin histogram, bits.
- SD   population standard deviation (divides by N) of the uint8 gray image, as the MATLAB
       evaluation code (not MATLAB ``std2``, which divides by N - 1; the two differ by a factor
       sqrt(N / (N - 1)), about 4e-4 absolute at 280x280).
- SF   sqrt(RF^2 + CF^2), RF^2 / CF^2 = mean squared horizontal / vertical first difference.
- MI   MI(f, ir) + MI(f, vi), 256x256 joint histograms with exact bins, bits. (The MATLAB code
       saturates a uint8 +1 index, so its levels 254 and 255 share a joint bin; that quirk is not
       reproduced: values can be up to a few 1e-2 lower than the MATLAB code's on images using
       both levels.)
- VIF  VIF(ir, f) + VIF(vi, f), multiscale pixel-domain VIF (Sheikh & Bovik ``vifp_mscale``:
       4 scales, Gaussian windows of size 2^(5-s)+1 with sigma = size/5, sigma_n^2 = 2).
- AG   MATLAB ``gradient`` (central differences inside, one-sided at the edges),
       sum of sqrt((gx^2 + gy^2) / 2) divided by (H - 1)(W - 1).
- Qabf Xydeas-Petrovic edge preservation (3x3 Sobel, zero padding, L = 1, Tg = 0.9994,
       kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8), weighted by the source gradient
       strengths, exactly as the MATLAB code: its ``conv2`` flips the kernels, so the horizontal
       response is the negative of a Sobel correlation (the orientation atan(gy / gx) changes
       sign, which matters wherever one image has gx == 0, orientation pi/2, and the other not);
       the strength ratio is min(g, gF) / max(g, gF) except where g == gF, where the code takes
       gF itself (not 1). Both quirks are kept so values match the field's published numbers
       (ignoring them shifts Qabf by up to about 1e-3).
- SSIM SSIM(f, ir) + SSIM(f, vi), Wang et al. 2004 (11x11 Gaussian, sigma 1.5, K = 0.01/0.03,
       L = 255, mean over the valid region).
``evaluate_pair(fused, ir, vi)`` returns them all, keyed in ``METRICS`` order.

Not a paper metric: ``target_retention(ir, fused)``, how visible each warm target of the thermal
image stays in the fused image (docs/training.md#warm-target-retention): blobs of the thermal
image's white top-hat, their contrast against a ring around them in the fused image divided by
the same contrast in the thermal image.
"""
from __future__ import annotations

import cv2
import numpy as np

from diffmf_core.common.color import to_gray

METRICS = ["EN", "SD", "SF", "MI", "VIF", "AG", "Qabf", "SSIM"]


def _f64(img: np.ndarray) -> np.ndarray:
    return to_gray(img).astype(np.float64)


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def _filter_valid(img: np.ndarray, k1d: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only fully-overlapping positions (MATLAB filter2 'valid')."""
    r = len(k1d) // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, k1d, k1d, borderType=cv2.BORDER_CONSTANT)
    return out[r:img.shape[0] - r, r:img.shape[1] - r]


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def entropy(img: np.ndarray) -> float:
    """EN: Shannon entropy (bits) of the 256-bin gray histogram."""
    return _entropy_bits(np.bincount(to_gray(img).ravel(), minlength=256))


def std_dev(img: np.ndarray) -> float:
    """SD: population standard deviation (divides by N), as the MATLAB evaluation code."""
    return float(_f64(img).std())


def spatial_frequency(img: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) with mean squared first differences along rows / columns."""
    g = _f64(img)
    rf2 = np.mean(np.diff(g, axis=1) ** 2) if g.shape[1] > 1 else 0.0
    cf2 = np.mean(np.diff(g, axis=0) ** 2) if g.shape[0] > 1 else 0.0
    return float(np.sqrt(rf2 + cf2))


def average_gradient(img: np.ndarray) -> float:
    """AG: sum sqrt((gx^2 + gy^2) / 2) over the image / ((H - 1)(W - 1)), gx, gy = MATLAB gradient."""
    g = _f64(img)
    h, w = g.shape
    if h < 2 or w < 2:
        return 0.0
    gy, gx = np.gradient(g)
    return float(np.sqrt((gx * gx + gy * gy) / 2.0).sum() / ((h - 1) * (w - 1)))


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    a, b = to_gray(a).ravel(), to_gray(b).ravel()
    joint = np.bincount(a.astype(np.int64) * 256 + b, minlength=256 * 256).reshape(256, 256)
    return (_entropy_bits(joint.sum(axis=1)) + _entropy_bits(joint.sum(axis=0))
            - _entropy_bits(joint.ravel()))


def mutual_information(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """MI = MI(f, ir) + MI(f, vi) in bits (256-bin histograms)."""
    return _mutual_information(fused, ir) + _mutual_information(fused, vi)


def vifp_mscale(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Multiscale pixel-domain VIF of ``dist`` against ``ref`` (Sheikh & Bovik 2006); 1 for dist == ref."""
    ref, dist = _f64(ref), _f64(dist)
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        k = _gauss1d(n, n / 5.0)
        if scale > 1:
            ref, dist = _filter_valid(ref, k)[::2, ::2], _filter_valid(dist, k)[::2, ::2]
        if min(ref.shape) < n:
            break
        mu1, mu2 = _filter_valid(ref, k), _filter_valid(dist, k)
        s1 = np.maximum(_filter_valid(ref * ref, k) - mu1 * mu1, 0.0)
        s2 = np.maximum(_filter_valid(dist * dist, k) - mu2 * mu2, 0.0)
        s12 = _filter_valid(ref * dist, k) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g[flat_ref] = 0.0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0.0
        flat_dist = s2 < eps
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        neg = g < 0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        sv = np.maximum(sv, eps)
        num += np.log10(1.0 + g * g * s1 / (sv + sigma_nsq)).sum()
        den += np.log10(1.0 + s1 / sigma_nsq).sum()
    return float(num / den) if den > 0 else 0.0


def vif(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIF = vifp_mscale(ir, f) + vifp_mscale(vi, f)."""
    return vifp_mscale(ir, fused) + vifp_mscale(vi, fused)


# correlation kernels equal to the MATLAB code's conv2(img, [-1 0 1; -2 0 2; -1 0 1]) and
# conv2(img, [1 2 1; 0 0 0; -1 -2 -1]) (convolution flips the kernel)
_SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
_SOBEL_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64)


def _sobel(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.filter2D(g, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.filter2D(g, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(gx == 0, np.pi / 2, np.arctan(gy / np.where(gx == 0, 1.0, gx)))
    return strength, angle


def qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic 2000): gradient-weighted edge preservation from ir and vi into f."""
    tg, kg, dg, ta, ka, da = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8
    g_f, a_f = _sobel(_f64(fused))
    num = den = 0.0
    for src in (ir, vi):
        g_s, a_s = _sobel(_f64(src))
        with np.errstate(divide="ignore", invalid="ignore"):
            g_rel = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, g_f, g_s / g_f))
        a_rel = 1.0 - np.abs(a_s - a_f) / (np.pi / 2)
        q = tg / (1.0 + np.exp(kg * (g_rel - dg))) * ta / (1.0 + np.exp(ka * (a_rel - da)))
        num += (q * g_s).sum()
        den += g_s.sum()
    return float(num / den) if den > 0 else 0.0


def ssim_index(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two gray images on [0, 255] (11x11 Gaussian window, sigma 1.5, valid region)."""
    a, b = _f64(a), _f64(b)
    side = min(a.shape)
    k = _gauss1d(min(11, side - (1 - side % 2)), 1.5)  # largest odd window <= 11 that fits
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    s_aa = _filter_valid(a * a, k) - mu_a * mu_a
    s_bb = _filter_valid(b * b, k) - mu_b * mu_b
    s_ab = _filter_valid(a * b, k) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return float(ssim_map.mean())


def ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SSIM = SSIM(f, ir) + SSIM(f, vi)."""
    return ssim_index(fused, ir) + ssim_index(fused, vi)


_OF_FUSED = {"EN": entropy, "SD": std_dev, "SF": spatial_frequency, "AG": average_gradient}
_OF_FUSED_AND_SOURCES = {"MI": mutual_information, "VIF": vif, "Qabf": qabf, "SSIM": ssim}


def evaluate_pair(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, names=METRICS) -> dict[str, float]:
    """The metrics ``names`` (default: all METRICS, in that order) for one fused image against its
    sources (u8, gray or colour, same HxW)."""
    f, a, b = to_gray(fused), to_gray(ir), to_gray(vi)
    if not (f.shape == a.shape == b.shape):
        raise ValueError(f"size mismatch: fused {f.shape}, ir {a.shape}, vi {b.shape}")
    return {k: _OF_FUSED[k](f) if k in _OF_FUSED else _OF_FUSED_AND_SOURCES[k](f, a, b) for k in names}


# --- warm targets --------------------------------------------------------------------------------
TARGET_LEVEL = 20.0      # a warm target stands at least this many grey levels above its opening
TARGET_MIN_AREA = 12     # pixels
TARGET_MIN_CONTRAST = 10.0  # blob minus ring in the thermal image, grey levels
TARGET_MAX = 12          # the strongest targets per image
RETENTION_MAX = 2.0


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def warm_targets(ir: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Warm targets of a thermal luminance image (HxW, 0..255): connected blobs of its white top-hat
    (the image minus its opening by a disk of radius min(H, W)/10, clamped to 8..48 px) at least
    ``TARGET_LEVEL`` high, of at least ``TARGET_MIN_AREA`` pixels, standing at least
    ``TARGET_MIN_CONTRAST`` above a ring around them (from 2 px to 2 + max(3, sqrt(area)/2) px
    outside the blob). Returns up to ``TARGET_MAX`` (thermal contrast, blob mask, ring mask), the
    strongest first."""
    ir = ir.astype(np.float32)
    radius = int(np.clip(round(min(ir.shape) / 10), 8, 48))
    tophat = cv2.morphologyEx(ir, cv2.MORPH_TOPHAT, _disk(radius))
    count, labels, stats, _ = cv2.connectedComponentsWithStats((tophat >= TARGET_LEVEL).astype(np.uint8), connectivity=8)
    targets = []
    for i in range(1, count):
        area = int(stats[i, cv2.CC_STAT_AREA])
        if area < TARGET_MIN_AREA:
            continue
        blob = (labels == i).astype(np.uint8)
        grow = max(3, int(round(0.5 * np.sqrt(area))))
        ring = (cv2.dilate(blob, _disk(2 + grow)) > 0) & ~(cv2.dilate(blob, _disk(2)) > 0)
        blob = blob > 0
        if not ring.any():  # a blob that fills the image has no surroundings
            continue
        contrast = float(ir[blob].mean() - ir[ring].mean())
        if contrast >= TARGET_MIN_CONTRAST:
            targets.append((contrast, blob, ring))
    targets.sort(key=lambda t: -t[0])
    return targets[:TARGET_MAX]


def target_retention(ir: np.ndarray, fused: np.ndarray, targets: list | None = None) -> list[float]:
    """Retention of each warm target of ``ir`` (``warm_targets``, or ``targets`` found earlier in
    that image) in ``fused`` (both HxW, 0..255, luminance): the fused contrast of the blob against
    its ring divided by the thermal contrast, clipped to [0, RETENTION_MAX]. 1: as visible as in the
    thermal image; 0: gone (or inverted)."""
    fused = fused.astype(np.float32)
    return [float(np.clip((fused[blob].mean() - fused[ring].mean()) / contrast, 0.0, RETENTION_MAX))
            for contrast, blob, ring in (warm_targets(ir) if targets is None else targets)]
