"""decode/encode of sensor_msgs Image and CompressedImage fields (diffmf_core.live.imagecodec)."""
import array
import struct

import cv2
import numpy as np
import pytest

from diffmf_core.live.agc import ThermalAGC
from diffmf_core.live.imagecodec import (ImageDecodeError, compressed_size, decode_compressed, decode_image,
                                    encode_compressed, encode_image)

RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
RAW16 = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)


def padded(rows: np.ndarray, pad: int) -> tuple[int, bytes]:
    """(step, bytes) of a HxN uint8 row image with ``pad`` junk bytes after each row."""
    h, n = rows.shape
    out = np.full((h, n + pad), 0xAB, dtype=np.uint8)
    out[:, :n] = rows
    return n + pad, out.tobytes()


def fixed_agc() -> ThermalAGC:
    return ThermalAGC("fixed", low=0, high=65535)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding,pixels,expected", [
    ("mono8", GRAY, GRAY),
    ("8UC1", GRAY, GRAY),
    ("bgr8", BGR, BGR),
    ("8UC3", BGR, BGR),
    ("rgb8", BGR[..., ::-1], BGR),
    ("bgra8", np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)]), BGR),
    ("rgba8", np.dstack([BGR[..., ::-1], np.full(BGR.shape[:2], 9, np.uint8)]), BGR),
])
def test_8bit_encodings_with_padding(encoding, pixels, expected, pad):
    h, w = pixels.shape[:2]
    step, data = padded(pixels.reshape(h, -1), pad)
    out = decode_image(encoding, h, w, step, 0, data)
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_8bit_decode_is_zero_copy_view():
    step, data = padded(BGR.reshape(5, -1), 4)
    buf = bytearray(data)
    out = decode_image("bgr8", 5, 7, step, 0, buf)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))
    assert out.strides[0] == step


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("pad", [0, 1, 4])  # odd padding -> unaligned 16-bit rows
def test_16bit_byte_order_and_padding(encoding, bigendian, pad):
    raw = RAW16.astype(">u2" if bigendian else "<u2")
    step, data = padded(raw.view(np.uint8).reshape(5, -1), pad)
    out = decode_image(encoding, 5, 7, step, bigendian, data, agc=fixed_agc())
    np.testing.assert_array_equal(out, fixed_agc().apply(RAW16))
    assert out.dtype == np.uint8 and out.shape == (5, 7)


def test_16bit_fixed_agc_exact_values():
    raw = np.array([[1000, 1500, 2000, 500, 60000]], dtype=np.uint16)
    out = decode_image("mono16", 1, 5, 10, 1, raw.astype(">u2").tobytes(),
                       agc=ThermalAGC("fixed", low=1000, high=2000))
    assert out.tolist() == [[0, 128, 255, 0, 255]]


def test_16bit_without_agc_is_refused():
    with pytest.raises(ImageDecodeError) as err:
        decode_image("mono16", 5, 7, 14, 0, RAW16.tobytes())
    assert err.value.kind == "needs_agc"


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: array.array("B", b),
                                  lambda b: np.frombuffer(b, np.uint8).copy()])
def test_data_container_types(wrap):
    out = decode_image("bgr8", 5, 7, 21, 0, wrap(BGR.tobytes()))
    np.testing.assert_array_equal(out, BGR)


def test_one_pixel_image_is_valid():
    assert decode_image("mono8", 1, 1, 1, 0, b"\x07").tolist() == [[7]]
    assert decode_image("rgb8", 1, 1, 3, 0, b"\x01\x02\x03").tolist() == [[[3, 2, 1]]]


@pytest.mark.parametrize("args,kind", [
    (("yuv422", 5, 7, 14, 0, bytes(70)), "unknown_encoding"),
    (("mono8", 0, 7, 7, 0, b""), "empty"),
    (("mono8", 5, 0, 0, 0, b""), "empty"),
    (("bgr8", 5, 7, 20, 0, bytes(100)), "bad_step"),
    (("mono16", 5, 7, 13, 0, bytes(65)), "bad_step"),
    (("bgr8", 5, 7, 21, 0, bytes(104)), "short_data"),
    (("mono8", 100, 100, 100, 0, bytes(10000)), "too_large"),
])
def test_rejections(args, kind):
    with pytest.raises(ImageDecodeError) as err:
        decode_image(*args, max_pixels=9999, agc=fixed_agc())
    assert err.value.kind == kind
    if kind == "unknown_encoding":
        assert "yuv422" in str(err.value)


def test_too_large_is_checked_before_looking_at_data():
    with pytest.raises(ImageDecodeError) as err:
        decode_image("bgr8", 100_000, 100_000, 300_000, 0, b"")
    assert err.value.kind == "too_large"


# ------------------------------------------------------------------ compressed
@pytest.mark.parametrize("image", [BGR, GRAY])
def test_png_round_trip_is_exact(image):
    fmt, data = encode_compressed(image, "png")
    assert fmt == ("bgr8; png compressed bgr8" if image.ndim == 3 else "mono8; png compressed mono8")
    np.testing.assert_array_equal(decode_compressed(fmt, data), image)


@pytest.mark.parametrize("image", [BGR, GRAY])
def test_jpeg_round_trip(image):
    smooth = cv2.resize(image, (64, 48), interpolation=cv2.INTER_LINEAR)
    fmt, data = encode_compressed(smooth, "jpeg", quality=95)
    assert "jpeg" in fmt
    out = decode_compressed(fmt, np.frombuffer(data, np.uint8))  # rosbags gives numpy
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 6


@pytest.mark.parametrize("fmt,image,shape", [
    ("jpeg", BGR, (5, 7, 3)),
    ("png", GRAY, (5, 7)),
    ("mono8; png compressed mono8", BGR, (5, 7)),     # declared mono -> gray
    ("rgb8; png compressed bgr8", GRAY, (5, 7, 3)),   # declared colour -> BGR
])
def test_compressed_output_layout_follows_format(fmt, image, shape):
    data = encode_compressed(image, "png")[1]
    assert decode_compressed(fmt, data).shape == shape


def test_compressed_16bit_png_uses_agc():
    ok, data = cv2.imencode(".png", RAW16)
    out = decode_compressed("mono16; png compressed mono16", data.tobytes(), agc=fixed_agc())
    np.testing.assert_array_equal(out, fixed_agc().apply(RAW16))
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed("png", data.tobytes())
    assert err.value.kind == "needs_agc"


def test_compressed_header_size_without_decoding():
    big = np.zeros((300, 200), np.uint8)
    for fmt in ("jpeg", "png"):
        data = encode_compressed(big, fmt)[1]
        assert compressed_size(fmt, data) == (200, 300)
        with pytest.raises(ImageDecodeError) as err:
            decode_compressed(fmt, data, max_pixels=200 * 300 - 1)
        assert err.value.kind == "too_large"


def test_forged_png_header_is_refused_before_decoding():
    fmt, data = encode_compressed(GRAY, "png")
    forged = data[:16] + struct.pack(">II", 100_000, 100_000) + data[24:]
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed(fmt, forged)
    assert err.value.kind == "too_large"


@pytest.mark.parametrize("mangle, kind", [
    (lambda d: d[: len(d) // 2], "bad_{fmt}"),               # truncated
    (lambda d: d[:2] + bytes(len(d) - 2), None),             # header destroyed (JPEG: SOI kept)
    (lambda d: b"GIF89a" + d[6:], "bad_compressed"),         # not PNG/JPEG
    (lambda d: b"", "bad_compressed"),
])
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_corrupt_compressed_is_refused(fmt, mangle, kind):
    """One kind per bad input: bad_jpeg / bad_png for data that starts as that format, else bad_compressed."""
    data = encode_compressed(cv2.resize(BGR, (32, 32)), fmt)[1]
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed(fmt, mangle(data))
    expected = (kind or ("bad_jpeg" if fmt == "jpeg" else "bad_compressed")).format(fmt=fmt)
    assert err.value.kind == expected


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "tiff", "bgr8; webp compressed bgr8"])
def test_unsupported_compressed_formats(fmt):
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed(fmt, encode_compressed(GRAY, "png")[1])
    assert err.value.kind == "unknown_encoding"


# ------------------------------------------------------------------ raw encode
@pytest.mark.parametrize("encoding,image", [("bgr8", BGR), ("rgb8", BGR), ("mono8", GRAY)])
def test_encode_decode_round_trip(encoding, image):
    height, width, enc, step, data = encode_image(image, encoding)
    assert (height, width, enc) == (5, 7, encoding) and isinstance(data, bytes)
    assert step == 7 * (1 if encoding == "mono8" else 3) and len(data) == height * step
    np.testing.assert_array_equal(decode_image(enc, height, width, step, 0, data), image)


def test_encode_accepts_non_contiguous_views():
    view = BGR[:, ::2]
    np.testing.assert_array_equal(decode_image(*_fields(encode_image(view))), view)


def _fields(encoded):
    height, width, enc, step, data = encoded
    return enc, height, width, step, 0, data


@pytest.mark.parametrize("image,encoding", [(GRAY, "bgr8"), (BGR, "mono8"), (BGR.astype(np.float32), "bgr8"),
                                            (BGR, "yuv422")])
def test_encode_rejects_wrong_layout(image, encoding):
    with pytest.raises(ValueError):
        encode_image(image, encoding)
