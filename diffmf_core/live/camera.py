"""Camera intrinsics from sensor_msgs/CameraInfo: undistortion before registration, and the
intrinsics of the fused output (fused/camera_info).

Contract:
- ``CameraModel(width, height, k, d, distortion_model)``: k = 3x3 camera matrix (row-major 9
  values accepted), d = distortion coefficients, distortion_model as in CameraInfo
  ("plumb_bob", "rational_polynomial": OpenCV's model with len(d) coefficients; "equidistant":
  OpenCV's fisheye model with 4 coefficients). ``from_msg(msg)`` reads any CameraInfo-like object
  (rclpy or rosbags); returns None when the info carries no calibration (k all zero).
- ``Undistorter().undistort(image, model)`` returns the image undistorted to a pinhole camera
  with the same camera matrix k and size (so the homography of a calibration file made on
  undistorted images applies). The remap tables are cached and rebuilt only when the model or
  the image size changes. Identity (no copy) for ``model=None`` or zero distortion. An image
  whose size differs from the model's raises ``ValueError`` (the caller counts and skips it).
- ``output_camera_matrix(model, output_size)``: k of ``model`` carried to an output of
  ``output_size`` (width, height) made by scaling the whole image (cv2.resize convention); for
  the output geometry's own camera at its own size, k unchanged.
- ``UNSUPPORTED``: distortion models that are refused (``ValueError`` from ``CameraModel``).
No ROS imports.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

PINHOLE_MODELS = ("plumb_bob", "rational_polynomial", "")
FISHEYE_MODELS = ("equidistant",)
UNSUPPORTED = "distortion model must be plumb_bob, rational_polynomial or equidistant"


class CameraModel(NamedTuple):
    width: int
    height: int
    k: tuple  # 9 floats, row-major
    d: tuple
    distortion_model: str

    @classmethod
    def from_msg(cls, msg) -> "CameraModel | None":
        k = tuple(float(v) for v in np.asarray(msg.k, dtype=np.float64).reshape(9))
        if not any(k):
            return None
        model = str(msg.distortion_model)
        if model not in PINHOLE_MODELS + FISHEYE_MODELS:
            raise ValueError(f"{model!r}: {UNSUPPORTED}")
        return cls(int(msg.width), int(msg.height), k, tuple(float(v) for v in msg.d), model)

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.k, dtype=np.float64).reshape(3, 3)

    @property
    def distorted(self) -> bool:
        return any(v != 0.0 for v in self.d)


class Undistorter:
    """Cached undistortion of one camera's images (see the module contract)."""

    def __init__(self) -> None:
        self._key = None
        self._maps = None
        self.rebuilds = 0

    def undistort(self, image: np.ndarray, model: CameraModel | None) -> np.ndarray:
        if model is None or not model.distorted:
            return image
        h, w = image.shape[:2]
        if (w, h) != (model.width, model.height):
            raise ValueError(f"image {w}x{h} but camera_info {model.width}x{model.height}")
        if self._key != model:
            self._maps = _maps(model)
            self._key = model
            self.rebuilds += 1
        return cv2.remap(image, self._maps[0], self._maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _maps(model: CameraModel):
    k, size = model.matrix, (model.width, model.height)
    if model.distortion_model in FISHEYE_MODELS:
        d = np.asarray((list(model.d) + [0.0] * 4)[:4], dtype=np.float64)
        return cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), k, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(k, np.asarray(model.d, dtype=np.float64), None, k, size, cv2.CV_16SC2)


def output_camera_matrix(model: CameraModel, output_size: tuple[int, int]) -> np.ndarray:
    """3x3 camera matrix of an output of ``output_size`` (w, h) scaled from ``model``'s image."""
    sx, sy = output_size[0] / model.width, output_size[1] / model.height
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return scale @ model.matrix
