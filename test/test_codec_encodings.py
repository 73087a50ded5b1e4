"""The camera encodings beyond mono/bgr that imagecodec.decode_image converts (issue 24): Bayer
demosaicing, packed and semi-planar YUV, 16-bit colour, float radiometric thermal, 8UC4, and the
refusal naming the encoding and the supported list."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from diffmf_core.live.agc import ThermalAGC
from diffmf_core.live.imagecodec import SUPPORTED_ENCODINGS, ImageDecodeError, decode_image

H, W = 8, 12
COLOUR = (10, 100, 200)  # B, G, R of a uniform test image


def uniform_bgr() -> np.ndarray:
    return np.tile(np.array(COLOUR, np.uint8), (H, W, 1))


def mosaic(pattern: str) -> np.ndarray:
    """A Bayer mosaic of the uniform colour; ``pattern`` names the top-left 2x2 block (ROS naming)."""
    value = {"r": COLOUR[2], "g": COLOUR[1], "b": COLOUR[0]}
    out = np.zeros((H, W), np.uint8)
    for i, c in enumerate(pattern):
        out[i // 2::2, i % 2::2] = value[c]
    return out


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_is_demosaiced_to_the_right_colours(pattern):
    raw = mosaic(pattern)
    out = decode_image(f"bayer_{pattern}8", H, W, W, 0, raw.tobytes())
    assert out.shape == (H, W, 3)
    np.testing.assert_allclose(out[2:-2, 2:-2].reshape(-1, 3).mean(0), COLOUR, atol=2)


def test_yuv_encodings_decode_to_the_same_picture():
    bgr = uniform_bgr()
    yuv_i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # Y plane, then U and V planes
    y = yuv_i420[:H]
    u, v = (yuv_i420[H + i * H // 4:H + (i + 1) * H // 4].reshape(H // 2, W // 2) for i in (0, 1))
    nv12 = np.vstack([y, np.dstack([u, v]).reshape(H // 2, W)])
    nv21 = np.vstack([y, np.dstack([v, u]).reshape(H // 2, W)])
    u422, v422 = np.repeat(u, 2, axis=0), np.repeat(v, 2, axis=0)  # 4:2:2: chroma on every row
    uyvy = np.dstack([u422, y[:, 0::2], v422, y[:, 1::2]]).reshape(H, W * 2)
    yuyv = np.dstack([y[:, 0::2], u422, y[:, 1::2], v422]).reshape(H, W * 2)
    padded = np.hstack([uyvy, np.zeros((H, 4), np.uint8)])  # step > row bytes
    cases = {"nv12": (nv12, W), "nv21": (nv21, W), "yuv422": (uyvy, 2 * W), "uyvy": (uyvy, 2 * W),
             "yuv422_yuy2": (yuyv, 2 * W), "yuyv": (yuyv, 2 * W)}
    for encoding, (data, step) in cases.items():
        out = decode_image(encoding, H, W, step, 0, data.tobytes())
        assert out.shape == (H, W, 3), encoding
        np.testing.assert_allclose(out.reshape(-1, 3).mean(0), COLOUR, atol=3, err_msg=encoding)
    out = decode_image("yuv422", H, W, 2 * W + 4, 0, padded.tobytes())
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), COLOUR, atol=3)


@pytest.mark.parametrize("bigendian", [0, 1])
def test_sixteen_bit_colour_keeps_the_high_byte(bigendian):
    bgr16 = uniform_bgr().astype(np.uint16) * 257 + 3  # low byte noise must not matter
    dtype = ">u2" if bigendian else "<u2"
    out = decode_image("bgr16", H, W, W * 6, bigendian, bgr16.astype(dtype).tobytes())
    np.testing.assert_array_equal(out, uniform_bgr())
    out = decode_image("rgb16", H, W, W * 6, bigendian, bgr16[:, :, ::-1].astype(dtype).tobytes())
    np.testing.assert_array_equal(out, uniform_bgr())
    rgba = np.dstack([bgr16[:, :, ::-1], np.full((H, W), 65535, np.uint16)])
    out = decode_image("rgba16", H, W, W * 8, bigendian, rgba.astype(dtype).tobytes())
    np.testing.assert_array_equal(out, uniform_bgr())


def test_8uc4_is_bgra():
    bgra = np.dstack([uniform_bgr(), np.full((H, W), 9, np.uint8)])
    np.testing.assert_array_equal(decode_image("8UC4", H, W, W * 4, 0, bgra.tobytes()), uniform_bgr())


def test_float_thermal_goes_through_the_agc_in_hundredths():
    """32FC1 (e.g. degrees Celsius): count = round((v + 100) * 100); the fixed AGC maps 20..40 C
    (counts 12000..14000) to 0..255; NaN (invalid pixels) is the lowest count."""
    celsius = np.linspace(20.0, 40.0, H * W, dtype=np.float32).reshape(H, W)
    celsius[0, 0] = np.nan
    agc = ThermalAGC("fixed", 12000.0, 14000.0)
    for bigendian, dtype in ((0, "<f4"), (1, ">f4")):
        out = decode_image("32FC1", H, W, W * 4, bigendian, celsius.astype(dtype).tobytes(), agc=agc)
        assert out.dtype == np.uint8 and out.shape == (H, W)
        assert out[0, 0] == 0 and out[-1, -1] == 255
        expected = np.clip(np.rint((np.rint((celsius.astype(np.float64) + 100) * 100) - 12000) * 255 / 2000), 0, 255)
        np.testing.assert_array_equal(out[0, 1:], expected[0, 1:])
    with pytest.raises(ImageDecodeError) as err:
        decode_image("32FC1", H, W, W * 4, 0, celsius.tobytes())
    assert err.value.kind == "needs_agc"


def test_unsupported_encoding_names_itself_and_the_supported_list():
    with pytest.raises(ImageDecodeError) as err:
        decode_image("bayer_rggb16", H, W, W * 2, 0, bytes(H * W * 2))
    assert err.value.kind == "unknown_encoding"
    assert "'bayer_rggb16'" in err.value.message
    for encoding in ("mono8", "bgr16", "bayer_rggb8", "yuv422", "nv12", "32FC1", "8UC4"):
        assert encoding in SUPPORTED_ENCODINGS and encoding in err.value.message


def test_odd_sizes_of_subsampled_encodings_are_refused():
    for encoding, shape in (("bayer_rggb8", (H, W - 1)), ("bayer_rggb8", (H - 1, W)), ("nv12", (H - 1, W))):
        with pytest.raises(ImageDecodeError) as err:
            decode_image(encoding, shape[0], shape[1], W * 2, 0, bytes(H * W * 4))
        assert err.value.kind == "bad_size", encoding
