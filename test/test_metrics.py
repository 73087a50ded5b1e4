"""Hand-computable checks of the fusion metrics and colour helpers, and the metrics pinned to
independent reference values (../shared/data/metrics_reference, computed with an implementation
checked against the MATLAB evaluation code; skipped where the folder is absent)."""
import csv
import math
import warnings

import cv2
import numpy as np
import pytest

from diffmf_core.common.color import bgr_to_ycrcb, to_gray, ycrcb_to_bgr
from diffmf_core.common.paths import shared_data_dir
from diffmf_core.training import metrics as M

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


# --- found by the scoped mutation run of issue 16 (docs/mutation.md "metrics") -----------------------------


def test_sf_and_ag_of_a_single_row_or_column():
    row = np.array([[0, 3, 3, 7]], np.uint8)
    # one row: no vertical differences; RF^2 = (9 + 0 + 16) / 3
    assert M.spatial_frequency(row) == pytest.approx(math.sqrt(25 / 3))
    assert M.spatial_frequency(row.T) == pytest.approx(math.sqrt(25 / 3))
    assert M.spatial_frequency(np.array([[5]], np.uint8)) == 0.0
    # AG divides by (H - 1)(W - 1): 0 for a single row or column by convention
    assert M.average_gradient(row) == 0.0
    assert M.average_gradient(row.T) == 0.0


def _vif_one_window(s1: float, s12: float, s2: float) -> float:
    """vifp_mscale's formula for a single window position at a single scale (sigma_n^2 = 2, eps = 1e-10)."""
    eps = 1e-10
    g = s12 / (s1 + eps)
    sv = max(s2 - g * s12, eps)
    return math.log10(1 + g * g * s1 / (sv + 2.0)) / math.log10(1 + s1 / 2.0)


def _even_odd_weight_product() -> float:
    """We * Wo for the scale-1 window (17 taps, sigma 3.4): alternating rows a, b have variance We Wo (a - b)^2."""
    x = np.arange(17) - 8.0
    w = np.exp(-x * x / (2 * 3.4 ** 2))
    w /= w.sum()
    return float(w[::2].sum() * w[1::2].sum())


def test_vif_of_an_image_exactly_one_window_wide():
    """17x17 = the scale-1 window: one position is computed (scale 2 does not fit); with rows alternating
    0 and 8 the information sum (den = log10(1 + s1 / 2), s1 about 16) is below 1 and still counts."""
    ref, dist = _alternating_rows(0, 8, size=17), _alternating_rows(0, 4, size=17)
    s1 = _even_odd_weight_product() * 64.0
    assert math.log10(1 + s1 / 2) < 1
    assert M.vifp_mscale(ref, dist) == pytest.approx(_vif_one_window(s1, s1 / 2, s1 / 4), rel=1e-9)
    assert M.vifp_mscale(ref, ref) == pytest.approx(1.0, rel=1e-9)


def test_vif_regulariser_is_added_to_the_reference_variance():
    """g = s12 / (s1 + 1e-10) as in the reference vifp_mscale: visible on a faint float image whose window
    variance is 8e-10 (g = 4/9 here, not 1/2)."""
    s1 = 8e-10
    amplitude = math.sqrt(s1 / _even_odd_weight_product())
    ref = np.zeros((17, 17))
    ref[1::2] = amplitude
    expected = _vif_one_window(s1, s1 / 2, s1 / 4)
    assert expected == pytest.approx((4 / 9) ** 2, rel=1e-3)
    assert M.vifp_mscale(ref, ref / 2) == pytest.approx(expected, rel=1e-4)


def test_qabf_of_edgeless_sources_is_zero_and_silent():
    flat = np.zeros((12, 12), np.uint8)
    blob = flat.copy()
    blob[4:8, 4:8] = 200
    with np.errstate(divide="warn", invalid="warn"), warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 and x/0 in the strength ratio stay silent
        assert M.qabf(blob, flat, flat) == 0.0  # no source edges: nothing to preserve
        assert M.qabf(flat, blob, flat) < 1e-3  # a fused image without edges preserves (almost) nothing
        assert M.qabf(blob, blob, flat) > 0.9


def test_qabf_of_faint_float_images_matches_the_matlab_transcription():
    # scaled by 2^-20 (exact): the gradient strengths sum to less than 1 and still count
    f, ir, vi = (x.astype(np.float64) * 2.0 ** -20 for x in (Q_F, Q_IR, Q_VI))
    assert 0 < M._sobel(ir)[0].sum() + M._sobel(vi)[0].sum() < 1
    assert M.qabf(f, ir, vi) == pytest.approx(_qabf_oracle(f, ir, vi), rel=1e-12)


def _ssim_oracle(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Wang et al. SSIM with an explicit n x n Gaussian window (sigma 1.5), looped over the valid positions."""
    x = np.arange(n) - (n - 1) / 2
    w = np.exp(-x * x / (2 * 1.5 ** 2))
    win = np.outer(w, w) / np.outer(w, w).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(float), b.astype(float)
    vals = []
    for i in range(a.shape[0] - n + 1):
        for j in range(a.shape[1] - n + 1):
            pa, pb = a[i:i + n, j:j + n], b[i:i + n, j:j + n]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            vaa, vbb, vab = (win * pa * pa).sum() - ma * ma, (win * pb * pb).sum() - mb * mb, (win * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * vab + c2) / ((ma * ma + mb * mb + c1) * (vaa + vbb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("shape, window", [((8, 10), 7), ((10, 8), 7), ((9, 12), 9), ((12, 13), 11)])
def test_ssim_window_of_small_images_is_the_largest_odd_that_fits(shape, window):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = cv2.GaussianBlur(a, (3, 3), 1.0)
    assert M.ssim_index(a, b) == pytest.approx(_ssim_oracle(a, b, window), rel=1e-9)


def test_evaluate_pair_names_the_size_mismatch():
    with pytest.raises(ValueError, match="size mismatch"):
        M.evaluate_pair(TEXTURE, TEXTURE, TEXTURE[:, :-1])


def _hot_square(background=60, hot=200):
    ir = np.full((120, 160), background, np.uint8)
    ir[50:66, 70:86] = hot
    return ir


def test_a_hot_square_keeps_retention_one_under_identity_and_zero_when_dropped():
    ir = _hot_square()
    targets = M.warm_targets(ir)
    assert len(targets) == 1
    contrast, blob, ring = targets[0]
    assert contrast == pytest.approx(140.0) and blob.sum() == 16 * 16 and not (blob & ring).any()
    assert M.target_retention(ir, ir) == [pytest.approx(1.0)]
    assert M.target_retention(ir, np.full_like(ir, 60)) == [0.0]  # dropped
    assert M.target_retention(ir, 255 - ir) == [0.0]  # inverted counts as gone
    assert M.target_retention(ir, (ir.astype(np.float32) * 0.5)) == [pytest.approx(0.5)]
    faint = _hot_square(60, 120)
    assert M.target_retention(faint, np.where(faint > 60, 255, 0)) == [M.RETENTION_MAX]  # 4.25 clipped
    # the target seen in a visible-like surrounding: what counts is its contrast, not its level
    assert M.target_retention(ir, ir.astype(np.float32) + 40) == [pytest.approx(1.0)]


def test_warm_targets_ignore_flat_images_faint_spots_and_specks():
    assert M.warm_targets(np.full((100, 100), 128, np.uint8)) == []
    faint = _hot_square(60, 60 + int(M.TARGET_LEVEL) - 2)
    assert M.warm_targets(faint) == []
    speck = np.full((100, 100), 60, np.uint8)
    speck[40:43, 40:43] = 250  # 9 px < TARGET_MIN_AREA
    assert M.warm_targets(speck) == []


def test_warm_targets_are_the_strongest_first_and_at_most_target_max():
    ir = np.full((240, 320), 40, np.uint8)
    for i in range(M.TARGET_MAX + 3):
        y, x = 20 + 50 * (i // 6), 20 + 50 * (i % 6)
        ir[y:y + 8, x:x + 8] = 80 + 10 * i
    targets = M.warm_targets(ir)
    assert len(targets) == M.TARGET_MAX
    contrasts = [t[0] for t in targets]
    assert contrasts == sorted(contrasts, reverse=True) and contrasts[0] == pytest.approx(40 + 10 * (M.TARGET_MAX + 2))
