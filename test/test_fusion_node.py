"""diffmf_fusion in this process: parameter validation and refusal, the latest-pair mailbox, the
classical fallback when the model cannot load, compressed + mono16 input under use_sim_time."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from diffmf_core.live.imagecodec import encode_compressed  # noqa: E402
from diffmf_core.live.sync import split_ns, stamp_to_ns as stamp_ns  # noqa: E402
from diffmf_ros.node_stats import LatestMailbox  # noqa: E402

pytestmark = pytest.mark.ros


def test_mailbox_keeps_only_the_newest_item_and_counts_drops():
    box = LatestMailbox()
    box.put(1)
    box.put(2)
    assert box.get() == 2 and box.dropped == 1
    got = []
    worker = threading.Thread(target=lambda: got.append(box.get()))
    worker.start()
    box.put(3)
    worker.join(5)
    assert got == [3]
    box.close()
    assert box.get() is None


def test_check_params_names_each_problem():
    values = {p.name: p.default for p in fusion_node.PARAMS}
    assert fusion_node.check_params(values) == []
    bad = {**values, "device": "gpu", "agc_low": 900.0, "agc_high": 100.0, "rgb_transport": "theora",
           "rgb_topic": values["thermal_topic"], "calibration_file": "no/such.yaml"}
    text = "; ".join(fusion_node.check_params(bad))
    for word in ("device", "agc_low", "rgb_transport", "must differ", "no such file"):
        assert word in text


@pytest.fixture
def make_node():
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**overrides):
        node = fusion_node.FusionNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
        node.destroy_node()
    context.try_shutdown()


def test_invalid_start_values_are_refused(make_node):
    with pytest.raises(ValueError, match="device"):
        make_node(device="tpu")


def test_runtime_changes_are_validated_and_applied(make_node):
    node = make_node(fuser="classical", warmup=False)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    refused = node.set_parameters([Parameter("agc_low", value=70000.0)])[0]
    assert not refused.successful
    refused = node.set_parameters_atomically([Parameter("agc_low", value=500.0), Parameter("agc_high", value=100.0)])
    assert not refused.successful and "agc_low" in refused.reason
    read_only = node.set_parameters([Parameter("device", value="cpu")])[0]
    assert not read_only.successful
    assert node.set_parameters([Parameter("sync_slop_s", value=0.05)])[0].successful
    assert node._router.sync.slop_ns == 50_000_000
    assert node.set_parameters([Parameter("output_encoding", value="mono8")])[0].successful
    assert node._pipeline.output_encoding == "mono8"


def test_missing_weights_fall_back_to_the_classical_fuser(make_node, tmp_path):
    pytest.importorskip("diffmf_core.fuser", reason="diffmf_core.fuser not written yet")
    node = make_node(fuser="diffmf", weights=str(tmp_path / "missing.safetensors"), device="cpu",
                     fallback_fuser="mean")
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._pipeline.mode == fusion_node.FusionInfo.MODE_CLASSICAL
    assert node._pipeline.active_name == "mean"
    assert "missing.safetensors" in node._pipeline.degraded_reason


def test_the_default_fuser_is_the_warm_rule_and_ignores_weights_with_a_warning(make_node, tmp_path, monkeypatch):
    node = make_node(weights=str(tmp_path / "w.safetensors"), device="cpu", warmup=False)
    logger, warnings = node.get_logger(), []

    class Recorder:
        def __getattr__(self, name):
            return getattr(logger, name)

        def warning(self, message, **kwargs):
            warnings.append(message)

    monkeypatch.setattr(node, "get_logger", Recorder)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._pipeline.mode == fusion_node.FusionInfo.MODE_FUSED and node._pipeline.active_name == "warm_rule"
    assert any("w.safetensors' is not used: fuser is 'warm_rule'" in w for w in warnings), warnings


def test_compressed_input_under_sim_time(make_node):
    """CompressedImage RGB + raw mono16 thermal with bag-like stamps (sim time, no /clock yet)."""
    node = make_node(fuser="classical", fallback_fuser="mean", rgb_transport="compressed",
                     use_sim_time=True, output_encoding="mono8")
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig = rclpy.create_node("rig", context=node.context)
    infos, images = [], []
    rig.create_subscription(fusion_node.FusionInfo, "/fused/info", infos.append, 10)
    rig.create_subscription(Image, "/fused/image", images.append, 10)
    thermal = rig.create_publisher(Image, "/thermal/image_raw", qos_profile_sensor_data)
    rgb = rig.create_publisher(CompressedImage, "/rgb/image_raw/compressed", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.add_node(rig)
    vi = cv2.cvtColor(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), cv2.COLOR_GRAY2BGR)
    ir = np.full((48, 64), 30000, np.uint16)
    fmt, data = encode_compressed(vi, "png")
    deadline = time.monotonic() + 20.0
    stamp = 1_000_000_000_000  # 1000 s: a bag's clock, far from wall time
    while len(infos) < 3 and time.monotonic() < deadline:
        stamp += 100_000_000
        t_msg = Image(height=48, width=64, encoding="mono16", step=128, data=ir.tobytes(), check_fields=False)
        # distinct stamps: thermal 7 ms after RGB (within sync_slop_s), so a wrong output stamp shows
        t_msg.header.stamp.sec, t_msg.header.stamp.nanosec = divmod(stamp + 7_000_000, 1_000_000_000)
        c_msg = CompressedImage(format=fmt, data=data, check_fields=False)
        c_msg.header.stamp.sec, c_msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        thermal.publish(t_msg)
        rgb.publish(c_msg)
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
    executor.shutdown()
    rig.destroy_node()
    assert len(infos) >= 3, "no fused output"
    info = infos[-1]
    assert info.mode == fusion_node.FusionInfo.MODE_CLASSICAL and info.model_name == "mean"
    assert info.header.stamp == info.rgb_stamp  # output_geometry rgb: the RGB camera's stamp
    assert stamp_ns(info.thermal_stamp) == stamp_ns(info.rgb_stamp) + 7_000_000
    assert info.header.stamp.sec >= 1000 and 0.0 <= info.latency_ms < 5000.0  # receive-time based
    assert images[-1].encoding == "mono8" and (images[-1].height, images[-1].width) == (48, 64)


def _drive(node, publish, wanted: int, timeout: float = 20.0) -> dict:
    """Spin ``node`` and a rig node; ``publish(rig_pubs, i)`` sends frame set i every 0.1 s until
    ``wanted`` FusionInfo messages arrived. Returns the collected messages per topic."""
    rig = rclpy.create_node("rig", context=node.context)
    got = {"info": [], "image": [], "camera_info": []}
    rig.create_subscription(fusion_node.FusionInfo, "fused/info", got["info"].append, 50)
    rig.create_subscription(Image, "fused/image", got["image"].append, 50)
    rig.create_subscription(fusion_node.CameraInfo, "fused/camera_info", got["camera_info"].append, 50)
    pubs = {s: rig.create_publisher(Image, f"{s}/image_raw", qos_profile_sensor_data) for s in ("thermal", "rgb")}
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.add_node(rig)
    deadline, i = time.monotonic() + timeout, 0
    try:
        while len(got["info"]) < wanted and time.monotonic() < deadline:
            publish(pubs, i)
            i += 1
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.02)
        end = time.monotonic() + 0.3  # let the last image / camera_info of the last info arrive
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        rig.destroy_node()
    return got


def _msg(array: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Image:
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, step=array.strides[0],
                data=array.tobytes(), check_fields=False)
    msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(stamp)
    msg.header.frame_id = frame_id
    return msg


def test_output_geometry_thermal_has_thermal_size_stamp_and_frame(make_node):
    """output_geometry thermal: the output has the thermal image's size, the thermal stamp (not the
    RGB one: they differ by 7 ms here) and the thermal camera's frame_id, on every output topic."""
    node = make_node(fuser="classical", fallback_fuser="mean", output_geometry="thermal", use_sim_time=True)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    ir = np.tile(np.arange(56, dtype=np.uint8) * 4, (40, 1))  # thermal 56x40, RGB 64x48: sizes differ
    vi = np.full((48, 64, 3), 90, np.uint8)
    base = 2_000_000_000_000

    def publish(pubs, i):
        stamp = base + i * 100_000_000
        pubs["thermal"].publish(_msg(ir, "mono8", stamp + 7_000_000, "flir_optical"))
        pubs["rgb"].publish(_msg(vi, "bgr8", stamp, "rgb_optical"))

    got = _drive(node, publish, 3)
    assert len(got["info"]) >= 3, "no fused output"
    for info in got["info"]:
        assert info.mode == fusion_node.FusionInfo.MODE_CLASSICAL
        assert stamp_ns(info.header.stamp) == stamp_ns(info.thermal_stamp) == stamp_ns(info.rgb_stamp) + 7_000_000
        assert info.header.frame_id == "flir_optical"
    by_stamp = {stamp_ns(m.header.stamp): m for m in got["image"]}
    image = by_stamp[stamp_ns(got["info"][0].header.stamp)]
    assert (image.height, image.width, image.header.frame_id) == (40, 56, "flir_optical")
    infos = {stamp_ns(m.header.stamp): m for m in got["camera_info"]}
    cam = infos[stamp_ns(got["info"][0].header.stamp)]
    assert (cam.height, cam.width, cam.header.frame_id) == (40, 56, "flir_optical")
