"""ROS conventions of diffmf_fusion (issue 24), in this process with real rclpy: a QoS override
applies to its own topic only; derived topics (compressed, camera_info) follow the resolved,
remapped name; lifecycle error/cleanup/shutdown; /diagnostics under use_sim_time without /clock;
refused encodings each logged and counted; a camera slower than 1/source_timeout_s is not warned
about on every frame; the recorder's default topics follow its namespace. The same behaviour seen
through `ros2 launch` and the ros2 CLI: test_fuse_conventions_launch.py."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402

from diffmf_core.live.imagecodec import SUPPORTED_ENCODINGS  # noqa: E402
from noderig import image  # noqa: E402

pytestmark = pytest.mark.ros
SUCCESS = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def node_factory():
    """FusionNode(**params) in a private context, with command-line ``ros_args``; torn down after."""
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(ros_args=(), namespace="", **params):
        params = {"fuser": "classical", "warmup": False, **params}
        node = fusion_node.FusionNode(context=context, namespace=namespace,
                                      cli_args=["--ros-args", *ros_args] if ros_args else None,
                                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        nodes.append(node)
        return node

    make.context = context
    yield make
    for node in nodes:
        node.stop()
        node.destroy_node()
    context.try_shutdown()


class Log:
    """Stands in for the node's logger: keeps (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level):
        return lambda message, **kw: self.lines.append((level, message))

    def warnings(self, text: str) -> list[str]:
        return [m for level, m in self.lines if level in ("warning", "warn") and text in m]


def endpoints(node, kind: str) -> set[str]:
    """Topic names of this node's own publishers or subscriptions (``kind``), as the graph sees them."""
    get = (node.get_publisher_names_and_types_by_node if kind == "pub"
           else node.get_subscriber_names_and_types_by_node)
    return {name for name, _ in get(node.get_name(), node.get_namespace())}


def test_a_qos_override_changes_its_own_topic_only(node_factory):
    node = node_factory(**{"qos_overrides./thermal/image_raw.subscription.reliability": "reliable"})
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    reliability = {t: node.get_subscriptions_info_by_topic(t)[0].qos_profile.reliability
                   for t in ("/thermal/image_raw", "/rgb/image_raw", "/thermal/camera_info", "/rgb/camera_info")}
    assert reliability == {"/thermal/image_raw": ReliabilityPolicy.RELIABLE,
                           "/rgb/image_raw": ReliabilityPolicy.BEST_EFFORT,
                           "/thermal/camera_info": ReliabilityPolicy.BEST_EFFORT,
                           "/rgb/camera_info": ReliabilityPolicy.BEST_EFFORT}


def test_derived_topics_follow_the_remapped_names(node_factory):
    """image_transport style: -r thermal/image_raw:=/flir/image_raw moves its /compressed and the
    camera_info next to it; -r fused/image:=/det/image moves fused/image/compressed and fused/camera_info."""
    node = node_factory(["-r", "thermal/image_raw:=/flir/image_raw", "-r", "fused/image:=/det/image"],
                        namespace="/uav2", thermal_transport="compressed", publish_compressed=True)
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert endpoints(node, "sub") == {"/flir/image_raw/compressed", "/flir/camera_info",
                                      "/uav2/rgb/image_raw", "/uav2/rgb/camera_info"}
    assert {"/det/image", "/det/image/compressed", "/det/camera_info", "/uav2/fused/info"} <= endpoints(node, "pub")


def test_lifecycle_error_cleanup_and_shutdown(node_factory, monkeypatch):
    node = node_factory()
    node.get_logger = lambda log=Log(): log  # noqa: E731 - keep the lines
    # a transition that raises: on_error releases everything and returns to unconfigured
    monkeypatch.setattr(node, "_build_pipeline", lambda: 1 / 0)
    assert node.trigger_configure() == TransitionCallbackReturn.ERROR
    assert node._state == "unconfigured" and node._pipeline is None
    assert any("transition failed" in m for _, m in node.get_logger().lines)
    monkeypatch.undo()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    bad = image(np.zeros((4, 4), np.uint8), "yuv420", 1_000_000_000)
    node._on_image("thermal", bad)
    assert node.stats.counters["decode_error.unknown_encoding"] == 1
    # cleanup: fresh counters, no pairing state
    assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS
    assert not node.stats.counters and node._router is None and node._state == "unconfigured"
    # shutdown: finalized is set (main() then leaves its loop and the process ends with 0;
    # through `ros2 lifecycle set ... shutdown`: test_fuse_conventions_launch.py)
    assert node.trigger_shutdown() == SUCCESS and node.finalized.is_set()


def test_diagnostics_under_sim_time_without_clock(node_factory):
    from diagnostic_msgs.msg import DiagnosticArray

    node = node_factory(use_sim_time=True, diagnostics_period_s=0.1)
    rig = rclpy.create_node("diag_rig", context=node_factory.context)
    got = []
    rig.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    executor = SingleThreadedExecutor(context=node_factory.context)
    executor.add_node(node)
    executor.add_node(rig)
    try:
        deadline = time.monotonic() + 10.0
        while len(got) < 3 and time.monotonic() < deadline:  # no /clock is ever published
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        rig.destroy_node()
    assert len(got) >= 3
    assert node.get_clock().now().nanoseconds == 0  # the ROS clock has not started


def test_each_refused_encoding_is_logged_with_the_supported_list_and_counted(node_factory):
    node = node_factory()
    log = Log()
    node.get_logger = lambda: log
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    for i, encoding in enumerate(["yuv420", "bayer_rggb16", "yuv420"]):
        node._on_image("rgb", image(np.zeros((4, 4), np.uint8), encoding, (1 + i) * 10**9))
    refused = log.warnings("unsupported encoding")
    assert len(refused) == 2 and "'yuv420'" in refused[0] and "'bayer_rggb16'" in refused[1]
    assert all(", ".join(SUPPORTED_ENCODINGS) in m for m in refused)
    assert node.stats.counters["decode_error.unknown_encoding"] == 3
    # the encodings this issue added reach the router (no decode error)
    bayer = np.zeros((4, 6), np.uint8)
    node._on_image("rgb", image(bayer, "bayer_rggb8", 5 * 10**9))
    node._on_image("thermal", image(np.full((4, 6), 25.0, np.float32), "32FC1", 5 * 10**9))
    assert node.stats.counters["decode_error.unknown_encoding"] == 3 and len(node.stats.counters) == 1


def test_a_slow_camera_is_warned_about_once_and_counted(node_factory):
    """A 6 Hz RGB camera with source_timeout_s 0.05 times out between every two frames: counted
    each time, warned once (with the hint to raise source_timeout_s), not on every frame."""
    node = node_factory(source_timeout_s=0.05)
    log = Log()
    node.get_logger = lambda: log
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(5):
        node._on_image("rgb", image(frame, "bgr8", (10 + i) * 10**9, "cam"))
        node._watch_sources()
        time.sleep(0.15)
        node._watch_sources()
    assert node.stats.counters["source_timeouts_rgb"] >= 4
    assert len(log.warnings("no rgb image")) == 1
    assert not [m for level, m in log.lines if "rgb camera is back" in m and level == "info"][1:]


def test_recorder_default_topics_follow_its_namespace():
    from diffmf_ros.recorder import INPUT_TOPICS, OUTPUT_TOPICS, Recorder

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("recorder_ns", namespace="/uav3", context=context)
    try:
        rec = Recorder(node, writer=None, topics=OUTPUT_TOPICS, optional=INPUT_TOPICS, depth=10)
        assert rec.topics == ["/uav3/fused/image", "/uav3/fused/info"]
        assert set(rec.optional) == {"/uav3/thermal/image_raw", "/uav3/rgb/image_raw",
                                     "/uav3/thermal/image_raw/compressed", "/uav3/rgb/image_raw/compressed"}
    finally:
        node.destroy_node()
        context.try_shutdown()
