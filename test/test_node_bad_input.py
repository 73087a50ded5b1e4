"""diffmf_fusion under bad input, camera faults and bad parameters, with the real node in its own
process (classical fuser: the model is not the point here) fed scripted sequences from this one.

One node serves the bad-message and camera-fault tests: thermal arrives as raw Image, RGB as
CompressedImage (so both decoders are exercised). Every bad message is sent three times between
good pairs; the good pairs before and after must come out, the drop must be counted by kind in
/diagnostics, and the node must log it once. Each case has its own counter and log line, and no
other case touches them (checked), so the checks do not depend on the order the cases run in.
"""
from __future__ import annotations

import itertools
import re
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402

from diffmf_core.live.imagecodec import encode_compressed  # noqa: E402
from diffmf_ros.msg import FusionInfo  # noqa: E402
from noderig import Rig, Stamps, compressed, image, start_node  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

H, W = 128, 160
TIMEOUT_S = 0.3  # source_timeout_s
FPS = 20.0
NODE = {"fuser": "classical", "fallback_fuser": "max", "rgb_transport": "compressed",
        "max_image_pixels": 1_000_000, "source_timeout_s": TIMEOUT_S, "diagnostics_period_s": 0.2}
RNG = np.random.default_rng(0)
IR = RNG.integers(0, 255, (H, W), dtype=np.uint8)
VI = RNG.integers(0, 255, (H, W, 3), dtype=np.uint8)
VI_JPEG = encode_compressed(VI, "jpeg", 90)
CLASSICAL = FusionInfo.MODE_CLASSICAL


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("reliability_node"), **NODE)
    yield proc
    proc.stop_expecting_clean_exit()


@pytest.fixture(scope="module")
def rig(node):
    rig = Rig(transports=("raw", "compressed"))
    rig.connect(node)
    rig.stamps = Stamps()
    rig.prime(lambda: send_pair(rig), node)
    yield rig
    rig.close()


def send_pair(rig, thermal=None, rgb=None, stamp=None) -> int:
    """Publish one pair (default: the good frames) with one stamp; returns the stamp."""
    stamp = stamp or rig.stamps.next()
    rig.publish("thermal", thermal(stamp) if thermal else image(IR, "mono8", stamp, "thermal_camera"))
    rig.publish("rgb", rgb(stamp) if rgb else compressed(*VI_JPEG, stamp, "rgb_camera"))
    return stamp


def good_pairs(rig, n: int = 2, allow_lost: int = 0, node=None) -> list:
    """Send ``n`` good pairs one at a time, each awaited (3 s); at most ``allow_lost`` may not come out."""
    outs = []
    for _ in range(n):
        stamp = send_pair(rig)
        if rig.wait_for(lambda: any(o.rgb == stamp for o in rig.outs[-20:]), 3.0):
            outs.append(rig.out_for(stamp))
    lost = n - len(outs)
    assert lost <= allow_lost, f"{lost} of {n} good pairs did not come out" + (f"\n{node.describe()}" if node else "")
    assert all(o.mode == CLASSICAL and o.thermal == o.rgb for o in outs), outs
    return outs


def counters(diag: dict) -> dict[str, int]:
    return {k: int(v) for k, v in diag.items() if k.startswith(("decode_error.", "sync_"))}


def anomalies(diag: dict) -> dict[str, int]:
    """The bad-input counters: decode_error.<kind> and the synchronizer's stamp anomalies."""
    return {k: v for k, v in counters(diag).items() if k.startswith("decode_error.") or k in ANOMALY_KEYS}


# --- bad messages: (case, messages to send given the last good stamp, counter, log text, pairs lost) -------


def thermal_image(encoding: str = "mono8", **fields):
    return lambda ref: ("thermal", image(IR, encoding, ref, "thermal_camera", **fields))


def rgb_blob(data: bytes, fmt: str = "bgr8; jpeg compressed bgr8"):
    return lambda ref: ("rgb", compressed(fmt, data, ref))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR says width x height, with a few bytes of data only."""
    ok, png = cv2.imencode(".png", np.zeros((2, 2), np.uint8))
    png = bytearray(png.tobytes())
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(png)


_JPEG = VI_JPEG[1]
_PNG = encode_compressed(VI, "png")[1]
BAD = {
    "unknown_encoding": ([thermal_image(encoding="yuv_bogus")], "decode_error.unknown_encoding", 0),
    "step_too_small": ([thermal_image(step=W - 1)], "decode_error.bad_step", 0),
    "data_too_short": ([thermal_image(data=IR.tobytes()[:-1])], "decode_error.short_data", 0),
    "zero_width_or_height": ([thermal_image(width=0, step=0), thermal_image(height=0, data=b"")],
                             "decode_error.empty", 0),
    # refused by max_image_pixels before any allocation: a header-only claim (16 bytes of data),
    # a real 1100x1000 image (1.1 Mpx > 1 Mpx), and a PNG whose IHDR claims 8000x8000
    "too_large": ([thermal_image(width=8000, height=8000, step=8000, data=bytes(16)),
                   lambda ref: ("thermal", image(np.zeros((1000, 1100), np.uint8), "mono8", ref)),
                   rgb_blob(png_claiming(8000, 8000), "png")], "decode_error.too_large", 0),
    "corrupt_jpeg": ([rgb_blob(_JPEG[:len(_JPEG) // 2]), rgb_blob(_JPEG[:100]),
                      rgb_blob(b"\xff\xd8" + RNG.integers(0, 255, 300, dtype=np.uint8).tobytes())],
                     "decode_error.bad_jpeg", 0),
    "corrupt_png": ([rgb_blob(_PNG[:200] + bytes(b ^ 0xFF for b in _PNG[200:260]) + _PNG[260:], "png"),
                     rgb_blob(_PNG[:len(_PNG) // 2], "png")], "decode_error.bad_png", 0),
    "not_jpeg_or_png": ([rgb_blob(b"GIF89a" + bytes(64))], "decode_error.bad_compressed", 0),
    "zero_stamp": ([lambda ref: ("thermal", image(IR, "mono8", 0)),
                    lambda ref: ("rgb", compressed(*VI_JPEG, 0))], "decode_error.zero_stamp", 0),
    "duplicate_stamp": ([lambda ref: ("thermal", image(IR, "mono8", ref))], "sync_duplicates", 0),
    "stamp_back_200ms": ([lambda ref: ("thermal", image(IR, "mono8", ref - 200_000_000))], "sync_out_of_order", 0),
    # a jump back of 10 s (bag loop, clock reset) restarts pairing: the next pair may be lost. The
    # repeats are 1 ms apart (new frames of the new epoch), so they are not counted as duplicates.
    "stamp_back_10s": ([lambda ref, n=itertools.count(): ("thermal", image(IR, "mono8", ref - 10_000_000_000
                                                                          + next(n) * 1_000_000))],
                       "sync_resets", 1),
}
ANOMALY_KEYS = ("sync_duplicates", "sync_out_of_order", "sync_resets")
LOG_TEXT = {"decode_error.": "message: {kind}: ", "sync_duplicates": "duplicate stamp ignored",
            "sync_out_of_order": "stamp older than already paired", "sync_resets": "pairing restarted"}


def log_text(key: str) -> str:
    if key.startswith("decode_error."):
        return LOG_TEXT["decode_error."].format(kind=key.split(".", 1)[1])
    return LOG_TEXT[key]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_message_counted_logged_once_and_good_pairs_flow(rig, node, case):
    builders, key, allow_lost = BAD[case]
    before_outs = good_pairs(rig, 2, node=node)
    before_all = anomalies(rig.fresh_diag())
    before = before_all.get(key, 0)
    ref = before_outs[-1].rgb
    sent = 0
    for _ in range(3):
        for build in builders:
            rig.publish(*build(ref))
            sent += 1
            time.sleep(1.0 / 50)  # a camera's pace: a burst would overflow the node's qos_depth
    expected = 1 if key == "sync_resets" else sent  # repeats of a back-jump are duplicates of it
    good_pairs(rig, 2 + allow_lost, allow_lost=allow_lost, node=node)
    diag = rig.fresh_diag(lambda d: counters(d).get(key, 0) >= before + expected)
    assert node.poll() is None
    assert int(diag.get("worker_errors", 0)) == 0
    after_all = anomalies(diag)
    others = {k: (before_all.get(k, 0), v) for k, v in after_all.items() if k != key and v != before_all.get(k, 0)}
    assert not others, f"{case} moved other bad-input counters (before, after): {others}"
    logged = node.output().count(log_text(key))
    assert logged == 1, f"{key} logged {logged} times (expected once):\n{node.describe()}"


def test_odd_but_valid_images_are_fused(rig, node):
    """1x1 thermal or RGB, and a thermal of another size with no calibration (identity, no sizes):
    the thermal image is resized to the RGB frame (registration.py); output = RGB size."""
    tiny_jpeg = encode_compressed(np.full((1, 1, 3), 90, np.uint8), "jpeg", 90)
    small_ir = np.ascontiguousarray(IR[::2, ::2])
    for thermal, rgb, size in (
            (lambda s: image(np.full((1, 1), 200, np.uint8), "mono8", s), None, (H, W)),
            (None, lambda s: compressed(*tiny_jpeg, s), (1, 1)),
            (lambda s: image(small_ir, "mono8", s), None, (H, W))):
        stamp = send_pair(rig, thermal, rgb)
        assert rig.wait_for(lambda: any(o.rgb == stamp for o in rig.outs[-20:]), 3.0), node.describe()
        assert rig.out_for(stamp).mode == CLASSICAL
        assert rig.wait_for(lambda: rig.image_for(stamp) is not None, 3.0)
        msg = rig.image_for(stamp)
        assert (msg.height, msg.width) == size
    good_pairs(rig, 1)
    assert int(rig.fresh_diag().get("worker_errors", 0)) == 0


def test_big_endian_mono16_thermal_decodes_through_agc(rig, node):
    """mono16 with is_bigendian=1: a horizontal ramp must come out as a rising ramp (fallback "max"
    with a black RGB frame passes the AGC output through); read little-endian it would not rise."""
    ramp = np.tile(np.linspace(1000, 60000, W).astype(">u2"), (H, 1))
    assert np.any(np.diff(ramp.view("<u2")[0].astype(int)) < 0)  # the byte order matters for this ramp
    black = encode_compressed(np.zeros((H, W, 3), np.uint8), "png")
    stamp = send_pair(rig, lambda s: image(ramp, "mono16", s, is_bigendian=1, step=W * 2),
                      lambda s: compressed(*black, s))
    assert rig.wait_for(lambda: rig.image_for(stamp) is not None, 3.0), node.describe()
    msg = rig.image_for(stamp)
    out = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 3)[..., 1].astype(int)
    row = out[H // 2]
    assert np.all(np.diff(row) >= -1), row
    assert row[-1] - row[0] > 150, row


def test_rgb_silence_degrades_to_thermal_only_and_recovers(rig, node):
    """The RGB camera stops: THERMAL_ONLY within source_timeout_s + one frame period (classical is
    fast; +0.1 s for scheduling on this loaded machine), in FusionInfo and /diagnostics; back -> fused.
    (The thermal direction, RGB_ONLY, is test_node_integration's.)"""
    last_rgb = good_pairs(rig, 2)[-1].rgb
    deadline = time.monotonic() + 5.0
    first = None
    while first is None and time.monotonic() < deadline:
        stamp = rig.stamps.next()
        rig.publish("thermal", image(IR, "mono8", stamp, "thermal_camera"))
        time.sleep(1.0 / FPS)  # frame pacing
        with rig.lock:
            first = next((o for o in rig.outs if o.thermal > last_rgb and o.mode == FusionInfo.MODE_THERMAL_ONLY),
                         None)
    assert first is not None, f"no THERMAL_ONLY output\n{node.describe()}"
    gap_s = (first.thermal - last_rgb) / 1e9
    print(f"THERMAL_ONLY from a thermal frame {gap_s:.3f} s after the last RGB frame")
    assert first.rgb == 0 and gap_s <= TIMEOUT_S + 1.0 / FPS + 0.1
    rig.fresh_diag(lambda d: d.get("mode") == "THERMAL_ONLY")
    good_pairs(rig, 2, allow_lost=1)
    rig.fresh_diag(lambda d: d.get("mode") == "CLASSICAL")


# --- parameters ---------------------------------------------------------------------------------------------


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


def call(rig, srv_type, name: str, request):
    client = rig.node.create_client(srv_type, f"/diffmf_fusion/{name}")
    try:
        assert client.wait_for_service(timeout_sec=20.0), f"/diffmf_fusion/{name} not available"
        future = client.call_async(request)
        assert rig.wait_for(future.done, 10.0, locked=False), f"{name} did not answer"
        return future.result()
    finally:
        rig.node.destroy_client(client)


def set_params(rig, **values):
    request = SetParameters.Request(parameters=[ParameterMsg(name=k, value=_value(v)) for k, v in values.items()])
    return call(rig, SetParameters, "set_parameters", request).results


def get_param(rig, name: str):
    value = call(rig, GetParameters, "get_parameters", GetParameters.Request(names=[name])).values[0]
    return value.double_value if value.type == ParameterType.PARAMETER_DOUBLE else value.string_value


@pytest.mark.parametrize("name, value, reason", [
    ("sync_slop_s", 5.0, r"range|\[0\.0, 1\.0\]"),          # out of range
    ("sync_slop_s", "fast", r"type"),                        # wrong type
    ("agc_low", 70000.0, r"range|65535"),                    # out of range
    ("thermal_agc_mode", "magic", r"auto, fixed"),           # not one of the choices
    ("device", "cuda", r"read.only"),                        # read-only at runtime
])
def test_runtime_parameter_refused_over_the_service(rig, node, name, value, reason):
    before = get_param(rig, name)
    result = set_params(rig, **{name: value})[0]
    assert not result.successful and re.search(reason, result.reason, re.I), result.reason
    assert get_param(rig, name) == before
    good_pairs(rig, 2, node=node)


def test_runtime_parameter_accepted_over_the_service(rig, node):
    assert set_params(rig, sync_slop_s=0.03)[0].successful
    assert get_param(rig, "sync_slop_s") == pytest.approx(0.03)
    good_pairs(rig, 2, node=node)


def _run_until_exit(tmp_path, timeout: float = 60.0, **params):
    proc = start_node(tmp_path, **{"fuser": "classical", **params})
    try:
        proc.popen.wait(timeout)
    finally:
        rc = proc.stop()
    return rc, proc.output()


@pytest.mark.parametrize("params, reason", [
    ({"sync_slop_s": 5.0}, r"sync_slop_s"),                 # out of range
    ({"qos_depth": "deep"}, r"qos_depth"),                  # wrong type
    ({"output_geometry": "sideways"}, r"output_geometry"),  # not one of the choices
])
def test_bad_start_parameters_exit_nonzero_with_reason(tmp_path, params, reason):
    rc, output = _run_until_exit(tmp_path, **params)
    assert rc == 2 and re.search(r"FATAL.*" + reason, output) and "Traceback" not in output, output


def test_singular_calibration_refuses_to_start(tmp_path):
    """A singular homography is refused at configure: the node exits 1 (never falls back to identity,
    which would publish silently misaligned fusion)."""
    calib = tmp_path / "singular.yaml"
    calib.write_text("homography: [[1, 2, 3], [2, 4, 6], [0, 0, 1]]\n")
    rc, output = _run_until_exit(tmp_path, calibration_file=str(calib))
    assert rc == 1 and "singular" in output, output
