"""Colour helpers shared by fusers, metrics and data loading.

Contract:
- ``bgr_to_ycrcb(bgr_u8) -> (y, cr, cb)``: float32 HxW each in [0, 1], BT.601 exactly as
  OpenCV's ``COLOR_BGR2YCrCb`` on float input (Y = 0.299R + 0.587G + 0.114B,
  Cr = 0.713(R - Y) + 0.5, Cb = 0.564(B - Y) + 0.5).
- ``ycrcb_to_bgr(y, cr, cb) -> bgr u8``: the inverse, clipped to [0, 255] and rounded.
- ``unit_to_u8(x)``: float [0, 1] -> u8 (x 255, rounded, clipped), the one conversion of fused output.
- ``to_gray(img) -> HxW u8``: MATLAB ``rgb2gray`` weights 0.2989R + 0.5870G + 0.1140B, rounded.
  Gray input (HxW, HxWx1, or HxWx3 with three equal channels) passes through unchanged.

The fused-colour recipe of the paper (Sec. IV-B: fuse luminance, keep the visible chroma) is
``ycrcb_to_bgr(fused_y, cr_vi, cb_vi)``.
"""
from __future__ import annotations

import cv2
import numpy as np

_RGB2GRAY_BGR = np.array([0.1140, 0.5870, 0.2989], dtype=np.float64)  # B, G, R order


def bgr_to_ycrcb(bgr_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BGR uint8 HxWx3 -> (Y, Cr, Cb), float32 HxW in [0, 1] (BT.601, OpenCV convention)."""
    if bgr_u8.ndim != 3 or bgr_u8.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr_u8.shape}")
    ycrcb = cv2.cvtColor(bgr_u8.astype(np.float32) / 255.0, cv2.COLOR_BGR2YCrCb)
    return ycrcb[..., 0].copy(), ycrcb[..., 1].copy(), ycrcb[..., 2].copy()


def unit_to_u8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (times 255, rounded, clipped)."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def ycrcb_to_bgr(y: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """(Y, Cr, Cb) float HxW in [0, 1] -> BGR uint8 HxWx3 (clipped, rounded)."""
    ycrcb = np.stack([y, cr, cb], axis=-1).astype(np.float32)
    return unit_to_u8(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR))


def to_gray(img: np.ndarray) -> np.ndarray:
    """Any u8 image -> HxW u8 gray with MATLAB rgb2gray weights (rounded); gray passes through."""
    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4 image, got shape {img.shape}")
    if img.shape[2] == 1:
        return img[..., 0]
    bgr = img[..., :3]
    if np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 1], bgr[..., 2]):
        return np.ascontiguousarray(bgr[..., 0])
    gray = bgr.astype(np.float64) @ _RGB2GRAY_BGR
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def fuse_in_colour(fuse_y, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Fuse with a luminance fuser ``fuse_y(ir_y, vi_y) -> y`` (float32 [0, 1] HxW each).

    ir HxW (or HxWx3) u8 + vi BGR u8 (or gray u8) of equal HxW -> fused in vi's layout: the fused
    Y is recombined with the visible Cr/Cb; a gray visible image gives a gray result.
    """
    ir_y = to_gray(ir).astype(np.float32) / 255.0
    if vi.ndim == 2:
        return unit_to_u8(fuse_y(ir_y, vi.astype(np.float32) / 255.0))
    y, cr, cb = bgr_to_ycrcb(vi)
    return ycrcb_to_bgr(fuse_y(ir_y, y), cr, cb)
