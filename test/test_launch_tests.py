"""The launch_testing tests, run for real: each test/test_*_launch.py under launch_testing's own
runner (`launch_test`, a subprocess; see launchutil.py for why not as pytest modules).

* test_fuse_launch.py: fuse.launch.py with its defaults fuses camera pairs (the network on CPU);
* test_fuse_conventions_launch.py: `ros2 launch diffmf_ros fuse.launch.py` in /uav9 with a params
  file, remapped outputs, use_sim_time and autostart:=false, driven with `ros2 lifecycle`,
  inspected with `ros2 param` / `ros2 topic`, fed by the bag player with /clock;
* test_demo_launch.py: `ros2 launch diffmf_ros demo.launch.py` (our player and recorder) records
  the fused sample bag.
Skipped, naming the folder, where the vendored ROS 2 tools are not installed."""
from __future__ import annotations

import pytest

import launchutil

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


@pytest.mark.parametrize("name", launchutil.LAUNCH_TESTS)
def test_launch_test_passes(name, tmp_path):
    reason = launchutil.unavailable()
    if reason:
        pytest.skip(reason)
    launchutil.run_launch_test(name, tmp_path)
