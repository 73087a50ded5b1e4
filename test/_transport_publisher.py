"""Child process for test_dds_transport.py: publishes test frames until stopped.

    python -m _transport_publisher TOPIC_PREFIX [RATE_HZ]

Publishes on ``TOPIC_PREFIX/image`` (sensor_msgs/Image 640x512 bgr8, sensor-data QoS:
best effort, like the live node's image topics) and ``TOPIC_PREFIX/info`` (diffmf_ros/FusionInfo,
reliable) at RATE_HZ, starting once both topics have a subscriber. Frame ``seq`` (0, 1, ...)
is in ``header.frame_id`` of both messages; the pixel content is ``expected_image_bytes()`` and the
info fields ``expected_info(seq)``, which the test recomputes.
"""
from __future__ import annotations

import array
import sys

WIDTH, HEIGHT = 640, 512


def expected_image_bytes() -> bytes:
    """HxWx3 bgr8 test pattern: byte i of the buffer is (i * 7 + i // 1920) % 256."""
    import numpy as np

    i = np.arange(HEIGHT * WIDTH * 3, dtype=np.int64)
    return ((i * 7 + i // (WIDTH * 3)) % 256).astype(np.uint8).tobytes()


def expected_info(seq: int) -> dict:
    """FusionInfo field values for frame ``seq`` (stamps are set from seq too)."""
    return {
        "thermal_stamp": (1000 + seq, 250_000_000),
        "rgb_stamp": (1000 + seq, 260_000_000),
        "homography": [1.01, 0.02, -3.5, -0.01, 0.99, 7.25, 1e-5, -2e-5, 1.0],
        "registration_quality": 0.875,
        "mode": 3,  # MODE_CLASSICAL
        "inference_ms": 12.5,
        "latency_ms": 40.25,
        "model_name": f"classical:laplacian/µ{seq}",
    }


def main(argv: list[str]) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from diffmf_ros.msg import FusionInfo

    prefix = argv[0]
    rate_hz = float(argv[1]) if len(argv) > 1 else 20.0
    rclpy.init()
    node = rclpy.create_node("diffmf_transport_publisher")
    image_pub = node.create_publisher(Image, f"{prefix}/image", qos_profile_sensor_data)
    info_pub = node.create_publisher(
        FusionInfo, f"{prefix}/info", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    # Fill Image.data through array.array('B'): ~0.1 ms per 983 KB frame whether or not
    # ROS_PYTHON_CHECK_FIELDS=1 (the tests set it); assigning bytes costs ~1.7 ms without the
    # check and ~500 ms with it (the setter then validates every element in Python).
    data = array.array("B")
    data.frombytes(expected_image_bytes())
    state = {"seq": 0}

    def publish() -> None:
        if image_pub.get_subscription_count() == 0 or info_pub.get_subscription_count() == 0:
            return  # discovery not finished: start numbering once both are matched
        seq = state["seq"]
        stamp = node.get_clock().now().to_msg()
        img = Image(height=HEIGHT, width=WIDTH, encoding="bgr8", is_bigendian=0, step=WIDTH * 3)
        img.header.stamp = stamp
        img.header.frame_id = str(seq)
        img.data = data
        values = expected_info(seq)
        info = FusionInfo()
        info.header.stamp = stamp
        info.header.frame_id = str(seq)
        info.thermal_stamp.sec, info.thermal_stamp.nanosec = values["thermal_stamp"]
        info.rgb_stamp.sec, info.rgb_stamp.nanosec = values["rgb_stamp"]
        info.homography = values["homography"]
        info.registration_quality = values["registration_quality"]
        info.mode = values["mode"]
        info.inference_ms = values["inference_ms"]
        info.latency_ms = values["latency_ms"]
        info.model_name = values["model_name"]
        try:
            image_pub.publish(img)
            info_pub.publish(info)
        except Exception as exc:  # RCLError under transport pressure: report, keep going
            print(f"publish failed for seq {seq}: {exc!r}", flush=True)
        state["seq"] = seq + 1

    node.create_timer(1.0 / rate_hz, publish)
    print(f"publisher ready on {prefix} at {rate_hz} Hz", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(f"publisher stopping after {state['seq']} frames", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
