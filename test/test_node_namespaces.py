"""Two diffmf_fusion processes in two namespaces side by side (real rclpy, separate processes),
each started like `ros2 launch diffmf_ros fuse.launch.py namespace:=/uavN` with a copy of the
shipped config/fuse.yaml (key `/**`) in which only values were edited (fuser: classical,
fallback_fuser: mean): each node fuses only its own vehicle's cameras, publishes only under its
namespace, and took the file (its outputs name the file's fallback fuser)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
msg_mod = pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import rosutil  # noqa: E402
from diffmf_core.live.sync import stamp_to_ns  # noqa: E402
from test_node_integration import ROOT, image_msg, launch_settings, node_ros_args  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
VEHICLES = ("/uav1", "/uav2")


def edited_config(tmp) -> str:
    text = (ROOT / "config" / "fuse.yaml").read_text()
    assert text.count("\nfuser: warm_rule") == 0 and "    fuser: warm_rule\n" in text and "    fallback_fuser: gff\n" in text
    text = text.replace("    fuser: warm_rule\n", "    fuser: classical\n").replace(
        "    fallback_fuser: gff\n", "    fallback_fuser: mean\n")
    path = tmp / "fuse.yaml"
    path.write_text(text)
    return str(path)


def test_two_namespaces_side_by_side(tmp_path):
    config = edited_config(tmp_path)
    procs = []
    for ns in VEHICLES:
        settings = launch_settings(device="cpu", namespace=ns, config_file=config)
        procs.append(rosutil.start_python_module(
            f"diffmf_ros.{settings['executable']}", *node_ros_args(settings, {"warmup": False}),
            cwd=ROOT, log_dir=tmp_path))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("namespace_rig", context=context)
    lock = threading.Lock()
    infos = {ns: [] for ns in VEHICLES}
    pubs, sent = {}, {ns: set() for ns in VEHICLES}
    for ns in VEHICLES:
        pubs[ns] = {s: node.create_publisher(Image, f"{ns}/{s}/image_raw", qos_profile_sensor_data)
                    for s in ("thermal", "rgb")}

        def on_info(msg, ns=ns):
            with lock:
                infos[ns].append(msg)
        node.create_subscription(msg_mod.FusionInfo, f"{ns}/fused/info", on_info, 50)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60.0
        while not all(p.get_subscription_count() > 0 for v in pubs.values() for p in v.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                "nodes did not subscribe:\n" + "\n".join(p.describe() for p in procs)
            time.sleep(0.05)
        ir = np.zeros((48, 64), np.uint8)
        vi = np.zeros((48, 64, 3), np.uint8)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            with lock:
                if all(len(v) >= 5 for v in infos.values()):
                    break
            for k, ns in enumerate(VEHICLES):
                t = time.time_ns() + k * 41_000_000  # the two vehicles' stamps never coincide
                sent[ns].add(t)
                pubs[ns]["thermal"].publish(image_msg(ir, "mono8", t + 3_000_000, f"{ns[1:]}_thermal"))
                pubs[ns]["rgb"].publish(image_msg(vi, "bgr8", t, f"{ns[1:]}_rgb"))
            time.sleep(0.1)
        with lock:
            got = {ns: list(v) for ns, v in infos.items()}
        for ns in VEHICLES:
            assert len(got[ns]) >= 5, f"{ns}: {len(got[ns])} outputs\n" + "\n".join(p.describe() for p in procs)
            for info in got[ns]:
                assert stamp_to_ns(info.rgb_stamp) in sent[ns], f"{ns} fused another vehicle's frame"
                assert info.header.frame_id == f"{ns[1:]}_rgb"
                assert info.model_name == "mean", f"{ns} did not take the params file: {info.model_name}"
        # nothing in the root namespace; each vehicle has exactly one fusion node publishing
        assert node.count_publishers("/fused/info") == 0 and node.count_subscribers("/thermal/image_raw") == 0
        assert all(node.count_publishers(f"{ns}/fused/image") == 1 for ns in VEHICLES)
        names = set(node.get_node_names_and_namespaces())
        assert {("diffmf_fusion", ns) for ns in VEHICLES} <= names
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        for proc in procs:
            proc.stop_expecting_clean_exit()
