"""launch_testing test of the user's command `ros2 launch diffmf_ros fuse.launch.py` with a
namespace, a params file, remapped outputs, use_sim_time and autostart:=false, then driven and
inspected the user's way: `ros2 lifecycle`, `ros2 param`, `ros2 topic info`, the bag player with
/clock, /diagnostics. Run by test/test_launch_tests.py (`launch_test`) or `colcon test`.

One launch, in order: /diagnostics before any /clock (unconfigured) -> configure and activate
with `ros2 lifecycle set` -> parameters from the params file -> topics and endpoints under
/uav9 with the remapped outputs -> the sample bag played with --clock is fused (bag stamps, one
fused/camera_info per image) -> deactivate + cleanup resets the counters -> the shutdown
transition ends the process and with it `ros2 launch` (exit code 0)."""
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import launch_testing.util  # noqa: E402
import pytest  # noqa: E402

import launchutil  # noqa: E402
from launchutil import ros2  # noqa: E402

NS = "/uav9"
NODE = f"{NS}/diffmf_fusion"
PARAMS = """/**/diffmf_fusion:
  ros__parameters:
    fuser: classical
    fallback_fuser: mean
    warmup: false
    thermal_transport: compressed
    rgb_transport: compressed
    qos_reliability: reliable
    qos_depth: 100
    publish_compressed: true
    diagnostics_period_s: 0.2
"""


@pytest.mark.launch_test
def generate_test_description():
    params = launchutil.scratch_dir() / "uav9_params.yaml"
    params.write_text(PARAMS)
    ros2_launch = launch.actions.ExecuteProcess(
        cmd=["ros2", "launch", "diffmf_ros", "fuse.launch.py", f"namespace:={NS}", f"params_file:={params}",
             "fused_topic:=det/image", "info_topic:=det/info", "use_sim_time:=true", "autostart:=false"],
        output="screen", name="ros2_launch")
    # KeepAliveProc: the launch must outlive `ros2 launch`, which ends with the node (test_7)
    return launch.LaunchDescription([ros2_launch, launch_testing.util.KeepAliveProc(),
                                     launch_testing.actions.ReadyToTest()]), {"ros2_launch": ros2_launch}


def diag_values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


class TestUserWorkflow(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image

        from diffmf_ros.msg import FusionInfo

        cls.probe = launchutil.Listener({
            "diag": (DiagnosticArray, "/diagnostics"), "image": (Image, f"{NS}/det/image"),
            "camera_info": (CameraInfo, f"{NS}/det/camera_info"), "info": (FusionInfo, f"{NS}/det/info")})

    @classmethod
    def tearDownClass(cls):
        cls.probe.close()

    def setUp(self):
        self.started = time.monotonic()

    def tearDown(self):
        print(f"{self.id().rpartition('.')[2]}: {time.monotonic() - self.started:.1f} s", flush=True)

    def statuses(self, start: int = 0) -> list:
        return [s for arr in self.probe.got["diag"][start:] for s in arr.status if s.hardware_id == NODE]

    def wait_status(self, predicate, what: str, timeout: float = 20.0):
        start = self.probe.count("diag")
        found = []

        def check():
            found[:] = [s for s in self.statuses(start) if predicate(diag_values(s))]
            return bool(found)

        self.probe.wait(check, timeout, what)
        return found[0]

    def test_1_diagnostics_without_clock_while_unconfigured(self):
        # use_sim_time and no /clock anywhere yet: /diagnostics still comes (steady-clock timer)
        status = self.wait_status(lambda v: v["lifecycle_state"] == "unconfigured", "unconfigured /diagnostics", 60.0)
        self.assertIn("unconfigured", status.message)
        self.assertEqual(ros2("lifecycle", "get", NODE).strip(), "unconfigured [1]")

    def test_2_configure_with_ros2_lifecycle_and_activate(self):
        from lifecycle_msgs.msg import Transition

        self.assertIn("Transitioning successful", ros2("lifecycle", "set", NODE, "configure"))
        self.assertTrue(self.change_state(Transition.TRANSITION_ACTIVATE))
        status = self.wait_status(lambda v: v["lifecycle_state"] == "active", "active /diagnostics")
        self.assertEqual(diag_values(status)["model"], "mean")  # fuser and fallback_fuser of the params file

    def test_3_parameters_come_from_the_params_file_and_the_arguments(self):
        self.assertEqual(ros2("param", "get", NODE, "use_sim_time").strip(), "Boolean value is: True")

    def test_4_topics_in_the_namespace_with_the_remapped_outputs(self):
        expected = {f"{NS}/{topic}" for topic in (
            "det/image", "det/image/compressed", "det/camera_info", "det/info", "thermal/image_raw/compressed",
            "rgb/image_raw/compressed", "thermal/camera_info", "rgb/camera_info")}
        self.probe.wait(lambda: expected <= {n for n, _ in self.probe.node.get_topic_names_and_types()}, 20.0,
                        "the node's topics")
        topics = {n for n, _ in self.probe.node.get_topic_names_and_types()}
        self.assertFalse({t for t in topics if t.startswith(f"{NS}/fused")}, "outputs not remapped")
        info = ros2("topic", "info", "-v", f"{NS}/det/camera_info", until=lambda out: "Publisher count: 1" in out)
        self.assertIn("Publisher count: 1", info)
        self.assertIn("Node name: diffmf_fusion", info)
        self.assertIn(f"Node namespace: {NS}", info)
        from rclpy.qos import ReliabilityPolicy

        (sub,) = self.probe.node.get_subscriptions_info_by_topic(f"{NS}/thermal/image_raw/compressed")
        self.assertEqual(sub.qos_profile.reliability, ReliabilityPolicy.RELIABLE)  # qos_reliability of the file

    def test_5_bag_replay_with_clock_is_fused_with_bag_stamps(self):
        remaps = [a for cam in ("thermal", "rgb")
                  for a in ("-r", f"/{cam}/image_raw/compressed:={NS}/{cam}/image_raw/compressed")]
        player = subprocess.run(
            ["ros2", "run", "diffmf_ros", "bag_player", str(launchutil.SAMPLE_BAG), "--clock",
             "--rate", "2", "--wait-for-subscribers", "1", "--linger", "0.5", "--ros-args", *remaps],
            env=launchutil.child_env(), capture_output=True, text=True, timeout=90)
        self.assertEqual(player.returncode, 0, player.stdout + player.stderr)
        self.assertIn("player: done", player.stdout)
        self.probe.wait(lambda: len(self.probe.got["info"]) >= 30, 20.0, "fused frames of the bag")
        time.sleep(0.5)
        with self.probe.lock:
            infos, images, cams = list(self.probe.got["info"]), list(self.probe.got["image"]), list(
                self.probe.got["camera_info"])
        stamp = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731
        bag_start, bag_end = 1_699_999_999_998_163_894, 1_700_000_003_306_000_000
        self.assertTrue(all(bag_start <= stamp(m) <= bag_end for m in infos), "outputs carry the bag's stamps")
        self.assertEqual({stamp(m) for m in cams}, {stamp(m) for m in images})  # one camera_info per image
        self.assertTrue(all((c.width, c.height) == (images[0].width, images[0].height) for c in cams))
        # the bag is paused/over (no /clock): /diagnostics keeps coming, with the counters of the run
        status = self.wait_status(lambda v: "latency_p50_ms" in v, "diagnostics after the bag")
        self.assertEqual(diag_values(status)["lifecycle_state"], "active")

    def change_state(self, transition_id: int) -> bool:
        """What `ros2 lifecycle set` does (shown in test_2 and test_7), from the probe: quicker."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.probe.node.create_client(ChangeState, f"{NODE}/change_state")
        try:
            self.assertTrue(client.wait_for_service(timeout_sec=20.0))
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
            self.probe.wait(future.done, 30.0, f"transition {transition_id}")
            return future.result().success
        finally:
            self.probe.node.destroy_client(client)

    def test_6_cleanup_resets_the_counters(self):
        from lifecycle_msgs.msg import Transition

        self.assertTrue(self.change_state(Transition.TRANSITION_DEACTIVATE))
        self.assertTrue(self.change_state(Transition.TRANSITION_CLEANUP))
        status = self.wait_status(lambda v: v["lifecycle_state"] == "unconfigured", "unconfigured after cleanup")
        values = diag_values(status)
        self.assertNotIn("latency_p50_ms", values)
        self.assertEqual(float(values["output_rate_hz"]), 0.0)

    def test_7_shutdown_transition_ends_the_process(self, proc_info, ros2_launch):
        self.assertIn("Transitioning successful", ros2("lifecycle", "set", NODE, "shutdown"))
        proc_info.assertWaitForShutdown(process=ros2_launch, timeout=20)


@launch_testing.post_shutdown_test()
class TestExit(unittest.TestCase):
    def test_ros2_launch_exits_cleanly_after_the_shutdown_transition(self, proc_info, proc_output, ros2_launch):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0], process=ros2_launch)
        text = "".join(o.text.decode(errors="replace") for o in proc_output[ros2_launch])
        self.assertIn("shut down by a lifecycle transition: exiting", text)
        self.assertNotIn("Traceback", text)
