"""sensor_msgs/Image and CompressedImage fields <-> numpy, without cv_bridge and without rclpy.

Contract:
- ``decode_image(encoding, height, width, step, is_bigendian, data, *, max_pixels, agc)`` returns
  HxW uint8 (mono8, 8UC1; mono16, 16UC1 through ``agc``; 32FC1 radiometric thermal, quantized to
  16-bit counts ``round((v + 100) * 100)`` (0.01 per count from -100, so degrees Celsius or
  Kelvin up to 555.35 fit; NaN -> 0) and then through ``agc``) or HxWx3 BGR uint8 (bgr8, 8UC3 as
  bgr, rgb8, bgra8, rgba8, 8UC4 as bgra; alpha dropped; bgr16, rgb16, bgra16, rgba16: the high
  byte; bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8: OpenCV demosaicing; yuv422 / uyvy
  (UYVY), yuv422_yuy2 / yuyv (YUYV), nv12, nv21: OpenCV's YUV conversions; 4:2:2 needs an even
  width, 4:2:0 an even width and height). ``SUPPORTED_ENCODINGS`` lists them. Row padding
  (``step`` > row bytes) is honoured. mono8/8UC1, bgr8/8UC3 are returned as zero-copy, possibly
  read-only views into ``data`` (copy before writing); the other encodings produce one new
  contiguous array. 16-bit and float byte order follows ``is_bigendian``.
- ``data`` may be bytes, bytearray, memoryview, array.array or a numpy array (rclpy gives
  array.array/bytes, rosbags gives uint8 numpy arrays); other types raise TypeError.
- Bad input raises ``ImageDecodeError(kind, message)``; ``kind`` is a stable counter key:
  "unknown_encoding" (the message names the encoding and ``SUPPORTED_ENCODINGS``), "empty",
  "bad_size" (odd width/height for a subsampled YUV or Bayer encoding),
  "too_large" (height*width > max_pixels, checked before any
  allocation or decoding), "bad_step" (step < width * bytes per pixel), "short_data"
  (len(data) < height*step), "needs_agc" (16-bit image without an AGC), "bad_jpeg" / "bad_png"
  (data that starts as a JPEG / PNG but is corrupt or truncated), "bad_compressed" (data that is
  neither).
- ``decode_compressed(format, data, ...)`` reads JPEG/PNG (format strings "jpeg", "png",
  "bgr8; jpeg compressed bgr8", "mono8; png compressed mono8", ...). The image size is read
  from the PNG IHDR / JPEG SOF header first (diffmf_core.common.imageheader), so oversized
  images are refused before decoding.
  Output is gray if the original encoding (before ';') is mono, BGR if it is a colour encoding,
  else the decoded layout; 16-bit PNGs go through ``agc``.
- ``encode_image(array, encoding)`` -> (height, width, encoding, step, bytes) for bgr8/rgb8
  (input is BGR) and mono8; ``encode_compressed(array, fmt, quality)`` -> (format, bytes) with
  image_transport style format strings.
"""
from __future__ import annotations

import array as _array

import cv2
import numpy as np

from diffmf_core.common.imageheader import JPEG_MAGIC as _JPEG_MAGIC
from diffmf_core.common.imageheader import PNG_MAGIC as _PNG_MAGIC
from diffmf_core.common.imageheader import MAX_PIXELS, HeaderError, jpeg_size, png_size
from diffmf_core.live.agc import ThermalAGC


# encoding -> (channels, bytes per channel, conversion to BGR/gray or None)
_ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "mono8": (1, 1, None),
    "8UC1": (1, 1, None),
    "mono16": (1, 2, None),
    "16UC1": (1, 2, None),
    "bgr8": (3, 1, None),
    "8UC3": (3, 1, None),
    "rgb8": (3, 1, cv2.COLOR_RGB2BGR),
    "bgra8": (4, 1, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, 1, cv2.COLOR_RGBA2BGR),
}
# 16-bit colour: (channels, conversion of the high bytes to BGR or None)
_COLOUR16: dict[str, tuple[int, int | None]] = {
    "bgr16": (3, None),
    "rgb16": (3, cv2.COLOR_RGB2BGR),
    "bgra16": (4, cv2.COLOR_BGRA2BGR),
    "rgba16": (4, cv2.COLOR_RGBA2BGR),
}
# one byte per pixel, demosaiced (ROS names the pattern of the top-left 2x2 block)
_BAYER: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerRGGB2BGR,
    "bayer_bggr8": cv2.COLOR_BayerBGGR2BGR,
    "bayer_gbrg8": cv2.COLOR_BayerGBRG2BGR,
    "bayer_grbg8": cv2.COLOR_BayerGRBG2BGR,
}
# 4:2:2 packed, two bytes per pixel (ROS "yuv422" is UYVY, "yuv422_yuy2" is YUYV)
_YUV422: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2BGR_UYVY,
    "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2,
    "yuyv": cv2.COLOR_YUV2BGR_YUY2,
}
# 4:2:0 semi-planar: a Y plane of height rows, then height / 2 rows of interleaved chroma (step bytes each)
_YUV420: dict[str, int] = {"nv12": cv2.COLOR_YUV2BGR_NV12, "nv21": cv2.COLOR_YUV2BGR_NV21}
_FLOAT_THERMAL = {"32FC1"}
FLOAT_OFFSET, FLOAT_SCALE = 100.0, 100.0  # 32FC1 value v -> 16-bit count round((v + 100) * 100)
SUPPORTED_ENCODINGS = (tuple(_ENCODINGS) + ("8UC4",) + tuple(_FLOAT_THERMAL) + tuple(_COLOUR16)
                       + tuple(_BAYER) + tuple(_YUV422) + tuple(_YUV420))
_MONO_ENCODINGS = {"mono8", "8UC1", "mono16", "16UC1"}
_COLOUR_ENCODINGS = {"bgr8", "8UC3", "rgb8", "bgra8", "rgba8"}



class ImageDecodeError(ValueError):
    """An image message that cannot be decoded; ``kind`` is a short stable diagnostics key."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def _as_bytes_view(data) -> np.ndarray:
    """A flat uint8 view of ``data`` (no copy for contiguous buffers)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, _array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    raise TypeError(f"image data must be bytes, bytearray, memoryview, array.array or numpy, "
                    f"got {type(data).__name__}")


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError("empty", f"image has zero size ({width}x{height})")
    if height * width > max_pixels:
        raise ImageDecodeError("too_large", f"{width}x{height} exceeds max_pixels={max_pixels}")


def _to_8bit(raw16: np.ndarray, agc: ThermalAGC | None, encoding: str) -> np.ndarray:
    if agc is None:
        raise ImageDecodeError("needs_agc", f"{encoding} is 16 bit and no ThermalAGC was given")
    return agc.apply(raw16)


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian, data, *,
                 max_pixels: int = MAX_PIXELS, agc: ThermalAGC | None = None) -> np.ndarray:
    """Decode sensor_msgs/Image fields to HxW uint8 or HxWx3 BGR uint8 (see module contract)."""
    encoding = "bgra8" if encoding == "8UC4" else encoding
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageDecodeError("unknown_encoding", f"unsupported encoding {encoding!r} (supported: "
                                                   f"{', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(height), int(width), int(step)
    _check_size(height, width, max_pixels)
    if encoding not in _ENCODINGS:
        return _decode_converted(encoding, height, width, step, is_bigendian, data, agc)
    channels, depth, conversion = _ENCODINGS[encoding]
    buf = _checked_buffer(encoding, width, height, width * channels * depth, step, data)
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        raw = np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(step, 2))
        return _to_8bit(raw, agc, encoding)
    shape = (height, width) if channels == 1 else (height, width, channels)
    strides = (step, 1) if channels == 1 else (step, channels, 1)
    view = np.ndarray(shape, dtype=np.uint8, buffer=buf, strides=strides)
    return view if conversion is None else cv2.cvtColor(view, conversion)


def _checked_buffer(encoding: str, width: int, rows: int, row_bytes: int, step: int, data,
                    rows_name: str = "height") -> np.ndarray:
    """``data`` as flat bytes after the step and length checks (``rows`` rows of ``step`` bytes)."""
    if step < row_bytes:
        raise ImageDecodeError("bad_step", f"step {step} < {row_bytes} bytes for {width} px of {encoding}")
    buf = _as_bytes_view(data)
    if buf.size < rows * step:
        raise ImageDecodeError("short_data", f"{buf.size} bytes < {rows_name}*step = {rows * step}")
    return buf


def _decode_converted(encoding: str, height: int, width: int, step: int, is_bigendian, data,
                      agc: ThermalAGC | None) -> np.ndarray:
    """The encodings that OpenCV converts (Bayer, YUV), 16-bit colour and float thermal."""
    if encoding in _FLOAT_THERMAL:
        buf = _checked_buffer(encoding, width, height, width * 4, step, data)
        raw = np.ndarray((height, width), dtype=">f4" if is_bigendian else "<f4", buffer=buf, strides=(step, 4))
        counts = np.nan_to_num((raw.astype(np.float64) + FLOAT_OFFSET) * FLOAT_SCALE, nan=0.0)
        return _to_8bit(np.clip(np.rint(counts), 0, 65535).astype(np.uint16), agc, encoding)
    if encoding in _COLOUR16:
        channels, conversion = _COLOUR16[encoding]
        buf = _checked_buffer(encoding, width, height, width * channels * 2, step, data)
        raw = np.ndarray((height, width, channels), dtype=">u2" if is_bigendian else "<u2", buffer=buf,
                         strides=(step, channels * 2, 2))
        high = (raw >> 8).astype(np.uint8)
        return high if conversion is None else cv2.cvtColor(high, conversion)
    if encoding in _BAYER or encoding in _YUV422:
        if width % 2 or (encoding in _BAYER and height % 2):
            raise ImageDecodeError("bad_size", f"{encoding} needs an even width{' and height' * (encoding in _BAYER)}, "
                                               f"got {width}x{height}")
        per_pixel = 1 if encoding in _BAYER else 2
        buf = _checked_buffer(encoding, width, height, width * per_pixel, step, data)
        shape, strides = ((height, width), (step, 1)) if per_pixel == 1 else ((height, width, 2), (step, 2, 1))
        view = np.ndarray(shape, dtype=np.uint8, buffer=buf, strides=strides)
        return cv2.cvtColor(np.ascontiguousarray(view), _BAYER.get(encoding) or _YUV422[encoding])
    # 4:2:0 semi-planar (nv12 / nv21)
    if width % 2 or height % 2:
        raise ImageDecodeError("bad_size", f"{encoding} needs an even width and height, got {width}x{height}")
    rows = height + height // 2
    buf = _checked_buffer(encoding, width, rows, width, step, data, "(height * 3 / 2)")
    planes = np.ndarray((rows, width), dtype=np.uint8, buffer=buf, strides=(step, 1))
    return cv2.cvtColor(np.ascontiguousarray(planes), _YUV420[encoding])


def _compressed_kind(fmt: str, head: bytes) -> str:
    lowered = fmt.lower()
    if "compresseddepth" in lowered:
        raise ImageDecodeError("unknown_encoding", f"unsupported compressed format {fmt!r}")
    words = set(lowered.replace(";", " ").split())
    named = words & {"jpeg", "jpg", "png"}
    if lowered.strip() and not named:
        raise ImageDecodeError("unknown_encoding", f"unsupported compressed format {fmt!r}")
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    raise ImageDecodeError("bad_compressed", f"data is neither PNG nor JPEG (format {fmt!r})")


def compressed_size(fmt: str, data) -> tuple[int, int]:
    """(width, height) read from the PNG/JPEG header without decoding pixels."""
    blob = memoryview(_as_bytes_view(data))
    kind = _compressed_kind(fmt, bytes(blob[:8]))
    try:
        return png_size(blob) if kind == "png" else jpeg_size(blob)
    except HeaderError as exc:
        raise ImageDecodeError(exc.kind, str(exc)) from None


def decode_compressed(format: str, data, *, max_pixels: int = MAX_PIXELS,
                      agc: ThermalAGC | None = None) -> np.ndarray:
    """Decode sensor_msgs/CompressedImage (JPEG/PNG) to HxW uint8 or HxWx3 BGR uint8."""
    buf = _as_bytes_view(data)
    width, height = compressed_size(format, buf)  # the data starts as a PNG or a JPEG from here on
    bad = "bad_png" if bytes(buf[:8]).startswith(_PNG_MAGIC) else "bad_jpeg"
    _check_size(height, width, max_pixels)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError(bad, f"decoder failed: {exc}") from None
    if image is None or image.shape[:2] != (height, width):
        raise ImageDecodeError(bad, f"corrupt {format!r} image data")
    original = format.split(";")[0].strip()
    if image.dtype == np.uint16:
        if image.ndim != 2:
            raise ImageDecodeError("unknown_encoding", "16-bit colour compressed images are not supported")
        return _to_8bit(image, agc, original or "16-bit PNG")
    if image.dtype != np.uint8:
        raise ImageDecodeError("unknown_encoding", f"unsupported compressed pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if original in _MONO_ENCODINGS and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if original in _COLOUR_ENCODINGS and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _check_u8(array: np.ndarray, channels: int, encoding: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1 and channels == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if (array.dtype != np.uint8 or array.ndim != expected_ndim
            or (channels == 3 and array.shape[2] != 3) or array.size == 0):
        raise ValueError(f"{encoding} needs a non-empty {'HxW' if channels == 1 else 'HxWx3'} uint8 "
                         f"array, got {array.dtype} {array.shape}")
    return array


def encode_image(array: np.ndarray, encoding: str = "bgr8") -> tuple[int, int, str, int, bytes]:
    """(height, width, encoding, step, data bytes) for sensor_msgs/Image; input BGR or gray uint8."""
    if encoding not in ("bgr8", "rgb8", "mono8"):
        raise ValueError(f"encode_image supports bgr8, rgb8, mono8, not {encoding!r}")
    channels = 1 if encoding == "mono8" else 3
    array = _check_u8(array, channels, encoding)
    if encoding == "rgb8":
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    height, width = array.shape[:2]
    return height, width, encoding, width * channels, np.ascontiguousarray(array).tobytes()


def encode_compressed(array: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(format string, bytes) for sensor_msgs/CompressedImage; ``quality`` applies to JPEG only."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"encode_compressed supports 'jpeg' and 'png', not {fmt!r}")
    array = np.asarray(array)
    encoding = "mono8" if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1) else "bgr8"
    array = _check_u8(array, 1 if encoding == "mono8" else 3, encoding)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", array, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} image as {fmt}")
    return f"{encoding}; {fmt} compressed {encoding}", encoded.tobytes()
