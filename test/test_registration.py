"""Calibration files, homography fitting, the Registrar and ECC refinement (diffmf_core.live.registration)."""
import argparse
import os
import re
import warnings

import cv2
import numpy as np
import pytest
import yaml

from diffmf_core import cli
from diffmf_core.common.paths import repo_root
from diffmf_core.live import registration
from diffmf_core.live.registration import (Calibration, CalibrationError, Registrar, calibration_from_dict,
                                      calibration_to_yaml, corner_shift_px, gradient_ncc,
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


def raises_exactly(exc, message: str):
    """pytest.raises for an error whose whole message is ``message`` (user-facing texts are part of the contract)."""
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


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
    # a file that calib did not write stays, --overwrite or not (issue 25)
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(out), "--overwrite"]) == 2
    assert out.read_text() == "mine" and "in the way" in capsys.readouterr().err
    own = tmp_path / "own.yaml"
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(own)]) == 0
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(own)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["calib", "--points", str(csv_path), "-o", str(own), "--overwrite"]) == 0
    assert "homography" in own.read_text()


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


# ------------------------------------------------------------------ found by the scoped mutation run
# (docs/mutation.md, "registration"): hand-computed values, exact user-facing messages, boundaries.
EYE3 = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], float)


@pytest.mark.parametrize("homography,expected", [
    ([2, 0, 4, 0, 2, 6, 0, 0, 2], [[1, 0, 2], [0, 1, 3], [0, 0, 1]]),  # 9 numbers, divided by h33
    ([[2, 0, 4], [0, 2, 6], [0, 0, 2]], [[1, 0, 2], [0, 1, 3], [0, 0, 1]]),
    # h33 = 0 (or within 1e-12 of it): divided by the Frobenius norm instead, sqrt(3) here
    ([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]) / np.sqrt(3)),
    ([[1, 0, 0], [0, 0, 1], [0, 1, 1e-12]], np.array([[1, 0, 0], [0, 0, 1], [0, 1, 1e-12]]) / np.sqrt(3)),
    (np.diag([1e10, 1, 1]), np.diag([1e10, 1, 1])),  # condition number exactly 1e10: still accepted
])
def test_validate_homography_normalises(homography, expected):
    np.testing.assert_allclose(validate_homography(homography), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("homography,thermal_size,message", [
    (np.zeros((3, 3)), None, "homography is all zeros"),
    ([[1, 0], [0, 1]], None, "homography must be 3x3, got shape (2, 2)"),
    (list(range(10)), None, "homography must be 3x3, got shape (10,)"),
    ([[1, 0, 0], [0, float("inf"), 0], [0, 0, 1]], None, "homography has non-finite values"),
    ([[1, 2, 3], [0, 0, 0], [0, 0, 1]], None, "homography is singular (|det| = 0 < 1e-09)"),
    (np.diag([1e-6, 1e-6, 1]), None, "homography is singular (|det| = 1e-12 < 1e-09)"),
    (np.diag([1e7, 1e-4, 1]), None, "homography is ill-conditioned (condition number 1e+11 > 1e+10)"),
    # the line at infinity exactly through the corner (4, 0) of a 5x4 image: w = 1 - x / 4
    ([[1, 0, 0], [0, 1, 0], [-0.25, 0, 1]], (5, 4), "homography maps the thermal image across the line at infinity"),
    # h33 = 0: w = -x / sqrt(3) is 0 on the left column and negative elsewhere
    ([[1, 0, 1], [0, 1, 0], [-1, 0, 0]], (5, 4), "homography maps the thermal image across the line at infinity"),
    # only one corner behind the camera (w < 0 there, w >= 0.2 at the three others)
    ([[1, 0, 0], [0, 1, 0], [-0.375, 0.5, 1]], (5, 4), "homography maps the thermal image across the line at infinity"),
    ([[1, 0, 0], [0, 1, 0], [-0.2, -0.2, 1]], (5, 4), "homography maps the thermal image across the line at infinity"),
    ([[1, 0, 0], [0, 1, 0], [0.5, -0.5, 1]], (5, 4), "homography maps the thermal image across the line at infinity"),
])
def test_validate_homography_messages(homography, thermal_size, message):
    with raises_exactly(CalibrationError, message):
        validate_homography(homography, thermal_size)


def test_minus_h_is_the_same_homography():
    # with h33 ~ 0 the sign is not normalised away: every corner has w < 0 for -A, which is the same mapping
    a = np.array([[1, 0, -1], [0, 1, -1], [1, 1, 1e-13]])
    np.testing.assert_allclose(validate_homography(a, (5, 4)), a / np.linalg.norm(a), rtol=1e-15)
    np.testing.assert_allclose(validate_homography(-a, (5, 4)), -a / np.linalg.norm(a), rtol=1e-15)


@pytest.mark.parametrize("data,message", [
    ({}, "calibration needs a 'homography' entry"),
    ([EYE3], "calibration needs a 'homography' entry"),
    ({"homography": EYE3, "thermal_size": [1, 2, 3]}, "thermal_size must be [width, height], got [1, 2, 3]"),
    ({"homography": EYE3, "thermal_size": [0, 5]}, "thermal_size must be positive, got [0, 5]"),
    ({"homography": EYE3, "rgb_size": "ab"}, "rgb_size must be [width, height], got 'ab'"),
    ({"homography": EYE3, "rgb_size": [5, 0]}, "rgb_size must be positive, got [5, 0]"),
    ({"homography": [[1, 0, 0], [0, 1, 0], [-0.25, 0, 1]], "thermal_size": [5, 4]},
     "homography maps the thermal image across the line at infinity"),
])
def test_calibration_from_dict_messages(data, message):
    with raises_exactly(CalibrationError, message):
        calibration_from_dict(data)


def test_calibration_from_dict_defaults_and_smallest_sizes():
    cal = calibration_from_dict({"homography": [2, 0, 0, 0, 2, 0, 0, 0, 2], "thermal_size": [1, 1], "rgb_size": [1, 1]})
    np.testing.assert_array_equal(cal.homography, np.eye(3))
    assert (cal.thermal_size, cal.rgb_size) == ((1, 1), (1, 1))
    assert (cal.thermal_frame_id, cal.rgb_frame_id, cal.reprojection_error_px) == ("", "", None)  # not named


def test_missing_calibration_file_is_named(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(CalibrationError, match=f"^cannot read calibration {re.escape(str(path))}: .*No such file"):
        load_calibration(path)


def test_calibration_yaml_text():
    cal = Calibration(translation(2.5, -3), (640, 512), None, rgb_frame_id="rgb_optical", reprojection_error_px=0.25)
    assert calibration_to_yaml(cal) == (
        "# diffmf calibration: homography maps thermal pixels to RGB pixels\n"
        "homography:\n"
        "- [1.0, 0.0, 2.5]\n"
        "- [0.0, 1.0, -3.0]\n"
        "- [0.0, 0.0, 1.0]\n"
        "thermal_size: [640, 512]\n"
        "rgb_size: null\n"
        "rgb_frame_id: rgb_optical\n"
        "reprojection_error_px: 0.25\n")


def test_save_calibration_creates_folders_and_renames_a_hidden_temporary(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((src, dst)), real_replace(src, dst)))
    out = tmp_path / "a" / "b" / "c.yaml"
    save_calibration(Calibration(np.eye(3)), out)
    assert load_calibration(out).thermal_frame_id == ""
    [(src, dst)] = renames
    # written next to the target (same file system: the rename is atomic), hidden from *.yaml globs
    assert dst == out and os.path.dirname(src) == str(out.parent) and os.path.basename(src).startswith(".c.yaml.")


def test_save_calibration_failure_leaves_nothing_and_keeps_the_error(tmp_path):
    with pytest.raises(ValueError, match="could not convert string to float"):
        save_calibration(Calibration([["x"]]), tmp_path / "c.yaml")
    assert list(tmp_path.iterdir()) == []


def test_ransac_threshold_is_three_pixels():
    src = np.array([[0, 0], [200, 0], [200, 150], [0, 150], [100, 70], [50, 120], [160, 30], [30, 40]], float)
    dst = cv2.perspectiveTransform(src[:, None], H_TRUE)[:, 0]
    dst[4, 0] += 3.5  # 3.5 px off: an outlier at the default 3 px, an inlier at 4 px
    np.testing.assert_allclose(homography_from_points(src, dst), H_TRUE, rtol=1e-5, atol=1e-6)
    assert np.abs(homography_from_points(src, dst, ransac_threshold_px=4.0) - H_TRUE).max() > 0.1


def test_five_points_already_use_ransac():
    src = np.array([[0, 0], [200, 0], [200, 150], [0, 150], [100, 70]], float)
    dst = cv2.perspectiveTransform(src[:, None], H_TRUE)[:, 0]
    dst[4, 0] += 40
    np.testing.assert_allclose(homography_from_points(src, dst), H_TRUE, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("src,dst,message", [
    ([[0, 0], [1, 0], [0, 1], [1, 1]], [[0, 0], [1, 0], [0, 1]], "4 thermal points but 3 RGB points"),
    ([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, 1]], "a homography needs at least 4 point pairs, got 3"),
    ([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]], [[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]],
     "points are degenerate (collinear or repeated): no homography"),
])
def test_homography_from_points_messages(src, dst, message):
    with raises_exactly(CalibrationError, message):
        homography_from_points(src, dst)


def test_reprojection_errors_accept_integer_points():
    np.testing.assert_allclose(reprojection_errors(translation(3, 4), [[0, 0], [1, 1]], [[0, 0], [4, 5]]), [5, 0])


# (5, 4) image, corners (0, 0), (4, 0), (4, 3), (0, 3); h_b scales by 2 about c, moving p by |p - c|:
# c lies beyond the opposite corner, so the largest shift is at the named corner: hypot(7, 6)
@pytest.mark.parametrize("corner,centre", [((0, 0), (7, 6)), ((4, 0), (-3, 6)), ((4, 3), (-3, -3)), ((0, 3), (7, -3))])
def test_corner_shift_is_the_largest_corner_distance(corner, centre):
    h_b = np.array([[2, 0, -centre[0]], [0, 2, -centre[1]], [0, 0, 1]], float)
    assert corner_shift_px(np.eye(3), h_b, (5, 4)) == pytest.approx(np.hypot(7, 6), rel=1e-12)
    assert corner_shift_px(h_b, h_b, (5, 4)) == 0.0


@pytest.mark.parametrize("size,low", [((160, 128), (160, 128)), ((640, 512), (160, 128)), ((193, 100), (96, 50)),
                                      ((400, 10), (133, 8)), ((10, 400), (8, 133))])
def test_low_size_divides_by_the_smallest_integer_factor(size, low):
    assert registration._low_size(size) == low


def test_footprint_is_the_eroded_binary_warped_frame():
    # a 20x12 image moved by (2, 3) covers x 2..21, y 3..14; the 9x9 erosion takes 4 px off each side
    mask = registration._footprint((20, 12), translation(2, 3), (30, 20))
    expected = np.zeros((20, 30), np.uint8)
    expected[7:11, 6:18] = 255
    np.testing.assert_array_equal(mask, expected)
    # a sub-pixel move keeps it binary (nearest-neighbour warp)
    assert set(np.unique(registration._footprint((20, 12), translation(2.5, 3.25), (30, 20)))) == {0, 255}


def test_gradient_of_a_ramp_and_of_a_step():
    # f = 3x + 2y: the 5x5 blur keeps a ramp, the 3x3 Sobel gives 8 * slope: |grad| = 8 * sqrt(13) inside
    y, x = np.mgrid[0:20, 0:20]
    g = registration._gradient((3 * x + 2 * y).astype(np.uint8))
    np.testing.assert_allclose(g[4:-4, 4:-4], 8 * np.sqrt(13), rtol=1e-5)
    # a step of 100 between x = 9 and 10: Sobel = 4 * (B(10) - B(8)) = 400 * (g0 + g1) with the
    # 5-tap Gaussian of sigma 1, g_k = exp(-k^2 / 2) / sum
    step = np.zeros((9, 20), np.uint8)
    step[:, 10:] = 100
    e = np.exp(-0.5)
    peak = 400 * (1 + e) / (1 + 2 * e + 2 * np.exp(-2))
    np.testing.assert_allclose(registration._gradient(step)[4, 9:11], [peak, peak], rtol=1e-5)


def test_gradient_ncc_edge_cases():
    # (scores compared with a tolerance: OpenCV's float cv2.magnitude can differ by an ulp between calls)
    a = texture((32, 24))
    assert gradient_ncc(a, a, np.ones_like(a)) == pytest.approx(1.0, abs=1e-6)  # any mask value > 0 is inside
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty mask gives 0 without a "mean of empty slice" warning
        assert gradient_ncc(a, a, np.zeros_like(a)) == 0.0
    flat = np.full((16, 16), 7, np.uint8)
    assert gradient_ncc(flat, flat) == 0.0
    faint = np.zeros((8, 8), np.uint8)
    faint[0, 0] = 1  # centred gradient energy 0.86: small, but not zero
    assert gradient_ncc(faint, faint) == pytest.approx(1.0, abs=1e-6)
    # gradients on complementary halves: NCC about -0.86, clipped to 0
    ramp = np.arange(32)
    left = np.tile(np.minimum(ramp, 16) * 4, (16, 1)).astype(np.uint8)
    right = np.tile(np.maximum(ramp - 16, 0) * 4, (16, 1)).astype(np.uint8)
    assert gradient_ncc(left, right) == 0.0


def test_gradient_ncc_is_clipped_to_one(monkeypatch):
    # NCC <= 1 mathematically, but float32 round-off can exceed it (OpenCV's float blur can differ by
    # an ulp between calls, so even gradient_ncc(a, a) sometimes rounds to 1.0000001). Made
    # deterministic: the gradients are replaced by the images, two 3-pixel rows one ulp apart
    monkeypatch.setattr(registration, "_gradient", lambda img: np.asarray(img, np.float32))
    a = np.array([[217, 163, 131]], np.float32)
    b = a.copy()
    b[0, 0] = np.nextafter(np.float32(217), np.float32(218))
    x, y = a - a.mean(), b - b.mean()
    assert np.sum(x * y) / float(np.sqrt(np.sum(x * x) * np.sum(y * y))) > 1  # before clipping
    assert gradient_ncc(a, b) == 1.0


def test_registrar_defaults():
    r = Registrar()
    assert (r.output, r.output_size, r.calib_sizes, r.ecc_refine) == ("rgb", None, (None, None), False)
    assert (r.ecc_max_correction_px, r.ecc_iterations, r.ecc_interval, r.ecc_motion) == (8.0, 30, 30, "homography")
    assert Registrar(ecc_interval=1).ecc_interval == 1


@pytest.mark.parametrize("kwargs,error,message", [
    ({"output": "left"}, ValueError, "output must be 'rgb', 'thermal' or 'fixed', got 'left'"),
    ({"output": "fixed"}, ValueError, "output='fixed' needs output_size=(width, height)"),
    ({"ecc_motion": "euclidean"}, ValueError, "ecc_motion must be 'homography' or 'affine', got 'euclidean'"),
    ({"ecc_interval": 0}, ValueError, "ecc_interval must be >= 1, got 0"),
    ({"output": "fixed", "output_size": (0, 64)}, CalibrationError, "output_size must be positive, got (0, 64)"),
    ({"thermal_size": (640,)}, CalibrationError, "thermal_size must be [width, height], got (640,)"),
    ({"rgb_size": (640, -1)}, CalibrationError, "rgb_size must be positive, got (640, -1)"),
])
def test_registrar_messages(kwargs, error, message):
    with raises_exactly(error, message):
        Registrar(**kwargs)


def test_registrar_from_calibration():
    cal = Calibration(H_TRUE * 2, (320, 256), (640, 512))
    r = Registrar.from_calibration(cal, output="thermal", ecc_interval=7)
    np.testing.assert_allclose(r.homography, H_TRUE, rtol=1e-15)
    assert (r.calib_sizes, r.output, r.ecc_interval) == (((320, 256), (640, 512)), "thermal", 7)


def test_one_calibration_size_alone_does_not_rescale():
    h = translation(8, 4)
    np.testing.assert_array_equal(Registrar(h, thermal_size=(320, 256)).calibrated_homography((160, 128), (160, 128)), h)
    np.testing.assert_array_equal(Registrar(h, rgb_size=(320, 256)).calibrated_homography((160, 128), (160, 128)), h)


def test_single_source_registration_before_any_pair():
    ir, vi = np.zeros((64, 80), np.uint8), np.zeros((128, 160, 3), np.uint8)
    calibrated = Registrar(np.eye(3), thermal_size=(80, 64), rgb_size=(160, 128))
    assert calibrated.register_thermal(ir)[0].shape == (128, 160)  # the calibration's RGB size
    out, h = calibrated.register_rgb(vi)
    assert out is vi
    np.testing.assert_array_equal(h, np.eye(3))
    out, h = Registrar().register_thermal(ir)  # nothing known: the thermal size
    assert out is ir
    np.testing.assert_array_equal(h, np.eye(3))


def test_single_source_registration_in_the_thermal_frame():
    ir, vi = shifted_pair(0, 0)
    r = Registrar(translation(5, -3), output="thermal")
    out, h = r.register_thermal(ir)
    assert out is ir
    np.testing.assert_allclose(h, np.eye(3), atol=1e-12)
    out, h = r.register_rgb(vi)
    np.testing.assert_array_equal(out, cv2.warpAffine(vi, translation(-5, 3)[:2], (160, 128)))
    np.testing.assert_allclose(h, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("th_size,rgb_size", [((80, 64), (160, 128)), ((100, 20), (200, 40)), ((160, 64), (160, 128))])
def test_pre_registered_thermal_is_enlarged_bilinearly(th_size, rgb_size):
    ir = texture(th_size)
    vi = np.zeros((rgb_size[1], rgb_size[0], 3), np.uint8)
    reg = Registrar().register(ir, vi)
    np.testing.assert_array_equal(reg.ir, cv2.resize(ir, rgb_size, interpolation=cv2.INTER_LINEAR))


def test_fixed_output_shrinks_by_area_averaging():
    ir, vi = shifted_pair(0, 0)
    reg = Registrar(output="fixed", output_size=(40, 32)).register(ir, vi)
    np.testing.assert_array_equal(reg.vi, cv2.resize(vi, (40, 32), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(reg.ir, cv2.resize(ir, (40, 32), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("h", [translation(0.5, 0), np.array([[2, 0, 3], [0, 2, 1], [0, 0, 1]], float), H_TRUE])
def test_thermal_warp_into_a_larger_rgb_frame(h):
    ir = texture((80, 64))
    reg = Registrar(h).register(ir, np.zeros((128, 160, 3), np.uint8))
    expected = cv2.warpPerspective(ir, h, (160, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    np.testing.assert_array_equal(reg.ir, expected)


def test_round_off_sized_differences_from_identity_are_identity():
    ir, vi = shifted_pair(0, 0)
    h = np.eye(3)
    h[0, 1] = 1e-9
    reg = Registrar(h).register(ir, vi)
    assert reg.ir is ir and reg.vi is vi


def test_quality_without_warping_is_the_plain_score():
    ir, vi = shifted_pair(1, 0)
    assert Registrar().register(ir, vi).quality == pytest.approx(gradient_ncc(ir, vi[..., 0]), rel=1e-6)


def test_quality_counts_only_pixels_both_images_cover():
    # the thermal camera sees only x >= 40 of the RGB frame; outside it, the warped thermal image is black
    vi = cv2.cvtColor(texture(), cv2.COLOR_GRAY2BGR)
    ir = vi[:, 40:, 0].copy()
    reg = Registrar(translation(40, 0), output="fixed", output_size=(80, 64)).register(ir, vi)
    assert reg.quality > 0.9
    # an identity H between calibrated sizes: the thermal image covers the top-left quarter only
    small = Registrar(np.eye(3), thermal_size=(80, 64), rgb_size=(160, 128)).register(vi[:64, :80, 0].copy(), vi)
    assert small.quality > 0.9


def test_quality_in_the_rgb_frame_uses_the_thermal_footprint():
    # ECC's score: the thermal image (40x32) moved by (20, 16) into an 80x64 frame equal to it there
    ir_low = texture((40, 32), seed=1)
    vi_low = texture((80, 64), seed=2)
    vi_low[16:48, 20:60] = ir_low
    q, warped, mask = Registrar()._quality_rgb_frame(ir_low, vi_low, translation(20, 16), (40, 32), (80, 64))
    assert q == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(warped[16:48, 20:60], ir_low)
    np.testing.assert_array_equal(mask, registration._footprint((40, 32), translation(20, 16), (80, 64)))


class FakeEcc:
    """Stands in for cv2.findTransformECC: records its inputs and returns ``warp`` (a 3x3 or 2x3
    array in the downscaled RGB frame), or raises cv2.error when ``warp`` is None."""

    def __init__(self, warp=None):
        self.warp, self.calls = warp, []

    def __call__(self, template, image, warp, motion, criteria, mask, *rest):
        self.calls.append({"template": template, "image": image, "motion": motion, "mask": mask})
        if self.warp is None:
            raise cv2.error("ECC did not converge")
        return 1.0, np.asarray(self.warp, np.float32)


def ecc_registrar(monkeypatch, warp, homography=None, **kwargs):
    fake = FakeEcc(warp)
    monkeypatch.setattr(cv2, "findTransformECC", fake)
    return Registrar(homography, ecc_refine=True, ecc_interval=1, **kwargs), fake


@pytest.mark.parametrize("motion,cv_motion", [("homography", cv2.MOTION_HOMOGRAPHY), ("affine", cv2.MOTION_AFFINE)])
def test_ecc_inputs(monkeypatch, motion, cv_motion):
    # ECC runs on the downscaled (320x256 -> 160x128) gradient images of the RGB frame, within the
    # thermal footprint: the thermal image covers x >= 80, i.e. x >= 40 downscaled, 44 once eroded
    ir, vi = texture((320, 256), seed=1), cv2.cvtColor(texture((320, 256)), cv2.COLOR_GRAY2BGR)
    registrar, fake = ecc_registrar(monkeypatch, np.eye(3)[:2] if motion == "affine" else np.eye(3),
                                    homography=translation(80, 0), ecc_motion=motion)
    registrar.register(ir, vi)
    [call] = fake.calls
    assert call["motion"] == cv_motion
    assert call["template"].shape == call["image"].shape == call["mask"].shape == (128, 160)
    assert call["template"].dtype == call["image"].dtype == np.float32
    assert (call["mask"][:, :44] == 0).all() and (call["mask"][:, 44:] == 255).all()
    assert (registrar.stats.ecc_runs, registrar.stats.ecc_failed) == (1, 0)


@pytest.mark.parametrize("th_size,th_low", [((80, 64), (40, 32)), ((8, 4), (8, 8))])
def test_ecc_working_sizes(monkeypatch, th_size, th_low):
    # RGB 320x256 works at 160x128 (factor 2); the thermal image at the same scale, at least 8x8
    resized = []
    real_resize = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda img, size, **kw: (resized.append((size, kw.get("interpolation"))),
                                                                real_resize(img, size, **kw))[1])
    registrar, _ = ecc_registrar(monkeypatch, np.eye(3))
    registrar.register(texture(th_size), np.zeros((256, 320, 3), np.uint8))
    assert resized[:2] == [((160, 128), cv2.INTER_AREA), (th_low, cv2.INTER_AREA)]
    assert (registrar.stats.ecc_runs, registrar.stats.ecc_failed) == (1, 0)  # both scores computed


def test_ecc_failures_are_counted(monkeypatch):
    ir, vi = shifted_pair(3, 2)
    registrar, _ = ecc_registrar(monkeypatch, None)
    for _ in range(2):
        np.testing.assert_array_equal(registrar.register(ir, vi).homography_used, np.eye(3))
    assert (registrar.stats.ecc_runs, registrar.stats.ecc_failed, registrar.stats.ecc_rejected) == (2, 2, 0)


@pytest.mark.parametrize("warp", [np.zeros((3, 3)),  # not invertible
                                  [[1, 0, 0], [0, 1, 0], [0.01, 0, 1]]])  # its inverse crosses the horizon
def test_unusable_ecc_results_are_failures(monkeypatch, warp):
    ir, vi = shifted_pair(3, 2)
    registrar, _ = ecc_registrar(monkeypatch, warp)
    for _ in range(2):
        np.testing.assert_array_equal(registrar.register(ir, vi).homography_used, np.eye(3))
    assert (registrar.stats.ecc_failed, registrar.stats.ecc_rejected, registrar.stats.ecc_accepted) == (2, 0, 0)


def test_ecc_correction_of_exactly_the_limit_is_accepted(monkeypatch):
    # the scene is moved by (3, 4); ECC (at full scale here) reports the inverse move: a 5 px correction
    ir, vi = shifted_pair(3, 4)
    registrar, _ = ecc_registrar(monkeypatch, translation(-3, -4), ecc_max_correction_px=5.0)
    for _ in range(2):
        np.testing.assert_array_equal(registrar.register(ir, vi).homography_used, translation(3, 4))
    assert (registrar.stats.ecc_accepted, registrar.stats.ecc_rejected) == (2, 0)
    # the refined H belongs to these sizes only
    small = registrar.register(np.zeros((64, 80), np.uint8), np.zeros((64, 80, 3), np.uint8))
    np.testing.assert_array_equal(small.homography_used, np.eye(3))


def test_ecc_result_that_is_not_better_is_rejected(monkeypatch):
    # black images: both scores are exactly 0 whatever the correction, so none is an improvement
    ir, vi = np.zeros((128, 160), np.uint8), np.zeros((128, 160, 3), np.uint8)
    registrar, _ = ecc_registrar(monkeypatch, translation(-1, 0))
    for _ in range(2):
        np.testing.assert_array_equal(registrar.register(ir, vi).homography_used, np.eye(3))
    assert (registrar.stats.ecc_accepted, registrar.stats.ecc_rejected) == (0, 2)


def test_ecc_interval_counts_pairs(monkeypatch):
    ir, vi = shifted_pair(0, 0)
    registrar, fake = ecc_registrar(monkeypatch, np.eye(3))
    registrar.ecc_interval = 2
    for _ in range(5):
        registrar.register(ir, vi)
    assert len(fake.calls) == registrar.stats.ecc_runs == 3  # pairs 0, 2 and 4
