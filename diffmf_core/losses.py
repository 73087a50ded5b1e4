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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
