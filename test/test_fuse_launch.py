"""launch_testing test of launch/fuse.launch.py (`launch_test`, run by test_launch_tests.py; `colcon test`):
the launched node, with the shipped parameters, fuses synthetic camera pairs into /fused/image with
its default fuser (the warm rule, FusionInfo mode FUSED) and exits cleanly."""
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip("launch_testing", reason="launch_testing not installed (no ROS 2 system)")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "fuse.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments={"device": "cpu"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


def _image(encoding: str, array: np.ndarray, stamp) -> Image:
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, step=array.strides[0])
    msg.header.stamp = stamp
    msg.data = array.tobytes()
    return msg


class TestFusedOutput(unittest.TestCase):
    def test_fused_image_arrives(self):
        rclpy.init()
        node = rclpy.create_node("fuse_launch_probe")
        try:
            from diffmf_ros.msg import FusionInfo

            received, infos = [], []
            node.create_subscription(Image, "/fused/image", received.append, 10)
            node.create_subscription(FusionInfo, "/fused/info", infos.append, 10)
            thermal = node.create_publisher(Image, "/thermal/image_raw", qos_profile_sensor_data)
            rgb = node.create_publisher(Image, "/rgb/image_raw", qos_profile_sensor_data)
            rng = np.random.default_rng(0)
            deadline = time.monotonic() + 60.0
            while not (received and infos) and time.monotonic() < deadline:
                stamp = node.get_clock().now().to_msg()
                thermal.publish(_image("mono8", rng.integers(0, 255, (128, 160), dtype=np.uint8), stamp))
                rgb.publish(_image("bgr8", rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), stamp))
                rclpy.spin_once(node, timeout_sec=0.2)
            self.assertTrue(received, "no /fused/image within 60 s")
            self.assertEqual((received[0].height, received[0].width), (128, 160))
            self.assertTrue(infos, "no /fused/info within 60 s")
            self.assertEqual((infos[0].model_name, infos[0].mode), ("warm_rule", FusionInfo.MODE_FUSED))
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
