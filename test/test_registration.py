"""Calibration files, homography fitting, the Registrar and ECC refinement (diffmf_core.live.registration)."""
import argparse

import cv2
import numpy as np
import pytest
import yaml

from diffmf_core import cli
from diffmf_core.paths import repo_root
from diffmf_core.live.registration import (Calibration, CalibrationError, Registrar, corner_shift_px,
                                      homography_from_points, load_calibration, reprojection_errors,
                                      save_calibration, validate_homography)

H_TRUE = np.array([[1.05, 0.02, 12.0], [-0.01, 0.97, -7.0], [2e-5, -1e-5, 1.0]])


def texture(size=(160, 128), seed=0, sigma=3.0) -> np.ndarray:
    """A smooth random gray texture (width, height) with strong gradients everywhere."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), (0, 0), sigma)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def shifted_pair(dx: float, dy: float, size=(160, 128)):
    """(thermal, rgb BGR) where thermal pixel x shows the scene at rgb pixel x + (dx, dy),
    with inverted contrast as a crude multi-modal difference."""
    vi = texture(size)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    ir = 255 - cv2.warpAffine(vi, m, size, flags=cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return ir, cv2.cvtColor(vi, cv2.COLOR_GRAY2BGR)


# ------------------------------------------------------------------ calibration files
def test_shipped_calibrations_load():
    identity = load_calibration(repo_root() / "config/calibration/identity.yaml")
    np.testing.assert_array_equal(identity.homography, np.eye(3))
    assert identity.thermal_size is None and identity.rgb_size is None
    example = load_calibration(repo_root() / "config/calibration/example_dronevehicle.yaml")
    assert example.thermal_size == (640, 512) and example.rgb_frame_id == "rgb_camera"


def test_save_and_load_round_trip(tmp_path):
    cal = Calibration(H_TRUE, (640, 512), (1280, 1024), "th", "cam", 0.25)
    save_calibration(cal, tmp_path / "sub" / "c.yaml")
    back = load_calibration(tmp_path / "sub" / "c.yaml")
    np.testing.assert_allclose(back.homography, H_TRUE)
    assert (back.thermal_size, back.rgb_size, back.thermal_frame_id, back.rgb_frame_id,
            back.reprojection_error_px) == ((640, 512), (1280, 1024), "th", "cam", 0.25)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.yaml"]  # no temporary left over


@pytest.mark.parametrize("homography,reason", [
    ([[1, 0], [0, 1]], "3x3"),
    ([[1, 0, 0], [0, float("nan"), 0], [0, 0, 1]], "non-finite"),
    ([[1, 2, 3], [2, 4, 6], [0, 0, 1]], "singular"),
    ([[1e-6, 0, 0], [0, 1e-6, 0], [0, 0, 1]], "singular"),
    ([[1, 0, 0], [0, 1e-11, 0], [0, 0, 1]], "singular"),
    ([[1e7, 0, 0], [0, 1e-4, 0], [0, 0, 1]], "ill-conditioned"),
    ("not a matrix", "numeric"),
])
def test_bad_homographies_are_refused(homography, reason):
    with pytest.raises(CalibrationError, match=reason):
        validate_homography(homography)


def test_homography_across_the_horizon_is_refused():
    with pytest.raises(CalibrationError, match="infinity"):
        validate_homography([[1, 0, 0], [0, 1, 0], [-0.01, 0, 1]], thermal_size=(640, 512))


@pytest.mark.parametrize("text,reason", [("homography: [1, 2]", "3x3"), ("rgb_size: [1, 2]", "homography"),
                                         ("homography: [[1,0,0],[0,1,0],[0,0,1]]\nrgb_size: [0, 5]", "positive"),
                                         (": : :", "YAML")])
def test_bad_calibration_files(tmp_path, text, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=reason):
        load_calibration(path)


# ------------------------------------------------------------------ fitting
def test_homography_from_points_recovers_a_known_homography():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 640, (12, 2))
    dst = cv2.perspectiveTransform(src[:, None], H_TRUE)[:, 0]
    dst[3] += 40  # one wrong click: RANSAC must ignore it
    h = homography_from_points(src, dst)
    np.testing.assert_allclose(h, H_TRUE, rtol=1e-4, atol=1e-6)
    errors = reprojection_errors(h, src, dst)
    assert np.delete(errors, 3).max() < 1e-3 and errors[3] > 30


def test_homography_from_four_points_is_exact():
    src = np.array([[0, 0], [100, 0], [100, 80], [0, 80]], float)
    dst = cv2.perspectiveTransform(src[:, None], H_TRUE)[:, 0]
    np.testing.assert_allclose(homography_from_points(src, dst), H_TRUE, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("src,dst", [([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 1], [2, 2]]),
                                     ([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 1], [2, 2], [3, 3]]),
                                     ([[0, 0], [1, 0], [0, 1], [1, 1]], [[0, 0], [1, 0], [0, 1]])])
def test_degenerate_points_are_refused(src, dst):
    with pytest.raises(CalibrationError):
        homography_from_points(src, dst)


def test_calib_command_from_cli_points(tmp_path, capsys):
    src = np.array([[10, 10], [600, 20], [620, 500], [15, 490], [320, 256]], float)
    dst = cv2.perspectiveTransform(src[:, None], H_TRUE)[:, 0]
    out = tmp_path / "rig.yaml"
    argv = ["calib", "--thermal-points", *[f"{x},{y}" for x, y in src],
            "--rgb-points", *[f"{x},{y}" for x, y in dst], "--thermal-size", "640x512", "--rgb-size", "640x512",
            "-o", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "reprojection error: rms" in printed and "homography" in printed
    cal = load_calibration(out)
    np.testing.assert_allclose(cal.homography, H_TRUE, rtol=1e-4, atol=1e-6)
    assert cal.thermal_size == (640, 512) and cal.reprojection_error_px < 1e-3


def test_calib_command_from_csv(tmp_path):
    src = np.array([[0, 0], [100, 0], [100, 80], [0, 80], [50, 40]], float)
    dst = src * 2 + 3
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("thermal_x,thermal_y,rgb_x,rgb_y\n" + "".join(
        f"{a},{b},{c},{d}\n" for (a, b), (c, d) in zip(src, dst)))
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(tmp_path / "c.yaml")]) == 0
    h = yaml.safe_load((tmp_path / "c.yaml").read_text())["homography"]
    np.testing.assert_allclose(h, [[2, 0, 3], [0, 2, 3], [0, 0, 1]], atol=1e-6)


def test_calib_output_never_replaces_inputs_or_files_without_overwrite(tmp_path, capsys):
    csv_path = tmp_path / "pairs.yaml"  # a points file that happens to have the output's suffix
    csv_path.write_text("".join(f"{a},{b},{a * 2},{b * 2}\n" for a, b in [(0, 0), (9, 0), (9, 7), (0, 7), (4, 3)]))
    before = csv_path.read_text()
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(csv_path), "--overwrite"]) == 2
    assert csv_path.read_text() == before and "input" in capsys.readouterr().err
    out = tmp_path / "c.yaml"
    out.write_text("mine")
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(out)]) == 2
    assert out.read_text() == "mine" and "--overwrite" in capsys.readouterr().err
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(out), "--overwrite"]) == 0
    assert "homography" in out.read_text()


def test_calib_command_reports_bad_input(tmp_path, capsys):
    args = argparse.Namespace(points=None, thermal_points=[(0, 0), (1, 1)], rgb_points=[(0, 0), (1, 1)],
                              thermal_size=None, rgb_size=None, thermal_frame_id="t", rgb_frame_id="r",
                              ransac_threshold=3.0, output=str(tmp_path / "x.yaml"), overwrite=False)
    from diffmf_core.tools.calib import main
    assert main(args) == 2
    assert "at least 4" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


# ------------------------------------------------------------------ registrar
def test_identity_with_equal_sizes_is_a_no_op():
    ir, vi = shifted_pair(0, 0)
    reg = Registrar(np.eye(3)).register(ir, vi)
    assert reg.ir is ir and reg.vi is vi  # no warp, no copy
    np.testing.assert_array_equal(reg.homography_used, np.eye(3))
    assert reg.quality > 0.9 and reg.frame == "rgb"


def test_identity_with_different_sizes_resizes_thermal_to_rgb():
    vi = cv2.cvtColor(texture((160, 128)), cv2.COLOR_GRAY2BGR)
    ir = cv2.resize(vi[..., 0], (80, 64), interpolation=cv2.INTER_AREA)
    reg = Registrar(np.eye(3)).register(ir, vi)
    assert reg.ir.shape == (128, 160) and reg.vi is vi
    # the reported homography is the equivalent scaling (pixel-centre convention)
    np.testing.assert_allclose(reg.homography_used, [[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])
    assert reg.quality > 0.8


def test_rgb_output_warps_thermal_with_h():
    vi = cv2.cvtColor(texture(), cv2.COLOR_GRAY2BGR)
    h = np.array([[1, 0, 5.0], [0, 1, -3.0], [0, 0, 1]])
    ir = cv2.warpAffine(vi[..., 0], np.linalg.inv(h)[:2], (160, 128), borderMode=cv2.BORDER_REFLECT)
    reg = Registrar(h).register(ir, vi)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(reg.ir[inner].astype(int) - vi[..., 0][inner]).max() <= 1
    assert reg.quality > 0.9


def test_thermal_output_warps_rgb_with_inverse_h():
    vi = cv2.cvtColor(texture(), cv2.COLOR_GRAY2BGR)
    h = np.array([[1, 0, 5.0], [0, 1, -3.0], [0, 0, 1]])
    ir = cv2.warpAffine(vi[..., 0], np.linalg.inv(h)[:2], (160, 128))
    reg = Registrar(h, output="thermal").register(ir, vi)
    assert reg.ir is ir and reg.vi.shape == (128, 160, 3)
    np.testing.assert_allclose(reg.homography_used, np.eye(3), atol=1e-12)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(reg.vi[..., 0][inner].astype(int) - ir[inner]).max() <= 1
    assert reg.frame == "thermal"


def test_fixed_output_scales_the_rgb_frame():
    ir, vi = shifted_pair(0, 0)
    reg = Registrar(np.eye(3), output="fixed", output_size=(80, 64)).register(ir, vi)
    assert reg.ir.shape == (64, 80) and reg.vi.shape == (64, 80, 3)
    np.testing.assert_allclose(reg.homography_used, [[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
    with pytest.raises(ValueError):
        Registrar(np.eye(3), output="fixed")


def test_calibration_sizes_rescale_h_to_incoming_images():
    h = np.array([[1, 0, 8.0], [0, 1, 4.0], [0, 0, 1]])
    registrar = Registrar(h, thermal_size=(320, 256), rgb_size=(320, 256))
    scaled = registrar.calibrated_homography((160, 128), (160, 128))
    # points move consistently: thermal (100, 60) at half size -> rgb (104, 62) at half size
    p = cv2.perspectiveTransform(np.array([[[99.75, 59.75]]]), scaled)[0, 0]
    np.testing.assert_allclose(p, [103.75, 61.75], atol=1e-9)


def test_singular_homography_refused_by_registrar():
    with pytest.raises(CalibrationError):
        Registrar(np.zeros((3, 3)))


def test_quality_drops_when_misaligned():
    aligned = Registrar().register(*shifted_pair(0, 0)).quality
    off = Registrar().register(*shifted_pair(6, 4)).quality
    assert 0.0 <= off < 0.5 < aligned <= 1.0


def test_single_source_registration_uses_known_sizes():
    registrar = Registrar(np.eye(3))
    ir = np.zeros((64, 80), np.uint8)
    vi = np.zeros((128, 160, 3), np.uint8)
    registrar.register(ir, vi)
    out, h = registrar.register_thermal(ir)
    assert out.shape == (128, 160)
    out, h = registrar.register_rgb(vi)
    assert out is vi and h[0, 0] == 2.0


# ------------------------------------------------------------------ ECC
def test_ecc_recovers_a_small_shift_and_reuses_it():
    ir, vi = shifted_pair(3, 2)
    registrar = Registrar(np.eye(3), ecc_refine=True, ecc_interval=5)
    first = registrar.register(ir, vi)
    assert registrar.stats.ecc_accepted == 1
    np.testing.assert_allclose(first.homography_used[:2, 2], [3, 2], atol=0.3)
    np.testing.assert_allclose(first.homography_used[:2, :2], np.eye(2), atol=0.01)
    assert first.quality > Registrar(np.eye(3)).register(ir, vi).quality
    for _ in range(4):  # reused without re-running ECC until the interval is over
        np.testing.assert_array_equal(registrar.register(ir, vi).homography_used, first.homography_used)
    assert registrar.stats.ecc_runs == 1
    registrar.register(ir, vi)
    assert registrar.stats.ecc_runs == 2


def test_ecc_affine_motion_also_works():
    ir, vi = shifted_pair(-2, 3)
    registrar = Registrar(np.eye(3), ecc_refine=True, ecc_motion="affine")
    reg = registrar.register(ir, vi)
    assert registrar.stats.ecc_accepted == 1
    np.testing.assert_allclose(reg.homography_used[:2, 2], [-2, 3], atol=0.3)


def test_ecc_refuses_a_correction_larger_than_allowed():
    ir, vi = shifted_pair(6, 0)
    registrar = Registrar(np.eye(3), ecc_refine=True, ecc_max_correction_px=2.0)
    reg = registrar.register(ir, vi)
    assert registrar.stats.ecc_accepted == 0
    assert registrar.stats.ecc_rejected + registrar.stats.ecc_failed == 1
    np.testing.assert_array_equal(reg.homography_used, np.eye(3))


def test_ecc_never_accepts_a_large_wrong_alignment():
    ir, vi = shifted_pair(25, -20)
    registrar = Registrar(np.eye(3), ecc_refine=True, ecc_max_correction_px=8.0)
    reg = registrar.register(ir, vi)
    assert registrar.stats.ecc_accepted == 0
    np.testing.assert_array_equal(reg.homography_used, np.eye(3))
    assert corner_shift_px(np.eye(3), reg.homography_used, (160, 128)) == 0.0
