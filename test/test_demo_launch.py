"""launch_testing test of `ros2 launch diffmf_ros demo.launch.py` as the development venv runs it
(recorder:=diffmf player:=diffmf, no rosbag2): the node (use_sim_time) fuses the sample bag played
with /clock, the recorder writes the fused frames and inputs, and everything stops cleanly on
Ctrl-C. Run by test/test_launch_tests.py (`launch_test`) or `colcon test`."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import pytest  # noqa: E402

import launchutil  # noqa: E402

OUTPUT = launchutil.scratch_dir() / "demo_fused_bag"
PARAMS = """/**/diffmf_fusion:
  ros__parameters:
    fuser: classical
    fallback_fuser: mean
    warmup: false
"""


@pytest.mark.launch_test
def generate_test_description():
    params = OUTPUT.parent / "demo_params.yaml"
    params.write_text(PARAMS)
    demo = launch.actions.ExecuteProcess(
        cmd=["ros2", "launch", "diffmf_ros", "demo.launch.py", "recorder:=diffmf", "player:=diffmf",
             f"output:={OUTPUT}", f"params_file:={params}", "play_delay:=1", "rate:=1.0"],
        output="screen", name="demo")
    return launch.LaunchDescription([demo, launch_testing.actions.ReadyToTest()]), {"demo": demo}


class TestDemo(unittest.TestCase):
    def test_the_sample_bag_is_played_to_the_end(self, proc_output, demo):
        proc_output.assertWaitFor("player: done", process=demo, timeout=90, stream="stdout")
        proc_output.assertWaitFor("recording /fused/image, /fused/info", process=demo, timeout=5, stream="stdout")


@launch_testing.post_shutdown_test()
class TestRecording(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])

    def test_the_recorded_bag_holds_the_fused_frames_and_inputs(self):
        from diffmf_core.tools.bag.info import bag_info

        topics = {t: v["count"] for t, v in bag_info(OUTPUT)["topics"].items()}
        self.assertGreaterEqual(topics.get("/fused/image", 0), 20, topics)  # 100 pairs, the node may skip some
        self.assertEqual(topics["/fused/info"], topics["/fused/image"], topics)
        # inputs: recorded from when the recorder discovered the player's publishers (--inputs)
        self.assertGreater(topics.get("/thermal/image_raw/compressed", 0), 0, topics)
        self.assertGreater(topics.get("/rgb/image_raw/compressed", 0), 0, topics)
