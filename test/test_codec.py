"""decode/encode of sensor_msgs Image and CompressedImage fields (diffmf_core.live.imagecodec)."""
import array
import struct

import cv2
import numpy as np
import pytest

from diffmf_core.live.agc import ThermalAGC
from diffmf_core.live.imagecodec import (SUPPORTED_ENCODINGS, ImageDecodeError, compressed_size, decode_compressed,
                                    decode_image, encode_compressed, encode_image)

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


@pytest.mark.parametrize("args,kind,message", [
    (("yuv420", 5, 7, 14, 0, bytes(70)), "unknown_encoding",
     f"unsupported encoding 'yuv420' (supported: {', '.join(SUPPORTED_ENCODINGS)})"),
    (("yuv422", 5, 7, 14, 0, bytes(70)), "bad_size", "yuv422 needs an even width, got 7x5"),
    (("nv12", 6, 8, 8, 0, bytes(71)), "short_data", "71 bytes < (height * 3 / 2)*step = 72"),
    (("mono8", 0, 7, 7, 0, b""), "empty", "image has zero size (7x0)"),
    (("mono8", 5, 0, 0, 0, b""), "empty", "image has zero size (0x5)"),
    (("bgr8", 5, 7, 20, 0, bytes(100)), "bad_step", "step 20 < 21 bytes for 7 px of bgr8"),
    (("mono16", 5, 7, 13, 0, bytes(65)), "bad_step", "step 13 < 14 bytes for 7 px of mono16"),
    (("bgr8", 5, 7, 21, 0, bytes(104)), "short_data", "104 bytes < height*step = 105"),
    (("mono8", 100, 100, 100, 0, bytes(10000)), "too_large", "100x100 exceeds max_pixels=9999"),
])
def test_rejections(args, kind, message):
    """The kind (a counter key) and the message (logged by the node as "kind: message")."""
    with pytest.raises(ImageDecodeError) as err:
        decode_image(*args, max_pixels=9999, agc=fixed_agc())
    assert (err.value.kind, err.value.message, str(err.value)) == (kind, message, f"{kind}: {message}")


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


# ------------------------------------------------------------------ found by the scoped mutation run
SOI = b"\xff\xd8"
NO_SOF = "bad_jpeg: JPEG without a frame header (SOF)"


def sof(height: int, width: int, length: int = 17) -> bytes:
    """A baseline JPEG frame header: marker, length, precision 8, height, width (components not needed)."""
    return b"\xff\xc0" + struct.pack(">HBHH", length, 8, height, width)


@pytest.mark.parametrize("data,expected", [
    (SOI + sof(5, 7), (7, 5)),                                # header ends exactly after the width
    (SOI + sof(5, 7, length=7), (7, 5)),                      # shortest accepted length field
    (SOI + sof(5, 7, length=0x8011), (7, 5)),                 # length field read unsigned
    (SOI + sof(40000, 50000), (50000, 40000)),                # sizes read unsigned
    (SOI + b"\xff" + sof(5, 7), (7, 5)),                      # a fill byte before a marker
    (SOI + b"\xff\xff\xff" + sof(5, 7), (7, 5)),              # fill bytes before a marker
    (SOI + b"\xff\xd0\xff\x01" + sof(5, 7), (7, 5)),          # markers without a length field (RST0, TEM)
    (SOI + b"\xff\xe0\x00\x04ab" + sof(5, 7), (7, 5)),        # a segment skipped by its length
    (SOI + sof(5, 7, length=6) + bytes(4), NO_SOF),           # length too short for a frame header
    (SOI + sof(5, 7)[:6], NO_SOF),                            # frame header cut short
    (SOI + b"\xff\xd9\x00\x02" + sof(5, 7), NO_SOF),          # end of image before the frame header
    (SOI + b"\xff\xda\x00\x02" + sof(5, 7), NO_SOF),          # start of scan before the frame header
    (SOI + b"\xff\xe0\x00\x04ab", NO_SOF),                    # segments end exactly at the data's end
    (SOI, NO_SOF),
    (SOI + bytes(4), "bad_jpeg: JPEG marker expected at byte 2"),
    (SOI + b"\xff\xe0\x00\x04ab\x00\x00\x00\x00", "bad_jpeg: JPEG marker expected at byte 8"),
])
def test_jpeg_header_parsing(data, expected):
    """compressed_size on hand-made JPEG headers: the (width, height) of the frame header, or the error."""
    if isinstance(expected, tuple):
        assert compressed_size("jpeg", data) == expected
    else:
        with pytest.raises(ImageDecodeError) as err:
            compressed_size("jpeg", data)
        assert str(err.value) == expected


def test_png_header_parsing():
    """The IHDR size from the first 24 bytes alone; 23 bytes are refused; sizes are read unsigned."""
    data = encode_compressed(GRAY, "png")[1]
    assert compressed_size("png", data[:24]) == (7, 5)
    with pytest.raises(ImageDecodeError) as err:
        compressed_size("png", data[:23])
    assert (err.value.kind, err.value.message) == ("bad_png", "PNG without a valid IHDR header")
    assert compressed_size("png", data[:16] + struct.pack(">II", 2**31, 5) + data[24:]) == (2**31, 5)


@pytest.mark.parametrize("fmt", ["mono8;png", "jpg", "bgr8;jpg compressed bgr8"])
def test_format_words_split_at_semicolons_and_jpg_is_jpeg(fmt):
    data = encode_compressed(GRAY, "jpeg" if "jpg" in fmt else "png")[1]
    out = decode_compressed(fmt, data)
    assert out.shape == ((5, 7, 3) if fmt.startswith("bgr8") else (5, 7))


def test_max_pixels_is_inclusive():
    assert decode_image("mono8", 2, 3, 3, 0, bytes(6), max_pixels=6).shape == (2, 3)
    with pytest.raises(ImageDecodeError) as err:
        decode_image("mono8", 2, 3, 3, 0, bytes(6), max_pixels=5)
    assert str(err.value) == "too_large: 3x2 exceeds max_pixels=5"


def test_numpy_data_of_any_shape_is_read_as_bytes():
    """A numpy array of any shape and dtype is its flat bytes, for raw and compressed images."""
    fmt, data = encode_compressed(GRAY, "png")
    np.testing.assert_array_equal(decode_compressed(fmt, np.frombuffer(data, np.uint8).reshape(1, -1)), GRAY)
    assert compressed_size(fmt, np.frombuffer(data, np.uint8).reshape(1, -1)) == (7, 5)
    np.testing.assert_array_equal(decode_image("mono8", 5, 7, 7, 0, GRAY), GRAY)
    np.testing.assert_array_equal(decode_image("mono16", 5, 7, 14, 0, RAW16.astype("<u2"), agc=fixed_agc()),
                                  fixed_agc().apply(RAW16))


def test_other_data_types_are_refused_with_a_type_error():
    with pytest.raises(TypeError) as err:
        decode_image("mono8", 1, 1, 1, 0, [7])
    assert str(err.value) == "image data must be bytes, bytearray, memoryview, array.array or numpy, got list"


@pytest.mark.parametrize("call,expected", [
    (lambda: decode_image("mono16", 5, 7, 14, 0, RAW16.tobytes()),
     "needs_agc: mono16 is 16 bit and no ThermalAGC was given"),
    (lambda: decode_compressed("mono16; png compressed mono16", cv2.imencode(".png", RAW16)[1].tobytes()),
     "needs_agc: mono16 is 16 bit and no ThermalAGC was given"),
    (lambda: decode_compressed("", cv2.imencode(".png", RAW16)[1].tobytes()),
     "needs_agc: 16-bit PNG is 16 bit and no ThermalAGC was given"),
    (lambda: decode_compressed("png", cv2.imencode(".png", np.dstack([RAW16] * 3))[1].tobytes()),
     "unknown_encoding: 16-bit colour compressed images are not supported"),
    (lambda: decode_compressed("16UC1; compressedDepth png", encode_compressed(GRAY, "png")[1]),
     "unknown_encoding: unsupported compressed format '16UC1; compressedDepth png'"),
    (lambda: decode_compressed("tiff", encode_compressed(GRAY, "png")[1]),
     "unknown_encoding: unsupported compressed format 'tiff'"),
    (lambda: decode_compressed("png", b"GIF89a" + bytes(30)),
     "bad_compressed: data is neither PNG nor JPEG (format 'png')"),
    (lambda: decode_compressed("png", encode_compressed(BGR, "png")[1][:60]),
     "bad_png: corrupt 'png' image data"),
])
def test_compressed_error_messages(call, expected):
    """The kind and message of the rarer decode errors (the node logs them as "kind: message")."""
    with pytest.raises(ImageDecodeError) as err:
        call()
    assert str(err.value) == expected


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_decoder_exception_becomes_a_decode_error(monkeypatch, fmt):
    """An OpenCV exception inside imdecode (faked: the real decoder returns None on bad data) is
    reported with the kind of the data's format."""
    def failing(buf, flags):
        raise cv2.error("boom")

    data = encode_compressed(GRAY, fmt)[1]
    monkeypatch.setattr(cv2, "imdecode", failing)
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed(fmt, data)
    assert str(err.value) == f"bad_{fmt}: decoder failed: boom"


def test_unsupported_decoded_pixel_type_is_refused(monkeypatch):
    """A decoder result other than uint8/uint16 (faked: PNG and JPEG decode to those two)."""
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: np.zeros((5, 7), np.float32))
    with pytest.raises(ImageDecodeError) as err:
        decode_compressed("png", encode_compressed(GRAY, "png")[1])
    assert str(err.value) == "unknown_encoding: unsupported compressed pixel type float32"


def test_png_with_alpha_decodes_to_bgr():
    bgra = np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)])
    data = cv2.imencode(".png", bgra)[1].tobytes()
    np.testing.assert_array_equal(decode_compressed("png", data), BGR)
    np.testing.assert_array_equal(decode_compressed("bgra8; png compressed bgra8", data), BGR)


def test_single_channel_hxwx1_arrays_encode_as_mono8():
    np.testing.assert_array_equal(decode_image(*_fields(encode_image(GRAY[..., None], "mono8"))), GRAY)
    fmt, data = encode_compressed(GRAY[..., None], "png")
    assert fmt == "mono8; png compressed mono8"
    np.testing.assert_array_equal(decode_compressed(fmt, data), GRAY)


def test_one_pixel_image_encodes():
    assert encode_image(np.array([[7]], np.uint8), "mono8") == (1, 1, "mono8", 1, b"\x07")


@pytest.mark.parametrize("call,expected", [
    (lambda: encode_image(np.dstack([BGR, GRAY]), "bgr8"), "bgr8 needs a non-empty HxWx3 uint8 array, got uint8 (5, 7, 4)"),
    (lambda: encode_image(BGR[:0], "rgb8"), "rgb8 needs a non-empty HxWx3 uint8 array, got uint8 (0, 7, 3)"),
    (lambda: encode_image(GRAY[:, :0], "mono8"), "mono8 needs a non-empty HxW uint8 array, got uint8 (5, 0)"),
    (lambda: encode_image(BGR, "mono8"), "mono8 needs a non-empty HxW uint8 array, got uint8 (5, 7, 3)"),
    (lambda: encode_image(GRAY, "yuv422"), "encode_image supports bgr8, rgb8, mono8, not 'yuv422'"),
    (lambda: encode_compressed(BGR, "webp"), "encode_compressed supports 'jpeg' and 'png', not 'webp'"),
    (lambda: encode_compressed(np.dstack([BGR, GRAY]), "png"),
     "bgr8 needs a non-empty HxWx3 uint8 array, got uint8 (5, 7, 4)"),
    (lambda: encode_compressed(BGR.astype(np.float32), "png"),
     "bgr8 needs a non-empty HxWx3 uint8 array, got float32 (5, 7, 3)"),
    (lambda: encode_compressed(GRAY.astype(np.uint16), "png"),
     "mono8 needs a non-empty HxW uint8 array, got uint16 (5, 7)"),
])
def test_encode_error_messages(call, expected):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == expected


def test_encoder_failure_is_reported(monkeypatch):
    """cv2.imencode returning ok=False (faked: it does not for valid uint8 images)."""
    monkeypatch.setattr(cv2, "imencode", lambda ext, array, params: (False, None))
    with pytest.raises(ValueError) as err:
        encode_compressed(BGR, "png")
    assert str(err.value) == "OpenCV could not encode a (5, 7, 3) image as png"


def test_jpeg_quality_reaches_the_encoder_and_defaults_to_90():
    """encode_compressed's bytes are OpenCV's for the same quality (jpeg by default, quality 90)."""
    smooth = cv2.resize(BGR, (32, 24), interpolation=cv2.INTER_LINEAR)

    def reference(quality):
        return cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()

    assert reference(30) != reference(90) != reference(95)  # the quality changes the bytes here
    assert encode_compressed(smooth) == ("bgr8; jpeg compressed bgr8", reference(90))
    assert encode_compressed(smooth, "jpeg", quality=30)[1] == reference(30)
    assert encode_compressed(smooth, "png")[1] == cv2.imencode(".png", smooth)[1].tobytes()
