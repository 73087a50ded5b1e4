"""Thermal 16 -> 8 bit gain control (diffmf_core.live.agc)."""
import numpy as np
import pytest

from diffmf_core.live.agc import ThermalAGC


def scene(level: float, seed: int = 0, size=(64, 80)) -> np.ndarray:
    """A raw thermal frame: a ramp from level to level + 2000 counts plus a little noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(level, level + 2000, size[1])[None, :].repeat(size[0], 0)
    return np.clip(ramp + rng.normal(0, 5, size), 0, 65535).astype(np.uint16)


def test_fixed_mode_exact_values():
    agc = ThermalAGC("fixed", low=1000, high=2020)
    raw = np.array([[0, 1000, 1004, 1510, 2020, 65535]], dtype=np.uint16)
    assert agc.apply(raw).tolist() == [[0, 0, 1, 128, 255, 255]]
    agc.apply(scene(30000))  # frames never change a fixed mapping
    agc.reset()
    assert agc.range == (1000.0, 2020.0)
    assert agc.apply(raw).tolist() == [[0, 0, 1, 128, 255, 255]]


def test_big_endian_input_maps_like_native():
    agc = ThermalAGC("fixed", low=0, high=4095)
    raw = scene(1000)
    np.testing.assert_array_equal(agc.apply(raw.astype(">u2")), agc.apply(raw))


def test_auto_first_frame_uses_percentiles():
    raw = scene(5000)
    out = ThermalAGC("auto", percentiles=(1, 99)).apply(raw)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert out.min() == 0 and out.max() == 255
    assert 100 < np.median(out) < 155


def mapped(agc: ThermalAGC, value: float) -> float:
    low, high = agc.range
    return float(np.clip((value - low) * 255.0 / (high - low), 0, 255))


def test_one_outlier_frame_does_not_make_the_mapping_jump():
    smoothed, unsmoothed = ThermalAGC("auto", smoothing=0.9), ThermalAGC("auto", smoothing=0.0)
    for k in range(10):
        for agc in (smoothed, unsmoothed):
            agc.apply(scene(5000, seed=k))
    before = mapped(smoothed, 6000)
    outlier = scene(5000, seed=99)
    outlier[:8, :20] = 9000  # a hot object (3 % of the frame) appears for one frame
    for agc in (smoothed, unsmoothed):
        agc.apply(outlier)
    jump = abs(mapped(smoothed, 6000) - before)
    assert abs(mapped(unsmoothed, 6000) - before) > 50  # per-frame percentiles would flicker
    assert jump < 15
    smoothed.apply(scene(5000, seed=20))
    assert abs(mapped(smoothed, 6000) - before) < jump  # and it relaxes back


def test_auto_converges_gradually_to_a_new_scene():
    agc = ThermalAGC("auto", smoothing=0.5)
    agc.apply(scene(1000))
    highs = []
    for k in range(14):
        agc.apply(scene(20000, seed=k))
        highs.append(agc.range[1])
    assert all(b > a for a, b in zip(highs[:8], highs[1:8]))  # monotone approach, no jump
    assert highs[0] < 13000
    assert abs(highs[-1] - np.percentile(scene(20000), 99)) < 20


def test_uniform_scene_keeps_min_span():
    agc = ThermalAGC("auto", min_span=32)
    out = agc.apply(np.full((8, 8), 3000, np.uint16))
    low, high = agc.range
    assert high - low == pytest.approx(32)
    assert out.min() == out.max() == 128


def test_reset_forgets_the_tracked_range():
    agc = ThermalAGC("auto")
    agc.apply(scene(1000))
    agc.reset()
    assert agc.range is None
    agc.apply(scene(40000))
    assert agc.range[0] > 39000


@pytest.mark.parametrize("kwargs", [dict(mode="fixed"), dict(mode="fixed", low=5, high=5),
                                    dict(mode="bogus"), dict(percentiles=(99, 1)), dict(smoothing=1.0)])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ThermalAGC(**kwargs)


def test_rejects_non_16bit_input():
    with pytest.raises(ValueError):
        ThermalAGC("fixed", low=0, high=10).apply(np.zeros((4, 4), np.float32))


# ---- issue 26: the pixels after the range moves (not only agc.range) -----------------------------

def expected_pixels(raw: np.ndarray, agc: ThermalAGC) -> np.ndarray:
    """The contract's mapping for the AGC's current range: clip(round((v - low) * 255 / (high - low)))."""
    low, high = agc.range
    return np.clip(np.rint((raw.astype(np.float64) - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def test_auto_pixels_follow_the_range_after_a_scene_change():
    """A scene change from 1000 to 30000 counts: every frame's pixels are the mapping of the range
    that frame moved to (a lookup table kept from the first frame would make them all 255)."""
    agc = ThermalAGC("auto", smoothing=0.5)
    ranges = []
    for k, level in enumerate([1000, 1000, 30000, 30000, 30000, 30000, 1000]):
        raw = scene(level, seed=k)
        out = agc.apply(raw)
        ranges.append(agc.range)
        np.testing.assert_array_equal(out, expected_pixels(raw, agc), err_msg=f"frame {k}, range {agc.range}")
    assert len(set(ranges)) == len(ranges)  # the range moved on every frame


def test_auto_pixels_after_a_reset_are_the_new_range():
    auto = ThermalAGC("auto", smoothing=0.9)
    auto.apply(scene(1000))
    auto.reset()
    raw = scene(40000, seed=3)
    out = auto.apply(raw)
    np.testing.assert_array_equal(out, expected_pixels(raw, auto))
    assert 100 < np.median(out) < 155


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_decoded_16_bit_and_float_thermal_follow_the_moving_range(encoding):
    """The codec paths that go through the AGC (mono16 / 16UC1 counts, 32FC1 degrees quantised to
    counts) give the current range's pixels after the range moved."""
    from diffmf_core.live.imagecodec import FLOAT_OFFSET, FLOAT_SCALE, decode_image

    agc = ThermalAGC("auto", smoothing=0.0)  # the range jumps to each frame's percentiles
    for k, level in enumerate([1000, 30000, 1000, 30000]):
        counts = scene(level, seed=k)
        if encoding == "32FC1":
            data = (counts.astype(np.float64) / FLOAT_SCALE - FLOAT_OFFSET).astype("<f4")
        else:
            data = counts.astype("<u2")
        h, w = counts.shape
        out = decode_image(encoding, h, w, w * data.itemsize, 0, data.tobytes(), agc=agc)
        np.testing.assert_array_equal(out, expected_pixels(counts, agc), err_msg=f"{encoding} frame {k}")
        assert 100 < np.median(out) < 155  # each scene spread over the grey levels


# ---- found by the scoped mutation run (issue 26) ----------------------------------------------------

def test_defaults_boundaries_and_messages():
    agc = ThermalAGC()
    assert (agc.mode, agc.percentiles, agc.smoothing, agc.min_span, agc.range) == ("auto", (1.0, 99.0), 0.9, 32.0, None)
    ThermalAGC("fixed", low=0, high=65535)  # the whole 16-bit range
    ThermalAGC(percentiles=(0, 100))
    ThermalAGC(min_span=0.5)
    refused = [
        (dict(mode="bogus"), "ThermalAGC mode must be 'auto' or 'fixed', got 'bogus'"),
        (dict(mode="fixed", high=10), "fixed AGC needs 0 <= low < high <= 65535, got low=None high=10"),
        (dict(mode="fixed", low=0, high=65535.5), "fixed AGC needs 0 <= low < high <= 65535, got low=0 high=65535.5"),
        (dict(percentiles=(5, 5)), "percentiles must satisfy 0 <= low < high <= 100, got (5, 5)"),
        (dict(percentiles=(0, 100.5)), "percentiles must satisfy 0 <= low < high <= 100, got (0, 100.5)"),
        (dict(smoothing=1.0), "smoothing must be in [0, 1), got 1.0"),
        (dict(min_span=0), "min_span must be > 0, got 0"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError) as err:
            ThermalAGC(**kwargs)
        assert str(err.value) == message


def test_apply_takes_only_2d_unsigned_16_or_8_bit():
    agc = ThermalAGC("fixed", low=0, high=255)
    assert agc.apply(np.arange(16, dtype=np.uint8).reshape(4, 4)).tolist()[0] == [0, 1, 2, 3]
    for bad, text in ((np.zeros((4, 4), np.uint32), "uint32 (4, 4)"),
                      (np.zeros((2, 4, 4), np.uint16), "uint16 (2, 4, 4)")):
        with pytest.raises(ValueError) as err:
            agc.apply(bad)
        assert str(err.value) == f"ThermalAGC.apply expects a 2-D uint16 array, got {text}"


def test_auto_range_is_the_smoothed_percentiles_of_a_subsample():
    """range = s * range + (1 - s) * percentiles(frame), both ends; the percentiles are measured
    on every k-th row and column, k = floor(sqrt(pixels / 65536)) (4 for 1024x1024)."""
    agc = ThermalAGC("auto", percentiles=(2, 97), smoothing=0.75)
    first, second = scene(1000, seed=1), scene(9000, seed=2)
    agc.apply(first)
    r1 = np.percentile(first, (2, 97))
    assert agc.range == pytest.approx(tuple(r1), rel=1e-12)
    agc.apply(second)
    assert agc.range == pytest.approx(tuple(0.75 * r1 + 0.25 * np.percentile(second, (2, 97))), rel=1e-12)
    big = np.full((1024, 1024), 50000, np.uint16)
    big[::4, ::4] = np.linspace(1000, 3000, 256 * 256).reshape(256, 256)  # only the sampled pixels are cool
    fresh = ThermalAGC("auto", percentiles=(2, 97))
    fresh.apply(big)
    assert fresh.range == pytest.approx(tuple(np.percentile(big[::4, ::4], (2, 97))), rel=1e-12)


def test_the_lookup_table_is_built_once_per_range():
    """A fixed range builds its 65536-entry table once, not per frame; a new range builds a new one."""
    agc = ThermalAGC("fixed", low=100, high=200)
    agc.apply(scene(100))
    table = agc._lut
    agc.apply(scene(150))
    assert agc._lut is table
    auto = ThermalAGC("auto")
    auto.apply(scene(100))
    table = auto._lut
    auto.apply(scene(5000))
    assert auto._lut is not table
