"""Hand-computable checks of the fusion metrics and colour helpers."""
import math

import cv2
import numpy as np
import pytest

from diffmf_core import metrics as M
from diffmf_core.color import bgr_to_ycrcb, to_gray, ycrcb_to_bgr

RNG = np.random.default_rng(0)
TEXTURE = cv2.GaussianBlur(RNG.integers(0, 256, (48, 64)).astype(np.uint8), (5, 5), 1.0)
SMALL = np.array([[0, 1], [2, 3]], dtype=np.uint8)


def test_constant_image_has_no_information():
    c = np.full((32, 40), 77, np.uint8)
    assert M.entropy(c) == 0.0
    assert M.std_dev(c) == 0.0
    assert M.spatial_frequency(c) == 0.0
    assert M.average_gradient(c) == 0.0


def test_entropy_checkerboard_is_one_bit():
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert M.entropy(board) == pytest.approx(1.0)


def test_sd_sf_ag_small_array():
    assert M.std_dev(SMALL) == pytest.approx(math.sqrt(5 / 3))  # sample std of 0..3
    assert M.spatial_frequency(SMALL) == pytest.approx(math.sqrt(1 + 4))  # RF^2 = 1, CF^2 = 4
    # MATLAB gradient of a 2x2: gx = 1, gy = 2 everywhere; 4 * sqrt(5/2) / ((2-1)(2-1))
    assert M.average_gradient(SMALL) == pytest.approx(4 * math.sqrt(2.5))


def test_ag_of_ramp():
    ramp = np.tile(np.arange(0, 10, 2, dtype=np.uint8), (4, 1))  # 4x5, slope 2 along x
    assert M.average_gradient(ramp) == pytest.approx(20 * math.sqrt(2) / (3 * 4))


def test_mi_with_itself_is_twice_entropy_and_zero_against_constant():
    assert M.mutual_information(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(2 * M.entropy(TEXTURE))
    const = np.full_like(TEXTURE, 9)
    assert M.mutual_information(TEXTURE, const, const) == pytest.approx(0.0, abs=1e-12)


def test_vif_identity_and_constant():
    assert M.vifp_mscale(TEXTURE, TEXTURE) == pytest.approx(1.0, abs=1e-9)
    assert M.vif(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(2.0, abs=1e-9)
    assert M.vifp_mscale(TEXTURE, np.full_like(TEXTURE, 100)) == pytest.approx(0.0, abs=1e-12)
    noisy = np.clip(TEXTURE + RNG.normal(0, 20, TEXTURE.shape), 0, 255).astype(np.uint8)
    assert 0.0 < M.vifp_mscale(TEXTURE, noisy) < 1.0


def test_qabf_perfect_and_flat():
    tg, kg, dg, ta, ka, da = 0.9994, -15, 0.5, 0.9879, -22, 0.8
    perfect = tg / (1 + math.exp(kg * (1 - dg))) * ta / (1 + math.exp(ka * (1 - da)))
    assert M.qabf(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(perfect)
    assert M.qabf(np.zeros_like(TEXTURE), TEXTURE, TEXTURE) < 0.01  # zero padding: black has no edges


def test_ssim_identity_and_constant_luminance_term():
    assert M.ssim_index(TEXTURE, TEXTURE) == pytest.approx(1.0)
    assert M.ssim(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(2.0)
    a, b = np.full((20, 20), 100, np.uint8), np.full((20, 20), 50, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.ssim_index(a, b) == pytest.approx((2 * 100 * 50 + c1) / (100 ** 2 + 50 ** 2 + c1))


def test_evaluate_pair_order_and_colour_input():
    bgr = np.dstack([TEXTURE, 255 - TEXTURE, TEXTURE // 2])
    res = M.evaluate_pair(bgr, TEXTURE, bgr)
    assert list(res) == M.METRICS
    assert res == M.evaluate_pair(to_gray(bgr), TEXTURE, to_gray(bgr))
    with pytest.raises(ValueError):
        M.evaluate_pair(TEXTURE, TEXTURE[:-1], TEXTURE)


def test_to_gray_matlab_weights_and_passthrough():
    px = np.array([[[10, 20, 30]]], np.uint8)  # B, G, R
    assert to_gray(px)[0, 0] == round(0.2989 * 30 + 0.5870 * 20 + 0.1140 * 10)
    gray3 = np.dstack([TEXTURE] * 3)
    assert np.array_equal(to_gray(gray3), TEXTURE)
    assert to_gray(TEXTURE) is TEXTURE


def test_ycrcb_matches_opencv_and_round_trips():
    bgr = RNG.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    y, cr, cb = bgr_to_ycrcb(bgr)
    assert y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb).astype(np.float32) / 255
    assert np.abs(y - ref[..., 0]).max() <= 1 / 255
    assert np.abs(cr - ref[..., 1]).max() <= 1.5 / 255
    assert np.abs(ycrcb_to_bgr(y, cr, cb).astype(int) - bgr).max() <= 1
