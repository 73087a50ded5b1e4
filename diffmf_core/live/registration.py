"""Thermal -> RGB registration with a calibrated homography (optional ECC refinement); the
``diffmf calib`` subcommand that writes the calibration is ``diffmf_core.tools.calib``.

Convention: the homography ``H`` maps thermal pixel coordinates to RGB pixel coordinates,
``[x_rgb, y_rgb, 1]^T ~ H [x_th, y_th, 1]^T`` (pixel centres at integer coordinates, OpenCV).
Which pixels: those of the images the node registers, i.e. UNDISTORTED pixels for a camera whose
sensor_msgs/CameraInfo (with distortion) the node receives (it undistorts first, keeping the
camera matrix, diffmf_core.live.camera), and RAW pixels for a camera without camera_info. Pick the
points for ``diffmf calib`` on images of the same kind.

Calibration YAML schema (``load_calibration`` / ``save_calibration``)::

    homography: [[h11, h12, h13], [h21, h22, h23], [h31, h32, h33]]   # required (or 9 numbers)
    thermal_size: [width, height]   # image sizes H was computed for; optional (null)
    rgb_size: [width, height]       # optional (null)
    thermal_frame_id: thermal_optical   # optional strings (absent or empty: not named)
    rgb_frame_id: rgb_optical
    reprojection_error_px: 0.4      # optional, informational (written by ``diffmf calib``)

When both sizes are given and incoming images have other sizes, H is rescaled to them. An
identity H without sizes means "pre-registered": a thermal image of another size is resized to
the RGB size (the equivalent scaling homography is the one reported).

``Registrar.register(ir, vi)`` returns ``RegisteredPair(ir, vi, homography_used, quality, frame)``
with ``ir`` gray HxW uint8 and ``vi`` in its input layout, both in the output frame:
"rgb" (thermal warped with H), "thermal" (RGB warped with H^-1), or "fixed" (the RGB frame scaled
to ``output_size`` (width, height); both images warped). ``homography_used`` maps thermal pixels
to output pixels. Identity with equal sizes is a no-op (inputs returned, no warp). ``quality``
is the normalised cross-correlation of the two registered images' gradient magnitudes on a
downscaled copy, clipped to [0, 1]. With ``ecc_refine`` every ``ecc_interval``-th pair runs
cv2.findTransformECC on downscaled gradient images starting from the calibrated H; the result
is kept (and reused for the following pairs) only if it moves no thermal image corner more
than ``ecc_max_correction_px`` RGB pixels and improves the quality score.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import yaml

from diffmf_core.common.outputs import file_mode


_DET_MIN = 1e-9
_COND_MAX = 1e10
_EYE = np.eye(3)
_QUALITY_SIDE = 192  # longest side (at most) of the images the quality score and ECC work on


class CalibrationError(ValueError):
    """A homography or calibration file that cannot be used; the message states why."""


@dataclass
class Calibration:
    homography: np.ndarray
    thermal_size: tuple[int, int] | None = None  # (width, height)
    rgb_size: tuple[int, int] | None = None
    thermal_frame_id: str = ""  # "": not named in the file
    rgb_frame_id: str = ""
    reprojection_error_px: float | None = None


class RegisteredPair(NamedTuple):
    ir: np.ndarray
    vi: np.ndarray
    homography_used: np.ndarray  # thermal pixels -> output pixels
    quality: float
    frame: str  # "rgb" | "thermal" | "fixed"


def validate_homography(h, thermal_size: tuple[int, int] | None = None) -> np.ndarray:
    """Return H as a 3x3 float64 normalised to H[2,2] = 1 (when possible) or raise CalibrationError.

    Refused: wrong shape, non-finite values, |det| < 1e-9 or condition number > 1e10 after
    normalisation, and (with ``thermal_size``) a mapping that sends the thermal image across
    the line at infinity.
    """
    try:
        h = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"homography is not numeric: {exc}") from None
    if h.size == 9 and h.ndim == 1:
        h = h.reshape(3, 3)
    if h.shape != (3, 3):
        raise CalibrationError(f"homography must be 3x3, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise CalibrationError("homography has non-finite values")
    scale = h[2, 2] if abs(h[2, 2]) > 1e-12 else np.linalg.norm(h)
    if scale == 0:
        raise CalibrationError("homography is all zeros")
    h = h / scale
    det = np.linalg.det(h)
    if abs(det) < _DET_MIN:
        raise CalibrationError(f"homography is singular (|det| = {abs(det):.3g} < {_DET_MIN:g})")
    cond = np.linalg.cond(h)
    if not np.isfinite(cond) or cond > _COND_MAX:
        raise CalibrationError(f"homography is ill-conditioned (condition number {cond:.3g} > {_COND_MAX:g})")
    if thermal_size is not None:
        w = h[2] @ _corners(thermal_size).T
        if not (np.all(w > 0) or np.all(w < 0)):
            raise CalibrationError("homography maps the thermal image across the line at infinity")
    return h


def _size_pair(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{name} must be [width, height], got {value!r}") from None
    if width <= 0 or height <= 0:
        raise CalibrationError(f"{name} must be positive, got {value!r}")
    return width, height


def calibration_from_dict(data: dict) -> Calibration:
    """Build and validate a Calibration from the YAML schema's mapping."""
    if not isinstance(data, dict) or "homography" not in data:
        raise CalibrationError("calibration needs a 'homography' entry")
    thermal_size = _size_pair(data.get("thermal_size"), "thermal_size")
    error = data.get("reprojection_error_px")
    return Calibration(
        homography=validate_homography(data["homography"], thermal_size),
        thermal_size=thermal_size,
        rgb_size=_size_pair(data.get("rgb_size"), "rgb_size"),
        thermal_frame_id=str(data.get("thermal_frame_id") or ""),
        rgb_frame_id=str(data.get("rgb_frame_id") or ""),
        reprojection_error_px=None if error is None else float(error),
    )


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration YAML file (schema in the module docstring)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise CalibrationError(f"calibration {path} is not valid YAML: {exc}") from None
    try:
        return calibration_from_dict(data)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None


def calibration_to_yaml(cal: Calibration) -> str:
    """The YAML text of ``cal`` in the documented schema."""
    data = {
        "homography": [[float(v) for v in row] for row in cal.homography],
        "thermal_size": None if cal.thermal_size is None else list(cal.thermal_size),
        "rgb_size": None if cal.rgb_size is None else list(cal.rgb_size),
    }
    data.update({f"{s}_frame_id": getattr(cal, f"{s}_frame_id") for s in ("thermal", "rgb")
                 if getattr(cal, f"{s}_frame_id")})
    if cal.reprojection_error_px is not None:
        data["reprojection_error_px"] = float(cal.reprojection_error_px)
    header = "# diffmf calibration: homography maps thermal pixels to RGB pixels\n"
    return header + yaml.safe_dump(data, default_flow_style=None, sort_keys=False)


def save_calibration(cal: Calibration, path: str | Path) -> None:
    """Write ``cal`` atomically (temporary file in the same folder, then rename; the user's umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(calibration_to_yaml(cal))
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the file gets the user's umask
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def homography_from_points(src_pts, dst_pts, ransac_threshold_px: float = 3.0) -> np.ndarray:
    """H mapping ``src_pts`` (Nx2, thermal) onto ``dst_pts`` (Nx2, RGB); RANSAC when N > 4."""
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst):
        raise CalibrationError(f"{len(src)} thermal points but {len(dst)} RGB points")
    if len(src) < 4:
        raise CalibrationError(f"a homography needs at least 4 point pairs, got {len(src)}")
    method = cv2.RANSAC if len(src) > 4 else 0
    h, _ = cv2.findHomography(src, dst, method, ransac_threshold_px)
    if h is None:
        raise CalibrationError("points are degenerate (collinear or repeated): no homography")
    return validate_homography(h)


def reprojection_errors(h: np.ndarray, src_pts, dst_pts) -> np.ndarray:
    """Per-point distance (px) between H(src) and dst."""
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    return np.linalg.norm(cv2.perspectiveTransform(src, h).reshape(-1, 2) - dst, axis=1)


# --------------------------------------------------------------------------- geometry helpers
def _corners(size: tuple[int, int]) -> np.ndarray:
    width, height = size
    return np.array([[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]],
                    dtype=np.float64)


def _scale_h(src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """The resize homography src -> dst in OpenCV's pixel-centre convention (as cv2.resize)."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=np.float64)


def _size_of(img: np.ndarray) -> tuple[int, int]:
    return img.shape[1], img.shape[0]


def _close(a: np.ndarray, b, tol: float = 1e-9) -> bool:
    return float(np.max(np.abs(a - b))) <= tol


def _is_identity(h: np.ndarray) -> bool:
    return _close(h, _EYE)


def corner_shift_px(h_a: np.ndarray, h_b: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance between where ``h_a`` and ``h_b`` send the corners of a ``size`` image."""
    pts = _corners(size)[:, None, :2]
    return float(np.max(np.linalg.norm(cv2.perspectiveTransform(pts, h_a)
                                       - cv2.perspectiveTransform(pts, h_b), axis=2)))


def _low_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` divided by the smallest integer factor that brings it to <= _QUALITY_SIDE
    (integer factors keep cv2.resize's INTER_AREA on its fast path)."""
    k = -(-max(size) // _QUALITY_SIDE)
    return max(8, round(size[0] / k)), max(8, round(size[1] / k))


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _warp(img: np.ndarray, h: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if _is_identity(h) and _size_of(img) == size:
        return img
    affine = _close(h[2], _EYE[2], 1e-12)
    if affine and h[0, 1] == 0 and h[1, 0] == 0 and _close(h, _scale_h(_size_of(img), size)):
        grow = size[0] >= img.shape[1]
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)
    if affine:
        return cv2.warpAffine(img, h[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.warpPerspective(img, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _footprint(src_size: tuple[int, int], h: np.ndarray, dst_size: tuple[int, int]) -> np.ndarray:
    """255 where a ``src_size`` image warped by ``h`` has pixels whose gradients are unaffected by
    its border (eroded by the gradient filter's reach), else 0."""
    ones = np.full((src_size[1], src_size[0]), 255, np.uint8)
    mask = cv2.warpPerspective(ones, h, dst_size, flags=cv2.INTER_NEAREST)
    return cv2.erode(mask, np.ones((9, 9), np.uint8))


def _gradient(gray: np.ndarray) -> np.ndarray:
    g = cv2.GaussianBlur(gray.astype(np.float32), (5, 5), 1.0)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def gradient_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """NCC of the gradient magnitudes of two same-size gray images (over ``mask``), clipped to [0, 1]."""
    ga, gb = _gradient(a), _gradient(b)
    if mask is not None:
        keep = mask > 0
        ga, gb = ga[keep], gb[keep]
    ga = ga - ga.mean() if ga.size else ga
    gb = gb - gb.mean() if gb.size else gb
    denom = float(np.sqrt(np.sum(ga * ga) * np.sum(gb * gb)))
    if denom <= 1e-12:
        return 0.0
    return float(np.clip(np.sum(ga * gb) / denom, 0.0, 1.0))


# --------------------------------------------------------------------------- registrar
@dataclass
class RegistrarStats:
    ecc_runs: int = 0
    ecc_accepted: int = 0
    ecc_rejected: int = 0
    ecc_failed: int = 0


class Registrar:
    """Brings a thermal/RGB pair into one pixel frame (see module contract)."""

    def __init__(self, homography=None, output: str = "rgb", output_size: tuple[int, int] | None = None,
                 ecc_refine: bool = False, ecc_max_correction_px: float = 8.0, ecc_iterations: int = 30,
                 ecc_interval: int = 30, ecc_motion: str = "homography",
                 thermal_size: tuple[int, int] | None = None, rgb_size: tuple[int, int] | None = None):
        if output not in ("rgb", "thermal", "fixed"):
            raise ValueError(f"output must be 'rgb', 'thermal' or 'fixed', got {output!r}")
        if output == "fixed" and output_size is None:
            raise ValueError("output='fixed' needs output_size=(width, height)")
        if ecc_motion not in ("homography", "affine"):
            raise ValueError(f"ecc_motion must be 'homography' or 'affine', got {ecc_motion!r}")
        if ecc_interval < 1:
            raise ValueError(f"ecc_interval must be >= 1, got {ecc_interval}")
        self.homography = validate_homography(np.eye(3) if homography is None else homography)
        self.output = output
        self.output_size = None if output_size is None else _size_pair(output_size, "output_size")
        self.calib_sizes = (_size_pair(thermal_size, "thermal_size"), _size_pair(rgb_size, "rgb_size"))
        self.ecc_refine = ecc_refine
        self.ecc_max_correction_px = float(ecc_max_correction_px)
        self.ecc_iterations = int(ecc_iterations)
        self.ecc_interval = int(ecc_interval)
        self.ecc_motion = ecc_motion
        self.stats = RegistrarStats()
        self._refined: np.ndarray | None = None  # accepted ECC result for the current sizes
        self._refined_key: tuple | None = None
        self._frames = 0
        self._last_sizes: list[tuple[int, int] | None] = list(self.calib_sizes)

    @classmethod
    def from_calibration(cls, cal: Calibration, **kwargs) -> Registrar:
        """A Registrar using ``cal``'s homography and calibration sizes."""
        return cls(cal.homography, thermal_size=cal.thermal_size, rgb_size=cal.rgb_size, **kwargs)

    def calibrated_homography(self, thermal_size: tuple[int, int], rgb_size: tuple[int, int]) -> np.ndarray:
        """The calibrated thermal -> RGB homography adapted to these image sizes."""
        cal_th, cal_rgb = self.calib_sizes
        h = self.homography
        if cal_th is not None and cal_rgb is not None:
            return _scale_h(cal_rgb, rgb_size) @ h @ _scale_h(thermal_size, cal_th)
        if _is_identity(h):
            return _scale_h(thermal_size, rgb_size)
        return h

    def _thermal_to_rgb(self, th_size, rgb_size) -> np.ndarray:
        key = (th_size, rgb_size)
        if self._refined is not None and self._refined_key == key:
            return self._refined
        return self.calibrated_homography(th_size, rgb_size)

    def _rgb_to_output(self, rgb_size, th_size, h_th_rgb) -> tuple[np.ndarray, tuple[int, int]]:
        if self.output == "rgb":
            return np.eye(3), rgb_size
        if self.output == "thermal":
            return np.linalg.inv(h_th_rgb), th_size
        return _scale_h(rgb_size, self.output_size), self.output_size

    def register(self, ir: np.ndarray, vi: np.ndarray) -> RegisteredPair:
        """Warp the pair into the output frame; ``ir`` gray or BGR uint8, ``vi`` BGR or gray uint8."""
        ir = _gray(ir)
        th_size, rgb_size = _size_of(ir), _size_of(vi)
        self._last_sizes = [th_size, rgb_size]
        if self.ecc_refine and self._frames % self.ecc_interval == 0:
            self._run_ecc(ir, vi, th_size, rgb_size)
        self._frames += 1
        h = self._thermal_to_rgb(th_size, rgb_size)
        to_out, out_size = self._rgb_to_output(rgb_size, th_size, h)
        h_used = to_out @ h
        ir_out = _warp(ir, h_used, out_size)
        vi_out = _warp(vi, to_out, out_size)
        quality = gradient_ncc(*self._low_res_pair(ir_out, vi_out, h_used, to_out, th_size, rgb_size))
        return RegisteredPair(ir_out, vi_out, h_used, quality, self.output)

    def register_thermal(self, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Thermal-only: (gray image in the output frame, homography used). The RGB size is the
        last one seen, else the calibration's, else the thermal size."""
        ir = _gray(ir)
        th_size = _size_of(ir)
        rgb_size = self._last_sizes[1] or th_size
        h = self._thermal_to_rgb(th_size, rgb_size)
        to_out, out_size = self._rgb_to_output(rgb_size, th_size, h)
        h_used = to_out @ h
        return _warp(ir, h_used, out_size), h_used

    def register_rgb(self, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB-only: (image in the output frame, thermal -> output homography). The thermal size
        is the last one seen, else the calibration's, else the RGB size."""
        rgb_size = _size_of(vi)
        th_size = self._last_sizes[0] or rgb_size
        h = self._thermal_to_rgb(th_size, rgb_size)
        to_out, out_size = self._rgb_to_output(rgb_size, th_size, h)
        return _warp(vi, to_out, out_size), to_out @ h

    # ----------------------------------------------------------------- quality and ECC
    def _low_res_pair(self, ir_out, vi_out, h_used, to_out, th_size, rgb_size):
        """(ir, vi, mask) downscaled for the quality score; mask = where both images have pixels."""
        out_size = _size_of(ir_out)
        low = _low_size(out_size)
        to_low = _scale_h(out_size, low)
        mask = None
        for h, size in ((h_used, th_size), (to_out, rgb_size)):
            if not (_is_identity(h) and size == out_size):
                footprint = _footprint(size, to_low @ h, low)
                mask = footprint if mask is None else cv2.bitwise_and(mask, footprint)
        return _warp(ir_out, to_low, low), _warp(_gray(vi_out), to_low, low), mask

    def _quality_rgb_frame(self, ir_low, vi_low, h_low, th_low_size, low_size) -> tuple[float, np.ndarray, np.ndarray]:
        warped = cv2.warpPerspective(ir_low, h_low, low_size, flags=cv2.INTER_LINEAR)
        mask = _footprint(th_low_size, h_low, low_size)
        return gradient_ncc(warped, vi_low, mask), warped, mask

    def _run_ecc(self, ir: np.ndarray, vi: np.ndarray, th_size, rgb_size) -> None:
        """Refine the calibrated H with ECC; keep it only if small and better (see module doc)."""
        self.stats.ecc_runs += 1
        h_cal = self.calibrated_homography(th_size, rgb_size)
        rgb_low = _low_size(rgb_size)
        th_low = (max(8, round(th_size[0] * rgb_low[0] / rgb_size[0])),
                  max(8, round(th_size[1] * rgb_low[1] / rgb_size[1])))
        s_rgb, s_th = _scale_h(rgb_size, rgb_low), _scale_h(th_size, th_low)
        vi_low = cv2.resize(_gray(vi), rgb_low, interpolation=cv2.INTER_AREA)
        ir_low = cv2.resize(ir, th_low, interpolation=cv2.INTER_AREA)
        h_low = s_rgb @ h_cal @ np.linalg.inv(s_th)
        q_cal, warped, mask = self._quality_rgb_frame(ir_low, vi_low, h_low, th_low, rgb_low)
        motion = cv2.MOTION_HOMOGRAPHY if self.ecc_motion == "homography" else cv2.MOTION_AFFINE
        warp = np.eye(3, dtype=np.float32) if motion == cv2.MOTION_HOMOGRAPHY else np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.ecc_iterations, 1e-5)
        try:
            _, warp = cv2.findTransformECC(_gradient(vi_low), _gradient(warped), warp, motion, criteria, mask, 5)
        except cv2.error:
            self.stats.ecc_failed += 1
            return
        w = np.vstack([warp, [0, 0, 1]]) if warp.shape[0] == 2 else warp
        try:
            correction = np.linalg.inv(s_rgb) @ np.linalg.inv(w.astype(np.float64)) @ s_rgb
            h_new = validate_homography(correction @ h_cal, th_size)
        except (np.linalg.LinAlgError, CalibrationError):
            self.stats.ecc_failed += 1
            return
        q_new, _, _ = self._quality_rgb_frame(ir_low, vi_low, s_rgb @ h_new @ np.linalg.inv(s_th), th_low, rgb_low)
        if corner_shift_px(h_cal, h_new, th_size) <= self.ecc_max_correction_px and q_new > q_cal:
            self.stats.ecc_accepted += 1
            self._refined, self._refined_key = h_new, (th_size, rgb_size)
        else:
            self.stats.ecc_rejected += 1
