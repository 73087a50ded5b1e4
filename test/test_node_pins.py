"""Issue 26: diffmf_fusion in this process, pinned where realistic single mutations survived before:
the /diagnostics level next to every degraded mode (THERMAL_ONLY, RGB_ONLY, CLASSICAL fallback, no
images, stalled output, not active); fused/camera_info's intrinsics for each ``output_geometry``;
a QoS override of the compressed transport visible in the graph; AGC parameters changed at run
time reach the decoded pixels. The node's handlers are called directly and its publishers are
replaced by recorders (no executor, no DDS round trip), so each test is deterministic."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, RegionOfInterest  # noqa: E402

from noderig import image  # noqa: E402
from test_agc import expected_pixels  # noqa: E402
from test_live_path_pins import GEOMETRIES, cameras  # noqa: E402
from test_node_conventions import node_factory  # noqa: E402,F401 - the fixture

pytestmark = pytest.mark.ros
SUCCESS = TransitionCallbackReturn.SUCCESS
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
FusionInfo = fusion_node.FusionInfo
MS = 1_000_000
IR = np.random.default_rng(0).integers(0, 256, (24, 32), np.uint8)
VI = np.random.default_rng(1).integers(0, 256, (32, 40, 3), np.uint8)


class Recorder:
    """Stands in for a publisher: keeps what is published."""

    def __init__(self) -> None:
        self.msgs: list = []

    def publish(self, msg) -> None:
        self.msgs.append(msg)


def active(node_factory, **params):  # noqa: F811 - the fixture
    """A configured, activated node whose outputs and /diagnostics go to Recorders."""
    node = node_factory(**params)
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    node._pubs = {name: Recorder() for name in node._pubs}
    node._diag_pub = Recorder()
    return node


class Cameras:
    """Sends frames into the node's handlers with increasing stamps (10 Hz on the stamps' clock)."""

    def __init__(self, node) -> None:
        self.node, self.stamp = node, 1_000_000 * MS

    def send(self, *sources: str, gap_ns: int = 0) -> None:
        """One frame per named camera at the next stamp (thermal ``gap_ns`` later)."""
        self.stamp += 100 * MS
        for source in sources:
            if source == "thermal":
                self.node._on_image("thermal", image(IR, "mono8", self.stamp + gap_ns, "flir"))
            else:
                self.node._on_image("rgb", image(VI, "bgr8", self.stamp, "cam"))


def wait_for_mode(node, mode: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while node._last_mode != mode and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node._last_mode == mode, (node._last_mode, dict(node.stats.counters))


def published_status(node) -> DiagnosticStatus:
    """The /diagnostics status the node publishes now (and its level equals diagnostic_level())."""
    node._publish_diagnostics()
    (status,) = node._diag_pub.msgs[-1].status
    assert (status.level, status.message) == tuple(node.diagnostic_level())
    return status


def mode_value(status: DiagnosticStatus) -> str:
    return {kv.key: kv.value for kv in status.values}["mode"]


@pytest.mark.parametrize("alone", ["thermal", "rgb"])
def test_one_camera_silent_is_a_warning_next_to_its_mode(node_factory, alone):  # noqa: F811
    """Pairs: OK (a deliberate classical fuser is no fault). The other camera silent for longer than
    source_timeout_s: the camera alone is published (THERMAL_ONLY / RGB_ONLY) and the level is WARN
    with the mode named; the pairs again: OK again."""
    node = active(node_factory, fallback_fuser="mean", source_timeout_s=0.05)
    cams = Cameras(node)
    for _ in range(2):
        cams.send("thermal", "rgb")
    wait_for_mode(node, FusionInfo.MODE_CLASSICAL)
    status = published_status(node)
    assert status.level == OK and status.message == "CLASSICAL" and mode_value(status) == "CLASSICAL"
    mode = FusionInfo.MODE_THERMAL_ONLY if alone == "thermal" else FusionInfo.MODE_RGB_ONLY
    for _ in range(6):
        time.sleep(0.03)
        cams.send(alone)
    wait_for_mode(node, mode)
    status = published_status(node)
    name = fusion_node.MODE_NAMES[mode]
    assert status.level == WARN and status.message == f"{name}: one camera silent" and mode_value(status) == name
    for _ in range(3):
        cams.send("thermal", "rgb")
    wait_for_mode(node, FusionInfo.MODE_CLASSICAL)
    assert published_status(node).level == OK


def test_classical_fallback_of_a_failed_model_is_a_warning(node_factory, tmp_path):  # noqa: F811
    """fuser diffmf whose weights cannot load: CLASSICAL output, WARN naming the reason (also with
    one camera silent), never OK."""
    node = active(node_factory, fuser="diffmf", weights=str(tmp_path / "missing.safetensors"), device="cpu",
                  fallback_fuser="mean", source_timeout_s=0.05)
    cams = Cameras(node)
    for _ in range(2):
        cams.send("thermal", "rgb")
    wait_for_mode(node, FusionInfo.MODE_CLASSICAL)
    status = published_status(node)
    assert status.level == WARN and status.message.startswith("CLASSICAL fallback: ")
    assert "missing.safetensors" in status.message
    assert "missing.safetensors" in {kv.key: kv.value for kv in status.values}["degraded_reason"]
    for _ in range(6):
        time.sleep(0.03)
        cams.send("thermal")
    wait_for_mode(node, FusionInfo.MODE_THERMAL_ONLY)
    assert published_status(node).level == WARN


def test_no_images_stalled_output_and_inactive_levels(node_factory):  # noqa: F811
    """Active without images: WARN; images arriving but no output for stall_timeout_s (stamps never
    pair, neither camera silent): ERROR; deactivated and unconfigured: WARN."""
    node = active(node_factory, fallback_fuser="mean", stall_timeout_s=0.1, source_timeout_s=5.0)
    status = published_status(node)
    assert status.level == WARN and status.message == "no camera images"
    cams = Cameras(node)
    deadline = time.monotonic() + 5.0
    while node.diagnostic_level()[0] != ERROR and time.monotonic() < deadline:
        cams.send("thermal", "rgb", gap_ns=5_000 * MS)  # stamps 5 s apart: no pair
        time.sleep(0.02)
    status = published_status(node)
    assert status.level == ERROR and status.message.startswith("camera images arrive but nothing published")
    assert not node._pubs["image"].msgs
    assert node.trigger_deactivate() == SUCCESS
    status = published_status(node)
    assert status.level == WARN and status.message.startswith("inactive")
    assert node.trigger_cleanup() == SUCCESS
    assert published_status(node).level == WARN


def camera_info(model) -> CameraInfo:
    return CameraInfo(width=model.width, height=model.height, distortion_model=model.distortion_model,
                      d=list(model.d), k=list(model.k), r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], p=[0.0] * 12,
                      roi=RegionOfInterest())


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_fused_camera_info_carries_the_output_geometry_camera(node_factory, geometry):  # noqa: F811
    """Both cameras send camera_info (different intrinsics and sizes): fused/camera_info has the
    output image's size and the intrinsics of the output geometry's camera at that size, for the
    pairs and for either camera alone, with the image's stamp and frame_id."""
    (width, height), k = GEOMETRIES[geometry]
    node = active(node_factory, fallback_fuser="mean", output_geometry=geometry, output_width=20, output_height=16,
                  source_timeout_s=0.05)
    for source, model in cameras().items():
        node._on_camera_info(source, camera_info(model))
    cams = Cameras(node)
    for _ in range(2):
        cams.send("thermal", "rgb")
    wait_for_mode(node, FusionInfo.MODE_CLASSICAL)
    for _ in range(6):
        time.sleep(0.03)
        cams.send("thermal")
    wait_for_mode(node, FusionInfo.MODE_THERMAL_ONLY)
    node.stop()  # the worker publishes what it holds, then ends
    images, infos = node._pubs["image"].msgs, node._pubs["camera_info"].msgs
    assert len(infos) == len(images) >= 3
    for img, info in zip(images, infos):
        assert (info.width, info.height) == (img.width, img.height) == (width, height)
        assert info.header == img.header
        np.testing.assert_allclose(info.k, k)
        np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3].reshape(9), k)


def test_qos_override_of_the_compressed_transport_is_visible_in_the_graph(node_factory):  # noqa: F811
    """qos_overrides of <topic>/compressed (the subscription of the compressed transport) and of
    fused/image/compressed apply to exactly those endpoints."""
    node = node_factory(thermal_transport="compressed", rgb_transport="compressed", publish_compressed=True, **{
        "qos_overrides./thermal/image_raw/compressed.subscription.reliability": "reliable",
        "qos_overrides./fused/image/compressed.publisher.reliability": "best_effort"})
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS

    def reliability(topic: str, kind: str):
        get = node.get_subscriptions_info_by_topic if kind == "sub" else node.get_publishers_info_by_topic
        (endpoint,) = get(topic)
        return endpoint.qos_profile.reliability

    assert reliability("/thermal/image_raw/compressed", "sub") == ReliabilityPolicy.RELIABLE
    assert reliability("/rgb/image_raw/compressed", "sub") == ReliabilityPolicy.BEST_EFFORT
    assert reliability("/fused/image/compressed", "pub") == ReliabilityPolicy.BEST_EFFORT
    assert reliability("/fused/image", "pub") == ReliabilityPolicy.RELIABLE


def test_agc_parameters_changed_at_run_time_reach_the_pixels(node_factory):  # noqa: F811
    """mono16 thermal: a fixed range set at run time, a second one, then auto: each decoded frame is
    the contract's mapping of the range in force (ThermalAGC rebuilt on each change)."""
    node = active(node_factory, fallback_fuser="mean", thermal_agc_mode="fixed", agc_low=0.0, agc_high=65535.0)
    frames = []
    add = node._router.add
    node._router.add = lambda source, frame: (frames.append(frame), add(source, frame))[1]
    raw = (np.linspace(1000, 3000, 24 * 32).reshape(24, 32)).astype(np.uint16)
    stamp = 1_000 * MS

    def decoded():
        nonlocal stamp
        stamp += 100 * MS
        node._on_image("thermal", image(raw, "mono16", stamp, "flir"))
        return frames[-1].image

    assert decoded().max() <= 12  # 3000 of 65535
    for changes in ([("agc_low", 1000.0), ("agc_high", 3000.0)], [("agc_low", 1500.0), ("agc_high", 2500.0)],
                    [("thermal_agc_mode", "auto")]):
        result = node.set_parameters_atomically([Parameter(k, value=v) for k, v in changes])
        assert result.successful, result.reason
        out = decoded()
        np.testing.assert_array_equal(out, expected_pixels(raw, node._agc), err_msg=str(changes))
        assert out.min() == 0 and out.max() == 255
    assert node._agc.mode == "auto"
