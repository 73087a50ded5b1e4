"""Camera intrinsics from sensor_msgs/CameraInfo: undistortion before registration, and the
intrinsics of the fused output (fused/camera_info).

Contract:
- ``CameraModel(width, height, k, d, distortion_model, r=identity, p=())``: the camera of the
  images as they arrive: width/height of the image, k = 3x3 camera matrix (row-major 9 values),
  d = distortion coefficients, distortion_model as in CameraInfo ("plumb_bob",
  "rational_polynomial": OpenCV's model with len(d) coefficients; "equidistant": OpenCV's fisheye
  model with 4 coefficients), r = rectification rotation (9 values), p = 3x4 projection matrix of
  the rectified image (12 values; empty = [k | 0]).
- ``from_msg(msg)`` reads any CameraInfo-like object (rclpy or rosbags); returns None when the
  info carries no calibration (k all zero). Binning and ROI are applied as image_geometry's
  PinholeCameraModel does: the image is the ROI (all-zero ROI = the full width x height) divided
  by binning_x/binning_y; k and p move by the ROI offset and scale by 1/binning; r all zero means
  identity, p all zero means [k | 0].
- ``Undistorter().undistort(image, model)`` rectifies the image as image_proc's rectify does
  (OpenCV's initUndistortRectifyMap with k, d, r and p's 3x3 part): the result is the image of
  the pinhole camera ``model.rect_matrix`` (= k for a camera_info with p = [k | 0] and r = I),
  same size. The remap tables are cached and rebuilt only when the model changes. Identity (no
  copy) for ``model=None`` or a model that needs no rectification (zero distortion, r = I,
  p's 3x3 = k). An image whose size differs from the model's raises ``ValueError`` (the caller
  counts it and uses the raw image).
- ``output_camera_matrix(model, output_size)``: the rectified camera matrix of ``model`` carried to
  an output of ``output_size`` (width, height) made by scaling the whole image (cv2.resize
  convention); for the output geometry's own camera at its own size, unchanged.
- ``output_camera_info(model, output_size)`` -> ``OutputCamera`` (the CameraInfo fields of the fused
  image): rectified, so d all zero, r = I, k = output_camera_matrix, p = the scaled projection
  (its Tx/Ty column too); ``model=None`` (no camera_info, or one that did not fit the image) gives
  k and p all zero: uncalibrated, as the ROS convention has it.
- ``camera_info_topic(image_topic)``: the camera_info topic next to an image topic (image_transport).
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


IDENTITY9 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class CameraModel(NamedTuple):
    width: int
    height: int
    k: tuple  # 9 floats, row-major
    d: tuple
    distortion_model: str
    r: tuple = IDENTITY9  # 9 floats, row-major
    p: tuple = ()  # 12 floats, row-major; empty: [k | 0]

    @classmethod
    def from_msg(cls, msg) -> "CameraModel | None":
        k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not k.any():
            return None
        model = str(msg.distortion_model)
        if model not in PINHOLE_MODELS + FISHEYE_MODELS:
            raise ValueError(f"{model!r}: {UNSUPPORTED}")
        width, height = int(msg.width), int(msg.height)
        bx, by = max(1, int(getattr(msg, "binning_x", 0) or 0)), max(1, int(getattr(msg, "binning_y", 0) or 0))
        roi = getattr(msg, "roi", None)
        x0 = y0 = 0
        if roi is not None and int(roi.width) and int(roi.height):
            x0, y0, width, height = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        # image_geometry's reduced camera: shift by the ROI offset, then scale by the binning
        reduce = np.diag([1.0 / bx, 1.0 / by, 1.0]) @ np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        r = np.asarray(getattr(msg, "r", IDENTITY9), dtype=np.float64).reshape(9)
        p = getattr(msg, "p", None)
        p = np.asarray(np.zeros(12) if p is None else p, dtype=np.float64).reshape(3, 4)
        return cls(width // bx, height // by, _flat(reduce @ k), tuple(float(v) for v in msg.d), model,
                   _flat(r) if r.any() else IDENTITY9, _flat(reduce @ p) if p.any() else ())

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.k, dtype=np.float64).reshape(3, 3)

    @property
    def rotation(self) -> np.ndarray:
        return np.asarray(self.r, dtype=np.float64).reshape(3, 3)

    @property
    def projection(self) -> np.ndarray:
        """3x4 projection matrix of the rectified image."""
        if self.p:
            return np.asarray(self.p, dtype=np.float64).reshape(3, 4)
        return np.hstack([self.matrix, np.zeros((3, 1))])

    @property
    def rect_matrix(self) -> np.ndarray:
        """Camera matrix of the rectified image (p's 3x3 part)."""
        return self.projection[:, :3]

    @property
    def distorted(self) -> bool:
        return any(v != 0.0 for v in self.d)

    @property
    def needs_rectification(self) -> bool:
        return (self.distorted or not np.array_equal(self.rotation, np.eye(3))
                or not np.array_equal(self.rect_matrix, self.matrix))


def _flat(matrix: np.ndarray) -> tuple:
    return tuple(float(v) for v in np.asarray(matrix).reshape(-1))


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic next to an image topic (image_transport convention): thermal/image_raw ->
    thermal/camera_info, /flir/image_raw -> /flir/camera_info, /image -> /camera_info. Give it the
    resolved (remapped) image topic."""
    base = image_topic.rstrip("/").rpartition("/")[0]
    if image_topic.startswith("/") and not base:
        return "/camera_info"
    return f"{base}/camera_info" if base else "camera_info"


def camera_for(image: np.ndarray, model: CameraModel | None) -> tuple[CameraModel | None, str]:
    """(``model``, "") when it fits ``image``; (None, why) when the image has another size (it is
    then used raw, and its outputs carry no calibration)."""
    if model is None or (model.width, model.height) == (image.shape[1], image.shape[0]):
        return model, ""
    return None, f"image {image.shape[1]}x{image.shape[0]} but camera_info {model.width}x{model.height}"


class Undistorter:
    """Cached undistortion of one camera's images (see the module contract)."""

    def __init__(self) -> None:
        self._key = None
        self._maps = None
        self.rebuilds = 0

    def undistort(self, image: np.ndarray, model: CameraModel | None) -> np.ndarray:
        if model is None or not model.needs_rectification:
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
    k, r, new_k, size = model.matrix, model.rotation, model.rect_matrix, (model.width, model.height)
    if model.distortion_model in FISHEYE_MODELS:
        d = np.asarray((list(model.d) + [0.0] * 4)[:4], dtype=np.float64)
        return cv2.fisheye.initUndistortRectifyMap(k, d, r, new_k, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(k, np.asarray(model.d, dtype=np.float64), r, new_k, size, cv2.CV_16SC2)


def _resize_matrix(model: CameraModel, output_size: tuple[int, int]) -> np.ndarray:
    """Pixel map of cv2.resize from ``model``'s image to ``output_size`` (w, h) (pixel centres)."""
    sx, sy = output_size[0] / model.width, output_size[1] / model.height
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def output_camera_matrix(model: CameraModel, output_size: tuple[int, int]) -> np.ndarray:
    """3x3 camera matrix of an output of ``output_size`` (w, h) scaled from ``model``'s rectified image."""
    return _resize_matrix(model, output_size) @ model.rect_matrix


class OutputCamera(NamedTuple):
    """CameraInfo fields of a (rectified) output image; k and p all zero: uncalibrated."""

    k: list
    d: list
    r: list
    p: list
    distortion_model: str = "plumb_bob"


def output_camera_info(model: CameraModel | None, output_size: tuple[int, int]) -> OutputCamera:
    """The fused image's CameraInfo fields (see the module contract)."""
    if model is None:
        return OutputCamera([0.0] * 9, [0.0] * 5, list(IDENTITY9), [0.0] * 12)
    p = _resize_matrix(model, output_size) @ model.projection
    return OutputCamera(list(_flat(p[:, :3])), [0.0] * 5, list(IDENTITY9), list(_flat(p)))
