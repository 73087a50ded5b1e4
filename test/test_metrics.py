"""Hand-computable checks of the fusion metrics and colour helpers, and the metrics pinned to
independent reference values (../shared/data/metrics_reference, computed with an implementation
checked against the MATLAB evaluation code; skipped where the folder is absent)."""
import csv
import math

import cv2
import numpy as np
import pytest

from diffmf_core import metrics as M
from diffmf_core.color import bgr_to_ycrcb, to_gray, ycrcb_to_bgr
from diffmf_core.paths import shared_data_dir

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
    assert M.std_dev(SMALL) == pytest.approx(math.sqrt(5 / 4))  # population std of 0..3
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
    # identical images: orientation term perfect; the strength term takes g itself where the
    # strengths are equal (MATLAB convention), and every nonzero integer Sobel magnitude is >= 1,
    # so each edge pixel scores at least the ratio-1 value and at most Tg * Ta / (1 + e^(ka (1 - Da)))
    ratio_one = tg / (1 + math.exp(kg * (1 - dg))) * ta / (1 + math.exp(ka * (1 - da)))
    assert ratio_one <= M.qabf(TEXTURE, TEXTURE, TEXTURE) <= tg * ta / (1 + math.exp(ka * (1 - da)))
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


# --- mutation killers: non-identical sources with hand-computed values ------------------------------

BOARD = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)  # 1 bit of entropy


def test_mi_adds_the_information_from_each_source():
    """MI(f, ir) + MI(f, vi): a fused image equal to one source and independent of the other scores
    that source's entropy (1 bit here), whichever source it is."""
    const = np.full_like(BOARD, 128)
    assert M.mutual_information(BOARD, BOARD, const) == pytest.approx(1.0, abs=1e-12)
    assert M.mutual_information(BOARD, const, BOARD) == pytest.approx(1.0, abs=1e-12)
    # statistically independent halves: f = [0 0 1 1] pattern, ir = [0 1 0 1] (0 bits), vi = f (1 bit)
    f = np.tile(np.array([0, 0, 255, 255], np.uint8), (4, 4))
    ir = np.tile(np.array([0, 255, 0, 255], np.uint8), (4, 4))
    assert M.mutual_information(f, ir, f) == pytest.approx(1.0, abs=1e-12)
    assert M.mutual_information(f, f, ir) == pytest.approx(1.0, abs=1e-12)
    assert M.mutual_information(f, f, f) == pytest.approx(2.0, abs=1e-12)


def _alternating_rows(a: int, b: int, size: int = 20) -> np.ndarray:
    img = np.full((size, size), a, np.uint8)
    img[1::2] = b
    return img


def test_vif_noise_variance_hand_value():
    """Rows alternating a, b have the same local variance at every window position: s1 = We Wo (a - b)^2
    (We, Wo = the Gaussian's weights at even / odd offsets). A 20x20 image only has scale 1 (N = 17,
    sigma 3.4, 4x4 valid positions), and dist = ref / 2 exactly gives g = 1/2, sv = 0, so
    VIF = log10(1 + s1 / 4 / sigma_n^2) / log10(1 + s1 / sigma_n^2), with sigma_n^2 = 2."""
    ref, dist = _alternating_rows(40, 200), _alternating_rows(20, 100)
    x = np.arange(17) - 8.0
    w = np.exp(-x * x / (2 * 3.4 ** 2))
    w /= w.sum()
    s1 = w[::2].sum() * w[1::2].sum() * 160.0 ** 2
    expected = math.log10(1 + s1 / 4 / 2.0) / math.log10(1 + s1 / 2.0)
    assert M.vifp_mscale(ref, dist) == pytest.approx(expected, rel=1e-9)
    assert M.vifp_mscale(ref, ref) == pytest.approx(1.0, rel=1e-9)
    # VIF sums both sources: the constant source carries no information (0), the other its own value
    const = np.full_like(ref, 90)
    assert M.vif(dist, ref, const) == pytest.approx(expected, rel=1e-9)
    assert M.vif(dist, const, ref) == pytest.approx(expected, rel=1e-9)
    assert M.vif(dist, ref, ref) == pytest.approx(2 * expected, rel=1e-9)


def _qabf_oracle(fused, ir, vi) -> float:
    """The MATLAB evaluation code's Qabf transcribed with explicit loops (conv2 'same', zero padding)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def conv2_same(img, k):
        rows, cols = img.shape
        padded = np.zeros((rows + 2, cols + 2))
        padded[1:-1, 1:-1] = img
        out = np.zeros((rows, cols))
        for r in range(rows):
            for c in range(cols):
                out[r, c] = sum(k[i, j] * padded[r + 2 - i, c + 2 - j] for i in range(3) for j in range(3))
        return out

    def grad(img):
        sx, sy = conv2_same(img.astype(float), h3), conv2_same(img.astype(float), h1)
        g = np.sqrt(sx * sx + sy * sy)
        a = np.full(img.shape, math.pi / 2)
        nz = sx != 0
        a[nz] = np.arctan(sy[nz] / sx[nz])
        return g, a

    def q(ga, aa, gf, af):
        out = np.zeros(ga.shape)
        for idx in np.ndindex(ga.shape):
            s, f = ga[idx], gf[idx]
            gaf = f / s if s > f else (f if s == f else s / f)
            aaf = 1 - abs(aa[idx] - af[idx]) / (math.pi / 2)
            out[idx] = 0.9994 / (1 + math.exp(-15 * (gaf - 0.5))) * 0.9879 / (1 + math.exp(-22 * (aaf - 0.8)))
        return out

    (g_a, a_a), (g_b, a_b), (g_f, a_f) = grad(ir), grad(vi), grad(fused)
    return float((q(g_a, a_a, g_f, a_f) * g_a + q(g_b, a_b, g_f, a_f) * g_b).sum() / (g_a + g_b).sum())


QABF_RNG = np.random.default_rng(7)
Q_IR = QABF_RNG.integers(0, 256, (9, 11)).astype(np.uint8)
Q_VI = cv2.GaussianBlur(QABF_RNG.integers(0, 256, (9, 11)).astype(np.uint8), (3, 3), 1.0)
Q_F = ((Q_IR.astype(int) + Q_VI) // 2).astype(np.uint8)


@pytest.mark.parametrize("fused, ir, vi", [
    (Q_F, Q_IR, Q_VI), (Q_F, Q_VI, Q_IR), (Q_IR, Q_IR, Q_VI), (Q_VI.T.copy(), Q_IR.T.copy(), Q_VI.T.copy()),
    (np.maximum(Q_IR, Q_VI), Q_IR, Q_VI),
    # a vertical step (gx = 0 in one image, not in the other: the orientation sign convention)
    (np.tile(np.repeat(np.array([10, 200], np.uint8), 5), (8, 1)),
     np.tile(np.arange(0, 200, 25, dtype=np.uint8)[:, None], (1, 10)),
     np.tile(np.arange(0, 250, 25, dtype=np.uint8), (8, 1))),
])
def test_qabf_matches_the_matlab_transcription(fused, ir, vi):
    assert M.qabf(fused, ir, vi) == pytest.approx(_qabf_oracle(fused, ir, vi), rel=1e-12)


def test_qabf_weights_by_source_gradients():
    """A source without edges has weight 0: f = ir with a black vi (no edges even at the zero-padded
    border) scores exactly Qabf(ir, ir, ir); weighting by the fused gradient would count the black
    source's (near-zero) preservation."""
    flat = np.zeros_like(Q_IR)
    assert M.qabf(Q_IR, Q_IR, flat) == pytest.approx(M.qabf(Q_IR, Q_IR, Q_IR), rel=1e-12)
    assert M.qabf(Q_IR, flat, Q_IR) == pytest.approx(M.qabf(Q_IR, Q_IR, Q_IR), rel=1e-12)
    assert M.qabf(Q_IR, Q_IR, flat) > 0.9


def test_sd_population_and_ssim_sums_both_sources():
    assert M.std_dev(np.array([[0, 2], [4, 6]], np.uint8)) == pytest.approx(math.sqrt(5.0))
    a, b, c = np.full((20, 20), 100, np.uint8), np.full((20, 20), 50, np.uint8), np.full((20, 20), 200, np.uint8)
    c1 = (0.01 * 255) ** 2
    lum = lambda x, y: (2 * x * y + c1) / (x * x + y * y + c1)  # noqa: E731 - flat images: luminance term only
    assert M.ssim(a, b, c) == pytest.approx(lum(100, 50) + lum(100, 200))
    assert M.ssim(a, c, b) == pytest.approx(lum(100, 200) + lum(100, 50))


# --- pinned to the independent reference values ---------------------------------------------------------------

# absolute tolerances: the reference agrees with the MATLAB code to 1e-11 (VIF 1e-8, its Gaussian
# filtering); MI is compared with MI_exact (exact bins, this module's convention, see its docstring)
REF_TOL = {"EN": 1e-9, "SD": 1e-9, "SF": 1e-9, "MI": 1e-9, "VIF": 1e-8, "AG": 1e-9, "Qabf": 1e-9, "SSIM": 1e-9}


@pytest.fixture(scope="module")
def metrics_reference():
    data = shared_data_dir()
    folder = data / "metrics_reference" if data else None
    if folder is None or not (folder / "values.csv").is_file():
        pytest.skip(f"metrics reference values absent ({folder or '../shared/data not found'})")
    with open(folder / "values.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))

    def load(rel: str) -> np.ndarray:
        img = cv2.imread(str(rel), cv2.IMREAD_UNCHANGED)
        assert img is not None, f"cannot read {rel}"
        return img

    return [(row, load(folder / "fused" / row["fused"]), load(data / row["ir"]), load(data / row["vi"])) for row in rows]


def test_metrics_match_independent_reference_values(metrics_reference):
    assert len(metrics_reference) == 8
    for row, fused, ir, vi in metrics_reference:
        got = M.evaluate_pair(fused, ir, vi)
        for key, tol in REF_TOL.items():
            ref = float(row["MI_exact" if key == "MI" else key])
            assert got[key] == pytest.approx(ref, abs=tol), f"{row['fused']} {key}: {got[key]!r} != {ref!r}"
        # the MATLAB code's saturated bins (254 and 255 share one) only ever add a little
        assert 0 <= float(row["MI"]) - got["MI"] < 0.03
