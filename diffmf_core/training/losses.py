"""Training loss of DIFF-MF (paper Sec. III-D, Eq. 11-14; follows SwinFusion).

Inputs are Bx1xHxW luminance tensors in [0, 1] (fused, ir, vi).
- Eq. 11  L_ssim = w1 (1 - ssim(f, ir)) + w2 (1 - ssim(f, vi)); ``ssim_torch``: 11x11 Gaussian
          window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2 (data range 1), mean over the valid region.
- Eq. 12  L_text = mean | |grad f| - max(|grad ir|, |grad vi|) |, with |grad x| = |Sobel_x * x| +
          |Sobel_y * x| (the L1 gradient magnitude, as SwinFusion's Sobelxy), reflect padding.
          Written as mean relu(T - G_f) + ``text_overshoot`` * mean relu(G_f - T): the default 1.0
          is Eq. 12 exactly; a smaller value stops penalising a fused gradient that is stronger
          than both sources' (the symmetric L1 forbids being sharper than the sources).
- Eq. 13  L_int = mean |f - M(ir, vi)|, M = element-wise max (``aggregation="max"``) or mean.
- Eq. 14  L_total = lambda_ssim L_ssim + lambda_text L_text + lambda_int L_int.
``FusionLoss(...)(fused, ir, vi)`` returns (total, {"ssim", "text", "int"} detached parts).

``ScoreLoss`` is the alternative that ``diffmf train --loss score`` uses: one minus the validation
score (the paper's six metrics against two classical rules, see diffmf_core.training.train) computed with
differentiable versions of the metrics on each training crop. ``RuleLoss`` (``--loss rule``) keeps
the output at the decoder's rule away from warm targets; ``TargetLoss`` (``--lambda-target``) keeps
each warm target's thermal contrast.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffmf_core.baselines import fuse_gff, fuse_laplacian
from diffmf_core.modules.pyramid_decoder import rule_fusion


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_torch(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
               data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """SSIM of Bx1xHxW tensors (Wang et al. 2004, Gaussian window, valid region).

    reduction "mean" -> scalar, "none" -> per-image B tensor. The window shrinks to the largest
    odd size that fits images smaller than ``window_size``.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected equal BxCxHxW shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    side = min(x.shape[-2:])
    size = min(window_size, side - (1 - side % 2))
    channels = x.shape[1]
    win = _gaussian_window(size, sigma, x.device, x.dtype).expand(channels, 1, size, size)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    s_xx = blur(x * x) - mu_x * mu_x
    s_yy = blur(y * y) - mu_y * mu_y
    s_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (s_xx + s_yy + c2))
    per_image = ssim_map.flatten(1).mean(dim=1)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class SobelGradient(nn.Module):
    """|Sobel_x * x| + |Sobel_y * x| per channel, same size as the input (reflect padding)."""

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernel", torch.stack([kx, kx.t()])[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="reflect")
        g = F.conv2d(padded, self.kernel.to(x.dtype))
        return (g[:, :1].abs() + g[:, 1:].abs()).reshape(b, c, h, w)


class FusionLoss(nn.Module):
    """L_total of Eq. 14 with the SSIM (Eq. 11), texture (Eq. 12) and intensity (Eq. 13) terms."""

    PARTS = ("ssim", "text", "int")

    def __init__(self, lambda_ssim: float = 10.0, lambda_text: float = 20.0, lambda_int: float = 20.0,
                 w1: float = 0.5, w2: float = 0.5, aggregation: str = "max", text_overshoot: float = 1.0):
        super().__init__()
        if aggregation not in ("max", "mean"):
            raise ValueError(f"aggregation must be 'max' or 'mean', got {aggregation!r}")
        self.lambda_ssim, self.lambda_text, self.lambda_int = lambda_ssim, lambda_text, lambda_int
        if text_overshoot < 0:
            raise ValueError(f"text_overshoot must be >= 0, got {text_overshoot!r}")
        self.w1, self.w2, self.aggregation, self.text_overshoot = w1, w2, aggregation, text_overshoot
        self.sobel = SobelGradient()

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l_ssim = self.w1 * (1 - ssim_torch(fused, ir)) + self.w2 * (1 - ssim_torch(fused, vi))
        target_grad = torch.maximum(self.sobel(ir), self.sobel(vi))
        excess = self.sobel(fused) - target_grad
        l_text = F.relu(-excess).mean() + self.text_overshoot * F.relu(excess).mean()
        target = torch.maximum(ir, vi) if self.aggregation == "max" else (ir + vi) * 0.5
        l_int = F.l1_loss(fused, target)
        total = self.lambda_ssim * l_ssim + self.lambda_text * l_text + self.lambda_int * l_int
        return total, {"ssim": l_ssim.detach(), "text": l_text.detach(), "int": l_int.detach()}


# --- the validation score as a loss ------------------------------------------------------------
# Differentiable counterparts of diffmf_core.training.metrics on Bx1xHxW tensors in [0, 1] (grey levels
# 0..255 inside, as the metrics), each returning one value per image. EN and MI spread every pixel
# over its two nearest histogram bins (linear binning) so that they have a gradient; the others
# are the metrics' own formulas. test/test_losses.py checks them against diffmf_core.training.metrics.

def soft_entropy(x: torch.Tensor) -> torch.Tensor:
    """EN: entropy (bits) of the 256-bin grey histogram, linear binning."""
    v = (x * 255).clamp(0, 255).flatten(1)
    lo = v.detach().floor().clamp(max=254)
    w = v - lo
    idx = lo.long()
    hist = torch.zeros(v.shape[0], 256, device=x.device, dtype=x.dtype)
    hist = hist.scatter_add(1, idx, 1 - w).scatter_add(1, idx + 1, w)
    p = hist / v.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


def std_dev_t(x: torch.Tensor) -> torch.Tensor:
    """SD: population standard deviation in grey levels."""
    return (x * 255).flatten(1).std(1, unbiased=False)


def spatial_frequency_t(x: torch.Tensor) -> torch.Tensor:
    """SF = sqrt(mean squared row differences + mean squared column differences)."""
    g = x * 255
    return ((g[..., :, 1:] - g[..., :, :-1]).pow(2).mean((1, 2, 3))
            + (g[..., 1:, :] - g[..., :-1, :]).pow(2).mean((1, 2, 3))).sqrt()


def average_gradient_t(x: torch.Tensor) -> torch.Tensor:
    """AG: sum sqrt((gx^2 + gy^2) / 2) / ((H - 1)(W - 1)) with MATLAB's gradient (central
    differences inside, one-sided at the borders)."""
    g = x * 255

    def gradient(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        inner = (t.narrow(dim, 2, n - 2) - t.narrow(dim, 0, n - 2)) / 2
        first = t.narrow(dim, 1, 1) - t.narrow(dim, 0, 1)
        last = t.narrow(dim, n - 1, 1) - t.narrow(dim, n - 2, 1)
        return torch.cat((first, inner, last), dim)

    gx, gy = gradient(g, 3), gradient(g, 2)
    h, w = x.shape[-2:]
    return ((gx * gx + gy * gy) / 2 + 1e-8).sqrt().sum((1, 2, 3)) / ((h - 1) * (w - 1))


def soft_mutual_information(x: torch.Tensor, source: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """MI(x, source) in bits on a bins x bins joint histogram; linear binning along x (the
    source carries no gradient). Fewer bins than the metric's 256: a training crop has too few
    pixels to fill 65,536 joint bins."""
    b = x.shape[0]
    v = (x * (bins - 1)).clamp(0, bins - 1).flatten(1)
    lo = v.detach().floor().clamp(max=bins - 2)
    w = v - lo
    j = (source * (bins - 1)).round().clamp(0, bins - 1).flatten(1).long()
    idx = lo.long() * bins + j
    hist = torch.zeros(b, bins * bins, device=x.device, dtype=x.dtype)
    hist = hist.scatter_add(1, idx, 1 - w).scatter_add(1, idx + bins, w)
    p = (hist / v.shape[1]).view(b, bins, bins)
    px, ps = p.sum(2, keepdim=True), p.sum(1, keepdim=True)
    return (p * (torch.log2(p.clamp_min(1e-12)) - torch.log2((px * ps).clamp_min(1e-12)))).sum((1, 2))


def vifp_mscale_t(ref: torch.Tensor, dist: torch.Tensor, sigma_nsq: float = 2.0) -> torch.Tensor:
    """Multiscale pixel-domain VIF of ``dist`` against ``ref`` (Sheikh & Bovik 2006), as
    ``metrics.vifp_mscale``: four scales, Gaussian windows of 17, 9, 5, 3 pixels, 'valid' filtering."""
    ref, dist = ref * 255, dist * 255
    num = den = torch.zeros(ref.shape[0], device=ref.device, dtype=ref.dtype)
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_window(n, n / 5.0, ref.device, ref.dtype)
        if scale > 1:
            ref, dist = F.conv2d(ref, win)[..., ::2, ::2], F.conv2d(dist, win)[..., ::2, ::2]
        if min(ref.shape[-2:]) < n:
            break
        mu1, mu2 = F.conv2d(ref, win), F.conv2d(dist, win)
        s1 = (F.conv2d(ref * ref, win) - mu1 * mu1).clamp_min(0)
        s2 = (F.conv2d(dist * dist, win) - mu2 * mu2).clamp_min(0)
        s12 = F.conv2d(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + eps)
        informative = (s1 >= eps) & (s2 >= eps) & (g >= 0)  # elsewhere: no information carried
        sv = torch.where(informative, s2 - g * s12, s2).clamp_min(eps)
        g = torch.where(informative, g, torch.zeros_like(g))
        s1 = torch.where(s1 >= eps, s1, torch.zeros_like(s1))
        num = num + torch.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum((1, 2, 3))
        den = den + torch.log10(1 + s1 / sigma_nsq).sum((1, 2, 3))
    return num / den.clamp_min(1e-6)


def paper_metrics_t(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """(B, 6): EN, SD, SF, MI, VIF, AG of each fused image (the order of train.VAL_METRICS)."""
    return torch.stack([
        soft_entropy(fused), std_dev_t(fused), spatial_frequency_t(fused),
        soft_mutual_information(fused, ir) + soft_mutual_information(fused, vi),
        vifp_mscale_t(ir, fused) + vifp_mscale_t(vi, fused), average_gradient_t(fused)], dim=1)


class ScoreLoss(nn.Module):
    """1 - the validation score of ``diffmf train`` on each training crop: each of the six metrics
    (``paper_metrics_t``) divided by the better of two classical rules on that crop (a Laplacian
    pyramid with a max base and GFF, ``diffmf_core.baselines``), capped at ``cap``, averaged.
    Minimising it trains the network for what the checkpoint choice measures: sharper and more
    contrasted than the classical rules (SD, SF, AG, EN) while as faithful to both sources (MI, VIF);
    the cap stops one metric from buying the others."""

    PARTS = ("EN", "SD", "SF", "MI", "VIF", "AG")

    def __init__(self, cap: float = 1.1):
        super().__init__()
        self.cap = cap

    @torch.no_grad()
    def reference(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        """(B, 6): per crop, the better of the two classical rules on each metric."""
        pairs = list(zip(ir[:, 0].float().cpu().numpy(), vi[:, 0].float().cpu().numpy()))
        laplacian_max = np.stack([fuse_laplacian(a, b, base="max") for a, b in pairs])
        gff = np.stack([fuse_gff(a, b) for a, b in pairs])
        return torch.maximum(*(paper_metrics_t(torch.from_numpy(f[:, None]).to(ir).clamp(0, 1), ir, vi)
                               for f in (laplacian_max, gff)))

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = paper_metrics_t(fused, ir, vi) / self.reference(ir, vi).clamp_min(1e-6)
        score = ratio.clamp(max=self.cap).mean(1)
        mean_ratio = ratio.detach().mean(0)
        return 1 - score.mean(), {k: mean_ratio[i] for i, k in enumerate(self.PARTS)}


class TargetLoss:
    """Warm targets, kept: where the thermal crop has a warm target (its white top-hat by a square of
    side 2r+1, r = ``radius``, at least ``level``: the mask M), the fused image should stand out from
    its surroundings at least as much as the thermal image does. With c(x) = x - box_{2r+1}(x), a
    centre-surround contrast,

        L_target = sum M min(relu(s c(ir) - c(fused)), s relu(c(ir))) / sum M s relu(c(ir))

    with s = ``share`` (1 by default: the whole thermal contrast). 0 when every warm pixel keeps that
    share of its thermal contrast (or there is no target), 1 when they are all lost (a target darker
    than its surroundings counts as lost, no more). A share below 1 stops pushing a target that
    already stands out that much, so the push goes to the targets that are hidden. With ``norm``
    "pixels" the sum is divided by the number of pixels instead, sum M min(...) / (B H W): the lost
    contrast priced per pixel, in the units of ``RuleLoss``, so that a small hidden target buys a
    departure from the rule over about its own area, not over the whole crop. The evaluation's
    ``metrics.target_retention`` measures the same on whole blobs."""

    PARTS = ("target",)

    NORMS = ("targets", "pixels")

    def __init__(self, radius: int = 16, level: float = 20 / 255, share: float = 1.0, norm: str = "targets"):
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        if norm not in self.NORMS:
            raise ValueError(f"norm must be one of {self.NORMS}, got {norm!r}")
        self.radius, self.level, self.share, self.norm = radius, level, share, norm

    def _square(self, pool, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """``pool`` (avg or max) over the (2r+1)-square around each pixel, as a row pass then a column
        pass: the same values (windows clipped at the border) at O(r) instead of O(r^2) per pixel."""
        r, size = self.radius, 2 * self.radius + 1
        x = pool(x, (1, size), stride=1, padding=(0, r), **kwargs)
        return pool(x, (size, 1), stride=1, padding=(r, 0), **kwargs)

    def _contrast(self, x: torch.Tensor) -> torch.Tensor:
        return x - self._square(F.avg_pool2d, x, count_include_pad=False)

    def mask(self, ir: torch.Tensor) -> torch.Tensor:
        """1 on the warm pixels of ``ir`` (b, 1, h, w), 0 elsewhere."""
        eroded = -self._square(F.max_pool2d, -ir)
        opened = self._square(F.max_pool2d, eroded)
        return (ir - opened >= self.level).to(ir.dtype)

    def on_targets(self, ir: torch.Tensor) -> torch.Tensor:
        """1 on the warm pixels of ``ir`` and within 2 px of them, 0 elsewhere (their surroundings
        included): where the network may depart from its rule at a reduced price (``RuleLoss``)."""
        return F.max_pool2d(self.mask(ir), 5, stride=1, padding=2)

    def __call__(self, fused: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            m = self.mask(ir)
            c_ir = self.share * self._contrast(ir).clamp(min=0)
        lost = torch.minimum((c_ir - self._contrast(fused)).clamp(min=0), c_ir)
        if self.norm == "pixels":
            return (m * lost).mean()
        return (m * lost).sum() / (m * c_ir).sum().clamp(min=1e-6)


class RuleLoss:
    """Stay the decoder's rule except where a warm target needs otherwise. With R = ``rule_fusion(ir,
    vi)`` (with the network's output stretch), G = ``SobelGradient`` and a weight W of 1 everywhere
    but ``TARGET_WEIGHT`` on the warm pixels themselves (``TargetLoss.on_targets``; their
    surroundings keep weight 1: a target must be made to stand out by itself, not by darkening its
    surroundings into a halo),

        L_rule   = mean W |fused - R|
        L_detail = mean W (relu(G(R) - G(fused)) + v relu(G(fused) - G(R)))

    and the loss is their sum; v = ``detail_overshoot`` (0 by default: detail stronger than the
    rule's is free; 1 holds the detail at the rule's, so that sharpening beyond the rule, which
    costs faithfulness (MI, VIF) and steadiness on video, is bought only where it keeps a target).
    L_rule keeps intensities; L_detail keeps the rule's fine detail, which an intensity distance
    barely sees (losing every edge of a crop costs only a few grey levels on average). With
    ``TargetLoss`` it trains the network to decide where the rule is wrong (warm targets the
    brighter-source rule hides), changing no more than it must there, and to leave the rest as it is."""

    PARTS = ("rule", "detail")
    TARGET_WEIGHT = 0.25

    def __init__(self, levels: int, targets: TargetLoss, detail_overshoot: float = 0.0, stretch: float = 1.0):
        self.levels, self.targets, self.detail_overshoot, self.stretch = levels, targets, detail_overshoot, stretch
        self.gradient = SobelGradient()

    def __call__(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            rule = rule_fusion(ir, vi, self.levels, self.stretch)
            rule_detail = self.gradient(rule)
            weight = 1 - (1 - self.TARGET_WEIGHT) * self.targets.on_targets(ir)
        intensity = (weight * (fused - rule).abs()).mean()
        excess = self.gradient(fused) - rule_detail
        detail = (weight * ((-excess).clamp(min=0) + self.detail_overshoot * excess.clamp(min=0))).mean()
        return intensity + detail, {"rule": intensity, "detail": detail}
