"""diffmf_fusion end to end with real rclpy: the node runs in its own process, started the way
launch/fuse.launch.py starts it (its executable, --params-file config/fuse.yaml, -p overrides,
-r remappings, all computed by the launch file's node_settings()); this process plays thermal + RGB
pairs (DroneVehicle test frames without their 100-px border, or generated frames) and checks
/fused/image, /fused/info and /diagnostics. Discovery is awaited by publisher/subscription counts."""
from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
msg_mod = pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import rosutil  # noqa: E402
from diffmf_core.common.paths import default_weights_path, shared_data_dir  # noqa: E402
from diffmf_core.live.sync import split_ns, stamp_to_ns  # noqa: E402

FusionInfo = msg_mod.FusionInfo
pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
FPS = 10.0
SOURCE_TIMEOUT_S = 0.4
SIZE = (128, 160)  # output_geometry fixed: keeps CPU inference of the network short on 2 cores
FUSED_TOPIC = "/test/fused"  # the launch file's fused_topic argument, i.e. a remapping
NODE_PARAMS = {"output_geometry": "fixed", "output_width": SIZE[1], "output_height": SIZE[0],
               "source_timeout_s": SOURCE_TIMEOUT_S, "diagnostics_period_s": 0.5}
# thermal -> RGB calibration used by the node; the fixed output scales the 640x512 RGB frame by 1/4
CALIBRATION = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
RGB_TO_OUTPUT = np.array([[0.25, 0.0, -0.375], [0.0, 0.25, -0.375], [0.0, 0.0, 1.0]])  # cv2.resize convention
MODEL_READY = importlib.util.find_spec("diffmf_core.fuser") is not None
# The DIFF-MF network (shipped weights, else a freshly initialised network of the live preset:
# the node path is the same); the classical fuser, said so explicitly, only without the model code.
FUSED_MODE = FusionInfo.MODE_FUSED if MODEL_READY else FusionInfo.MODE_CLASSICAL


def model_params(tmp: Path) -> dict:
    """Node parameters selecting the model for this run."""
    if not MODEL_READY:
        return {"fuser": "classical"}
    if default_weights_path("live").is_file():
        return {"fuser": "diffmf", "preset": "live"}
    import torch

    from diffmf_core.config import get_preset
    from diffmf_core.models.diffmf import DiffMF
    from diffmf_core.weights import save_weights

    torch.manual_seed(0)
    return {"fuser": "diffmf", "preset": "live",
            "weights": save_weights(DiffMF(get_preset("live")), tmp / "live_init.safetensors")}


def launch_settings(**launch_args) -> dict:
    """launch_ros Node kwargs from the real launch file (its pure node_settings(), repo as share dir)."""
    spec = importlib.util.spec_from_file_location("fuse_launch", ROOT / "launch" / "fuse.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.node_settings(launch_args, str(ROOT))


def ros_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def node_ros_args(settings: dict, extra_params: dict) -> list[str]:
    """The arguments launch_ros gives lib/<package>/<executable> for `settings` (+ test overrides)."""
    cmd = ["--ros-args", "-r", f"__node:={settings['name']}", *settings.get("ros_arguments", [])]
    if settings.get("namespace"):
        cmd += ["-r", f"__ns:={settings['namespace']}"]
    for entry in settings["parameters"]:
        if isinstance(entry, dict):
            for name, value in {**entry, **extra_params}.items():
                cmd += ["-p", f"{name}:={ros_value(value)}"]
        else:
            cmd += ["--params-file", str(entry)]
    for old, new in settings["remappings"]:
        cmd += ["-r", f"{old}:={new}"]
    return cmd


def load_frames(n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """(thermal mono8, rgb bgr8) 512x640 pairs: DroneVehicle test frames cropped, else generated."""
    import cv2

    root = shared_data_dir()
    folder = root / "test" / "DroneVehicle" if root else None
    if folder and (folder / "ir").is_dir():
        names = sorted(p.name for p in (folder / "ir").iterdir())[:n]
        frames = []
        for name in names:
            ir = cv2.imread(str(folder / "ir" / name), cv2.IMREAD_GRAYSCALE)[100:612, 100:740]
            vi = cv2.imread(str(folder / "vi" / name), cv2.IMREAD_COLOR)[100:612, 100:740]
            frames.append((np.ascontiguousarray(ir), np.ascontiguousarray(vi)))
        return frames
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (512, 640), dtype=np.uint8), rng.integers(0, 255, (512, 640, 3), dtype=np.uint8))
            for _ in range(n)]


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    # check_fields=False: ROS_PYTHON_CHECK_FIELDS=1 would check each byte in Python (0.4 s per MB)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, step=array.strides[0],
                check_fields=False)
    msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = array.tobytes()
    return msg


class Rig:
    """This process's side: camera publishers, output subscribers, a background executor."""

    def __init__(self, context) -> None:
        self.node = rclpy.create_node("diffmf_test_rig", context=context)
        self.thermal = self.node.create_publisher(Image, "/thermal/image_raw", qos_profile_sensor_data)
        self.rgb = self.node.create_publisher(Image, "/rgb/image_raw", qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.images: list[tuple[float, Image]] = []
        self.infos: list[tuple[float, FusionInfo]] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.sent: dict[int, int] = {}  # rgb stamp -> thermal stamp
        for msg_type, topic, store in ((Image, FUSED_TOPIC, self.images), (FusionInfo, "/fused/info", self.infos),
                                       (DiagnosticArray, "/diagnostics", self.diagnostics)):
            self.node.create_subscription(msg_type, topic, self._collector(store, topic != "/diagnostics"), 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.frames = load_frames()
        self.index = 0
        self.clock_ns = time.time_ns()

    def _collector(self, store: list, timed: bool):
        def callback(msg) -> None:
            with self.lock:
                store.append((time.monotonic(), msg) if timed else msg)
        return callback

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.01)
        return False

    def play(self, seconds: float, thermal: bool = True, rgb: bool = True, until=None) -> None:
        """Publish camera frames at FPS (wall-clock stamps; thermal 3 ms later) for `seconds` or until `until()`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ir, vi = self.frames[self.index % len(self.frames)]
            self.index += 1
            t_rgb = time.time_ns()
            t_ir = t_rgb + 3_000_000
            if thermal:
                self.thermal.publish(image_msg(ir, "mono8", t_ir, "thermal_camera"))
            if rgb:
                self.sent[t_rgb] = t_ir
                self.rgb.publish(image_msg(vi, "bgr8", t_rgb, "rgb_camera"))
            if until is not None and self.wait_for(until, 1.0 / FPS):
                return
            if until is None:
                time.sleep(1.0 / FPS)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def node_process(tmp_path_factory):
    """The fusion node, started as `ros2 launch diffmf_ros fuse.launch.py device:=cpu fused_topic:=...`
    (scripts/ros/fusion_node, the installed executable, runs diffmf_ros.fusion_node:main)."""
    tmp = tmp_path_factory.mktemp("node")
    calibration = tmp / "calibration.yaml"
    calibration.write_text(f"homography: {CALIBRATION.tolist()}\n")
    settings = launch_settings(device="cpu", fused_topic=FUSED_TOPIC)
    params = {**NODE_PARAMS, "calibration_file": calibration, **model_params(tmp)}
    proc = rosutil.start_python_module(f"diffmf_ros.{settings['executable']}", *node_ros_args(settings, params),
                                       cwd=ROOT, log_dir=tmp)
    yield proc
    proc.stop_expecting_clean_exit()


@pytest.fixture(scope="module")
def rig(node_process):
    context = rclpy.Context()
    rclpy.init(context=context)
    rig = Rig(context)
    connected = rig.wait_for(lambda: rig.thermal.get_subscription_count() > 0
                             and rig.rgb.get_subscription_count() > 0
                             and rig.node.count_publishers(FUSED_TOPIC) > 0, 60.0)
    if not connected:
        pytest.fail(f"node did not come up:\n{node_process.describe()}")
    yield rig
    rig.close()
    rclpy.shutdown(context=context)


def _latest_values(rig: Rig) -> dict[str, str]:
    status = rig.diagnostics[-1].status[0]
    return {kv.key: kv.value for kv in status.values}


def test_fuses_pairs_with_pair_stamps_and_provenance(rig):
    rig.play(40.0, until=lambda: sum(i.mode == FUSED_MODE for _, i in rig.infos) >= 5)
    with rig.lock:
        images, infos = list(rig.images), [i for _, i in rig.infos]
    fused = [i for i in infos if i.mode == FUSED_MODE]
    assert len(fused) >= 5, f"modes seen: {[i.mode for i in infos]}"
    info = fused[-1]
    rgb_ns = stamp_to_ns(info.rgb_stamp)
    assert stamp_to_ns(info.header.stamp) == rgb_ns and rig.sent[rgb_ns] == stamp_to_ns(info.thermal_stamp)
    image = next(m for _, m in images if stamp_to_ns(m.header.stamp) == rgb_ns)
    assert (image.height, image.width, image.encoding) == (*SIZE, "bgr8")
    assert image.step == SIZE[1] * 3 and len(image.data) == SIZE[0] * SIZE[1] * 3
    assert image.header.frame_id == info.header.frame_id == "rgb_camera"
    np.testing.assert_allclose(np.asarray(info.homography).reshape(3, 3), RGB_TO_OUTPUT @ CALIBRATION, atol=1e-9)
    assert 0.0 <= info.registration_quality <= 1.0
    assert info.model_name == ("diffmf-live" if MODEL_READY else "gff"), info.model_name
    assert 0 < info.inference_ms < info.latency_ms < 5000
    latencies = [i.latency_ms for i in fused]
    print(f"fused {len(fused)} frames: latency ms median {np.median(latencies):.1f} max {max(latencies):.1f}, "
          f"inference ms median {np.median([i.inference_ms for i in fused]):.1f}")
    assert rig.wait_for(lambda: any("latency_p50_ms" in {kv.key for kv in d.status[0].values}
                                    for d in rig.diagnostics), 5.0)
    values = _latest_values(rig)
    assert values["mode"] == ("FUSED" if MODEL_READY else "CLASSICAL") and values["device"] == "cpu"
    assert float(values["output_rate_hz"]) > 0 and float(values["rgb_rate_hz"]) > 0


def test_thermal_silence_degrades_to_rgb_only_and_recovers(rig):
    rig.play(30.0, until=lambda: rig.infos and rig.infos[-1][1].mode == FUSED_MODE)
    last_thermal = time.monotonic()
    last_thermal_ns = max(rig.sent.values())
    rig.play(SOURCE_TIMEOUT_S + 10.0, thermal=False,
             until=lambda: rig.infos[-1][0] > last_thermal and rig.infos[-1][1].mode == FusionInfo.MODE_RGB_ONLY)
    with rig.lock:
        first = next(((t, i) for t, i in rig.infos if t > last_thermal and i.mode == FusionInfo.MODE_RGB_ONLY), None)
    assert first is not None, "no RGB_ONLY frame while the thermal camera was silent"
    # the first RGB frame after the timeout goes out alone: source_timeout_s + one frame period, plus
    # at most one network inference still running when the camera stopped (its frames are dropped)
    gap_s = (stamp_to_ns(first[1].rgb_stamp) - last_thermal_ns) / 1e9
    print(f"RGB_ONLY from an RGB frame {gap_s:.2f} s after the last thermal frame")
    assert gap_s <= SOURCE_TIMEOUT_S + 1.0 / FPS + 1.0
    assert stamp_to_ns(first[1].thermal_stamp) == 0 and stamp_to_ns(first[1].rgb_stamp) > 0
    image = next(m for _, m in rig.images if m.header.stamp == first[1].header.stamp)
    assert (image.height, image.width) == SIZE
    assert rig.wait_for(lambda: _latest_values(rig)["mode"] == "RGB_ONLY", 3.0)
    back = time.monotonic()
    rig.play(20.0, until=lambda: rig.infos[-1][0] > back and rig.infos[-1][1].mode == FUSED_MODE)
    assert rig.infos[-1][1].mode == FUSED_MODE, "fusion did not resume after the thermal camera returned"


def test_bad_message_is_counted_and_good_frames_keep_flowing(rig):
    bad = image_msg(np.zeros((4, 4, 3), np.uint8), "yuv_bogus", time.time_ns(), "rgb_camera")
    for _ in range(3):
        rig.rgb.publish(bad)
    after = time.monotonic()
    rig.play(30.0, until=lambda: sum(t > after and i.mode == FUSED_MODE for t, i in rig.infos) >= 2)
    assert sum(t > after and i.mode == FUSED_MODE for t, i in rig.infos) >= 2
    assert rig.wait_for(lambda: int(_latest_values(rig).get("decode_error.unknown_encoding", 0)) >= 1, 5.0)
