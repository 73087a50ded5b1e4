"""diffmf_fusion in its own process, probed from outside like a ROS 2 engineer would: standard
QoS overrides visible in the graph's QoS info, /diagnostics levels in every lifecycle state
(driven over the lifecycle services), and SIGINT at each phase (start-up, model load, inference)
ending with exit code 0, no traceback, no ERROR line and no failed publish."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
msg_mod = pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import rosutil  # noqa: E402
from test_node_integration import ROOT, image_msg, launch_settings, model_params, node_ros_args  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(150)]
IR = np.random.default_rng(1).integers(0, 256, (64, 80), np.uint8)
VI = np.random.default_rng(2).integers(0, 256, (64, 80, 3), np.uint8)


def start(tmp, ns: str = "", **params) -> rosutil.RosProcess:
    settings = launch_settings(device="cpu", namespace=ns)
    return rosutil.start_python_module(f"diffmf_ros.{settings['executable']}", *node_ros_args(settings, params),
                                       cwd=ROOT, log_dir=tmp)


class Probe:
    """Camera publishers, a /diagnostics collector and a FusionInfo counter in this process."""

    def __init__(self, ns: str = "") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("graph_probe", context=self.context)
        self.ns = ns
        self.pubs = {s: self.node.create_publisher(Image, f"{ns}/{s}/image_raw", qos_profile_sensor_data)
                     for s in ("thermal", "rgb")}
        self.lock = threading.Lock()
        self.diags: list[DiagnosticStatus] = []
        self.infos = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.node.create_subscription(msg_mod.FusionInfo, f"{ns}/fused/info", self._on_info, 20)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diag(self, msg) -> None:
        with self.lock:
            self.diags += list(msg.status)

    def _on_info(self, msg) -> None:
        with self.lock:
            self.infos += 1

    def wait(self, predicate, timeout: float, what: str, proc=None) -> None:
        rosutil.wait_locked(self.lock, predicate, timeout, what + (f"\n{proc.describe()}" if proc else ""))

    def diag_after(self, t0: float, predicate, timeout: float, what: str, proc=None) -> DiagnosticStatus:
        """The first /diagnostics status received after ``len(diags)`` index t0 matching ``predicate``."""
        found = []

        def check():
            found[:] = [s for s in self.diags[t0:] if predicate(s)]
            return bool(found)

        self.wait(check, timeout, what, proc)
        return found[0]

    def send_pair(self, dt_ns: int = 3_000_000) -> None:
        t = time.time_ns()
        self.pubs["rgb"].publish(image_msg(VI, "bgr8", t, "cam"))
        self.pubs["thermal"].publish(image_msg(IR, "mono8", t + dt_ns, "flir"))

    def change_state(self, node_name: str, transition: int) -> bool:
        client = self.node.create_client(ChangeState, f"{node_name}/change_state")
        assert client.wait_for_service(timeout_sec=20.0)
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        deadline = time.monotonic() + 30.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(future.done() and future.result().success)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def assert_clean(proc: rosutil.RosProcess, rc: int) -> None:
    out = proc.output()
    assert rc == 0, f"exit code {rc}\n{proc.describe()}"
    assert "Traceback" not in out and "[ERROR]" not in out and "publish on" not in out, proc.describe()


def test_qos_overrides_are_visible_in_the_graph(tmp_path):
    """Radio link: fused/image best effort, depth 1; a reliable RGB subscription; in a namespace."""
    proc = start(tmp_path, ns="/uav7", fuser="classical", warmup=False, **{
        "qos_overrides./uav7/fused/image.publisher.reliability": "best_effort",
        "qos_overrides./uav7/fused/image.publisher.depth": 1,
        "qos_overrides./uav7/fused/info.publisher.durability": "transient_local",
        "qos_overrides./uav7/rgb/image_raw.subscription.reliability": "reliable"})
    probe = Probe("/uav7")
    try:
        node = probe.node
        probe.wait(lambda: node.get_publishers_info_by_topic("/uav7/fused/image")
                   and node.get_subscriptions_info_by_topic("/uav7/rgb/image_raw"), 60.0, "the node's endpoints", proc)
        (image_pub,) = node.get_publishers_info_by_topic("/uav7/fused/image")
        assert image_pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert image_pub.qos_profile.depth in (0, 1)  # some RMWs do not report the depth of remote endpoints
        (info_pub,) = node.get_publishers_info_by_topic("/uav7/fused/info")
        assert info_pub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert info_pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # default kept
        (rgb_sub,) = node.get_subscriptions_info_by_topic("/uav7/rgb/image_raw")
        assert rgb_sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        (th_sub,) = node.get_subscriptions_info_by_topic("/uav7/thermal/image_raw")
        assert th_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # qos_reliability default
    finally:
        probe.close()
        assert_clean(proc, proc.stop())


def test_diagnostics_levels_in_every_lifecycle_state(tmp_path):
    proc = start(tmp_path, autostart=False, fuser="classical", warmup=False, diagnostics_period_s=0.2,
                 stall_timeout_s=1.0, source_timeout_s=5.0)
    probe = Probe()
    try:
        status = probe.diag_after(0, lambda s: True, 60.0, "diagnostics while unconfigured", proc)
        assert status.level == DiagnosticStatus.WARN and values(status)["lifecycle_state"] == "unconfigured"
        assert status.hardware_id == "/diffmf_fusion"
        assert probe.change_state("/diffmf_fusion", Transition.TRANSITION_CONFIGURE)
        n = len(probe.diags)
        status = probe.diag_after(n, lambda s: values(s)["lifecycle_state"] == "inactive", 10.0, "inactive", proc)
        assert status.level == DiagnosticStatus.WARN and values(status)["model"] == "gff"
        assert probe.change_state("/diffmf_fusion", Transition.TRANSITION_ACTIVATE)
        n = len(probe.diags)
        status = probe.diag_after(n, lambda s: values(s)["lifecycle_state"] == "active", 10.0, "active", proc)
        assert status.level == DiagnosticStatus.WARN and status.message == "no camera images"
        # good pairs: a deliberate classical fuser is OK
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            probe.send_pair()
            time.sleep(0.1)
            with probe.lock:
                last = probe.diags[-1]
            if probe.infos > 3 and last.level == DiagnosticStatus.OK:
                break
        assert last.level == DiagnosticStatus.OK, (last, proc.describe())
        v = values(last)
        assert v["mode"] == "CLASSICAL" and float(v["pair_rate_hz"]) > 0 and float(v["output_rate_hz"]) > 0
        assert float(v["thermal_rate_hz"]) > 0 and float(v["rgb_rate_hz"]) > 0
        assert "thermal_stamp_delay_ms" in v and "rgb_stamp_delay_ms" in v
        # both cameras stream but their stamps are 5 s apart (no pair for 5 s): ERROR after stall_timeout_s
        n = len(probe.diags)
        deadline = time.monotonic() + 4.0
        error = None
        while error is None and time.monotonic() < deadline:
            probe.send_pair(dt_ns=5_000_000_000)
            time.sleep(0.1)
            with probe.lock:
                error = next((s for s in probe.diags[n:] if s.level == DiagnosticStatus.ERROR), None)
        assert error is not None and "nothing published" in error.message, proc.describe()
        assert probe.change_state("/diffmf_fusion", Transition.TRANSITION_DEACTIVATE)
        n = len(probe.diags)
        status = probe.diag_after(n, lambda s: values(s)["lifecycle_state"] == "inactive", 10.0, "inactive", proc)
        assert status.level == DiagnosticStatus.WARN
    finally:
        probe.close()
        assert_clean(proc, proc.stop())


@pytest.mark.parametrize("phase", ["start-up", "model load", "inference"])
def test_sigint_at_each_phase_exits_cleanly(tmp_path, phase):
    params = {"fuser": "diffmf", **model_params(tmp_path)} if phase != "start-up" else {"fuser": "classical"}
    proc = start(tmp_path, output_geometry="fixed", output_width=80, output_height=64, **params)
    probe = Probe() if phase == "inference" else None
    try:
        if phase == "start-up":
            time.sleep(0.3)  # imports / parameter declaration
        elif phase == "model load":
            deadline = time.monotonic() + 60.0
            while "configuring:" not in proc.output() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert "configuring:" in proc.output(), proc.describe()
            assert "loaded " not in proc.output()
        else:
            probe.wait(lambda: all(p.get_subscription_count() > 0 for p in probe.pubs.values()), 90.0,
                       "subscriptions", proc)
            deadline = time.monotonic() + 30.0
            while probe.infos < 2 and time.monotonic() < deadline:
                probe.send_pair()
                time.sleep(0.15)
            assert probe.infos >= 2, proc.describe()
            probe.send_pair()  # a frame in the worker when SIGINT arrives
            time.sleep(0.02)
        proc._signal_group(signal.SIGINT)
        if phase == "inference":  # Ctrl-C under ros2 launch: the terminal's SIGINT, then launch's
            time.sleep(0.3)
            proc._signal_group(signal.SIGINT)
        try:
            rc = proc.popen.wait(30.0)
        except Exception:  # noqa: BLE001
            rc = proc.stop()
        print(proc.describe())
        assert_clean(proc, rc)
    finally:
        if probe is not None:
            probe.close()
        proc.stop()


def test_stamps_increase_and_frame_id_is_the_rgb_camera_through_start_drop_and_return(tmp_path):
    """RGB-only start, fusion, thermal drop-out and return, both silent, thermal-only start, RGB
    drop-out and return: output stamps strictly increase, every output (fused, RGB_ONLY,
    THERMAL_ONLY) carries the RGB camera's frame_id (output_geometry rgb), single-camera frames
    carry their own stamp and pairs the RGB stamp."""
    proc = start(tmp_path, fuser="classical", fallback_fuser="mean", warmup=False, source_timeout_s=0.3)
    probe = Probe()
    outs = []
    probe.node.create_subscription(msg_mod.FusionInfo, "/fused/info", outs.append, 100)
    try:
        probe.wait(lambda: all(p.get_subscription_count() > 0 for p in probe.pubs.values()), 60.0,
                   "subscriptions", proc)
        time.sleep(0.5)
        for thermal, rgb, seconds in ((False, True, 1.0), (True, True, 1.0), (False, True, 1.0), (True, True, 1.0),
                                      (False, False, 0.8), (True, False, 1.0), (True, True, 1.0),
                                      (True, False, 1.0), (True, True, 1.0)):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.time_ns()
                if rgb:
                    probe.pubs["rgb"].publish(image_msg(VI, "bgr8", t, "rgb_optical"))
                if thermal:
                    probe.pubs["thermal"].publish(image_msg(IR, "mono8", t + 3_000_000, "flir_optical"))
                time.sleep(0.1)
        time.sleep(0.5)
        with probe.lock:
            got = list(outs)
    finally:
        probe.close()
        assert_clean(proc, proc.stop())
    from diffmf_core.live.sync import stamp_to_ns
    stamps = [stamp_to_ns(o.header.stamp) for o in got]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "output stamps repeat or go back"
    modes = [o.mode for o in got]
    FI = msg_mod.FusionInfo
    assert {FI.MODE_RGB_ONLY, FI.MODE_THERMAL_ONLY, FI.MODE_CLASSICAL} <= set(modes), modes
    assert {o.header.frame_id for o in got} == {"rgb_optical"}
    for o in got:
        own = o.thermal_stamp if o.mode == FI.MODE_THERMAL_ONLY else o.rgb_stamp
        assert stamp_to_ns(o.header.stamp) == stamp_to_ns(own)
    print(f"{len(got)} outputs, modes in order: {''.join('FRTC'[m] for m in modes)}")
