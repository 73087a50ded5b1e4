"""Cross-process transport over Fast DDS on localhost with the repo's profile.

A child process (test/_transport_publisher.py, started with this venv's python) publishes
640x512 bgr8 sensor_msgs/Image frames (best effort, sensor-data QoS) and diffmf_ros/FusionInfo
(reliable); this process subscribes. Discovery is awaited through publisher counts, never a
fixed sleep. Checks: pixels and every FusionInfo field arrive intact, and a window of 40
consecutive best-effort 983 KB frames mostly arrives (with Fast DDS's default 0.5 MB SHM segment
most would be lost: config/fastdds_profile.xml is what makes this pass).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import rosutil
from _transport_publisher import HEIGHT, WIDTH, expected_image_bytes, expected_info

pytestmark = pytest.mark.ros

WINDOW = 40          # consecutive frames observed after the first one received
MIN_DELIVERED = 30   # of WINDOW (ENVIRONMENT: 100/100 with the profile, ~19/100 without)


@pytest.fixture(scope="module")
def transport_run(tmp_path_factory):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from diffmf_ros.msg import FusionInfo

    prefix = f"/diffmf_test_{os.getpid()}"
    expected = expected_image_bytes()
    got = {"images": {}, "infos": {}, "first_image": None}

    def on_image(msg):
        seq = int(msg.header.frame_id)
        got["images"][seq] = bytes(msg.data) == expected
        if got["first_image"] is None:
            got["first_image"] = msg

    def on_info(msg):
        got["infos"][int(msg.header.frame_id)] = msg

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("diffmf_transport_subscriber", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    image_sub = node.create_subscription(Image, f"{prefix}/image", on_image, qos_profile_sensor_data)
    info_sub = node.create_subscription(
        FusionInfo, f"{prefix}/info", on_info, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    child = rosutil.start_python_module("_transport_publisher", prefix, "20",
                                        log_dir=tmp_path_factory.mktemp("transport"))
    try:
        diag = child.describe
        rosutil.spin_until(executor, lambda: image_sub.get_publisher_count() > 0
                           and info_sub.get_publisher_count() > 0, 30, "publisher discovery", diag)
        rosutil.spin_until(executor, lambda: got["first_image"] is not None and got["infos"],
                           20, "the first image and FusionInfo", diag)
        first = int(got["first_image"].header.frame_id)
        last = first + WINDOW - 1
        # Best effort: stop once the publisher is past the window (its reliable info says so).
        rosutil.spin_until(executor, lambda: max(got["infos"]) >= last + 2, 30,
                           f"frames up to seq {last + 2}", diag)
        got["window"] = range(first, last + 1)
        yield got
    finally:
        child.stop()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def test_image_arrives_intact_across_processes(transport_run):
    msg = transport_run["first_image"]
    assert (msg.height, msg.width, msg.encoding, msg.step) == (HEIGHT, WIDTH, "bgr8", WIDTH * 3)
    assert len(msg.data) == HEIGHT * WIDTH * 3
    img = np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH, 3)
    ref = np.frombuffer(expected_image_bytes(), np.uint8).reshape(HEIGHT, WIDTH, 3)
    for y, x in [(0, 0), (0, WIDTH - 1), (HEIGHT - 1, 0), (HEIGHT - 1, WIDTH - 1), (257, 311)]:
        i = (y * WIDTH + x) * 3
        assert img[y, x].tolist() == [(j * 7 + j // (WIDTH * 3)) % 256 for j in (i, i + 1, i + 2)]
    np.testing.assert_array_equal(img, ref)
    assert all(transport_run["images"].values()), "some frames arrived with corrupted pixels"


def test_fusion_info_fields_arrive_intact(transport_run):
    from diffmf_ros.msg import FusionInfo

    infos = transport_run["infos"]
    for seq in list(transport_run["window"])[:5]:
        msg = infos[seq]
        want = expected_info(seq)
        assert msg.header.frame_id == str(seq)
        assert (msg.thermal_stamp.sec, msg.thermal_stamp.nanosec) == want["thermal_stamp"]
        assert (msg.rgb_stamp.sec, msg.rgb_stamp.nanosec) == want["rgb_stamp"]
        assert list(msg.homography) == want["homography"]
        assert msg.registration_quality == pytest.approx(want["registration_quality"])
        assert msg.mode == want["mode"] == FusionInfo.MODE_CLASSICAL
        assert msg.inference_ms == pytest.approx(want["inference_ms"])
        assert msg.latency_ms == pytest.approx(want["latency_ms"])
        assert msg.model_name == want["model_name"]
    first = transport_run["first_image"]
    info = infos[int(first.header.frame_id)]
    assert info.header.stamp == first.header.stamp, "image and info of one frame share the stamp"


def test_large_best_effort_frames_are_delivered(transport_run):
    window = transport_run["window"]
    delivered = sum(seq in transport_run["images"] for seq in window)
    assert delivered >= MIN_DELIVERED, (
        f"only {delivered}/{len(window)} best-effort 640x512 bgr8 frames arrived: is "
        f"FASTDDS_DEFAULT_PROFILES_FILE ({os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')}) loaded?")
    missing_infos = [seq for seq in window if seq not in transport_run["infos"]]
    assert not missing_infos, f"reliable FusionInfo lost: {missing_infos}"
