"""Property tests (derandomised: a fixed seed, repeatable): decoders only ever raise ImageDecodeError; the
synchronizer's invariants hold."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffmf_core.live.agc import ThermalAGC
from diffmf_core.live.imagecodec import ImageDecodeError, decode_compressed, decode_image, encode_compressed
from diffmf_core.live.sync import PairSynchronizer

# derandomize: the examples come from a fixed seed (no example database), so every run checks the same
# cases and a failure reproduces; the counts are sized to the suite's time (about 0.5 s per test each).
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SYNC = settings(FAST, max_examples=400)
ENCODINGS = ["mono8", "8UC1", "mono16", "16UC1", "bgr8", "8UC3", "rgb8", "bgra8", "rgba8", "8UC4", "32FC1",
             "bgr16", "rgba16", "bayer_grbg8", "yuv422", "yuv422_yuy2", "nv12", "yuv420", "", "BGR8"]
BPP = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "bgr8": 3, "8UC3": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4,
       "8UC4": 4, "32FC1": 4, "bgr16": 6, "rgba16": 8, "bayer_grbg8": 1, "yuv422": 2, "yuv422_yuy2": 2, "nv12": 1}
GRAY_OUT = {"mono8", "8UC1", "mono16", "16UC1", "32FC1"}


@FAST
@given(encoding=st.sampled_from(ENCODINGS), height=st.integers(-2, 9), width=st.integers(-2, 9),
       pad=st.integers(-3, 5), extra=st.integers(-20, 8), bigendian=st.integers(0, 1),
       container=st.sampled_from([bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)]),
       seed=st.integers(0, 2**16))
def test_decode_image_raises_only_decode_errors(encoding, height, width, pad, extra, bigendian, container, seed):
    step = max(width, 0) * BPP.get(encoding, 1) + pad
    n = max(0, max(height, 0) * step + extra)
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    try:
        out = decode_image(encoding, height, width, step, bigendian, container(data), max_pixels=64,
                           agc=ThermalAGC("auto"))
    except ImageDecodeError as exc:
        assert exc.kind in {"unknown_encoding", "empty", "too_large", "bad_step", "short_data", "bad_size"}
        return
    assert out.dtype == np.uint8
    assert out.shape == ((height, width) if encoding in GRAY_OUT else (height, width, 3))


@FAST
@given(fmt=st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", "mono8; png compressed mono8", ""]),
       kind=st.sampled_from(["jpeg", "png"]), cut=st.integers(0, 400), flips=st.lists(st.integers(0, 399), max_size=6),
       gray=st.booleans())
def test_decode_compressed_raises_only_decode_errors(fmt, kind, cut, flips, gray):
    image = np.random.default_rng(cut).integers(0, 256, (12, 10) if gray else (12, 10, 3), dtype=np.uint8)
    data = bytearray(encode_compressed(image, kind)[1])
    for pos in flips:
        if pos < len(data):
            data[pos] ^= 0x5A
    data = bytes(data[: len(data) - cut])
    try:
        out = decode_compressed(fmt, data, max_pixels=1000)
    except ImageDecodeError as exc:
        assert exc.kind in {"bad_jpeg", "bad_png", "bad_compressed", "too_large", "empty", "unknown_encoding"}
        return
    assert out.dtype == np.uint8 and out.shape[:2] == (12, 10)


# one event: (input, delta to the input's previous stamp in ms); negative deltas give
# out-of-order messages and, beyond -1000 ms, bag loops
EVENTS = st.lists(st.tuples(st.sampled_from("tr"), st.one_of(st.integers(0, 60), st.integers(-80, -1),
                                                             st.integers(-5000, -1200))),
                  min_size=1, max_size=120)


@SYNC
@given(events=EVENTS, queue_size=st.integers(1, 6), slop_ms=st.integers(0, 40), offset_ms=st.integers(-30, 30),
       bound_ms=st.sampled_from([0, 10]))
def test_synchronizer_invariants(events, queue_size, slop_ms, offset_ms, bound_ms):
    sync = PairSynchronizer(queue_size=queue_size, slop=slop_ms / 1000, thermal_offset=offset_ms / 1000,
                            inter_message_lower_bound=(bound_ms / 1000, bound_ms / 1000))
    clock = {"t": 10_000, "r": 10_000}
    last = {"resets": 0, "t": None, "r": None}
    for who, delta in events:
        clock[who] += delta
        stamp = clock[who] * 1_000_000
        pairs = (sync.add_thermal if who == "t" else sync.add_rgb)(stamp, (who, stamp))
        assert max(sync.queue_lengths()) <= queue_size
        if sync.stats.resets != last["resets"]:
            last.update(resets=sync.stats.resets, t=None, r=None)
        for p in pairs:
            assert abs(p.thermal_stamp_ns - offset_ms * 1_000_000 - p.rgb_stamp_ns) <= slop_ms * 1_000_000
            assert p.thermal == ("t", p.thermal_stamp_ns) and p.rgb == ("r", p.rgb_stamp_ns)
            assert p.stamp_ns == p.rgb_stamp_ns
            assert last["t"] is None or p.thermal_stamp_ns > last["t"]
            assert last["r"] is None or p.rgb_stamp_ns > last["r"]
            last["t"], last["r"] = p.thermal_stamp_ns, p.rgb_stamp_ns
    s = sync.stats
    # every message is accounted for exactly once: paired, dropped, ignored as duplicate, or still queued
    assert len(events) == 2 * s.matched + s.dropped_thermal + s.dropped_rgb + s.duplicates + sum(sync.queue_lengths())


@FAST
@given(period_t=st.integers(20, 60), period_r=st.integers(20, 60), jitter=st.lists(st.integers(-3, 3), min_size=60,
                                                                                     max_size=60))
def test_regular_streams_keep_pairing(period_t, period_r, jitter):
    """Liveness: two steady streams with small jitter never starve the pairing."""
    sync = PairSynchronizer(queue_size=5, slop=max(period_t, period_r) / 2000 + 0.004)
    events = [(k * period_t + jitter[k], "t") for k in range(30)] + \
             [(k * period_r + jitter[30 + k], "r") for k in range(30)]
    events.sort()
    pairs = []
    for stamp, who in events:
        pairs += (sync.add_thermal if who == "t" else sync.add_rgb)(stamp * 1_000_000, None)
    slower = min(30 * period_t, 30 * period_r) // max(period_t, period_r)
    assert len(pairs) >= slower // 2
