"""Replay end to end through real ROS 2 topics, three processes: diffmf_ros.player (bag, /clock)
-> diffmf_ros.fusion_node (use_sim_time, device cpu) -> diffmf_ros.recorder. Every pair the
synchronizer can form from the bag (computed offline by ``diffmf bag fuse``, the same
PairSynchronizer) must come out exactly once, in order, with its stamps."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed")
pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from diffmf_core.tools import bag as bags  # noqa: E402
from diffmf_core.cli import main as cli  # noqa: E402
from diffmf_core.live.sync import stamp_to_ns  # noqa: E402
from test_bags import make_pairs, read_infos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parent.parent
H, W = 64, 80
NODE_PARAMS = {
    "device": "cpu", "use_sim_time": "true", "qos_reliability": "reliable", "qos_depth": "50",
    # fixed output at the input size: the model warms up at the size it will run at
    "output_geometry": "fixed", "output_width": str(W), "output_height": str(H),
    "source_timeout_s": "30.0",  # no single-source frames: the bag's drops are short gaps
    "thermal_delay_s": "0.004",
}


def wait_for(predicate, timeout: float, what: str, *procs) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            assert p.poll() is None, f"{p.name} exited early while waiting for {what}\n{p.describe()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + "\n".join(p.describe() for p in procs)
        time.sleep(0.05)


def test_player_node_recorder(tmp_path, ros_process):
    make_pairs(tmp_path / "pairs", n=14, size=(H, W))
    bag = tmp_path / "in"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--rate", "10", "--jitter-ms", "3",
                "--thermal-delay-ms", "4", "--drop", "0.15", "--seed", "11", "--quiet"]) == 0
    # what the synchronizer can pair, computed offline with the node's parameters
    params = bags.load_node_params() | {"fuser": "classical", "thermal_delay_s": float(NODE_PARAMS["thermal_delay_s"]),
                                        "source_timeout_s": float(NODE_PARAMS["source_timeout_s"])}
    offline = bags.fuse_bag(bag, tmp_path / "offline", params, progress=False)
    expected = [(stamp_to_ns(i.thermal_stamp), stamp_to_ns(i.rgb_stamp)) for i in read_infos(tmp_path / "offline")]
    assert offline.fused == len(expected) >= 8 and sum(offline.dropped().values()) > 0

    ros_params = [a for k, v in NODE_PARAMS.items() for a in ("-p", f"{k}:={v}")]
    node = ros_process("diffmf_ros.fusion_node", "--ros-args", "--params-file", str(ROOT / "config" / "fuse.yaml"),
                       *ros_params)
    ready = tmp_path / "recorder.ready"
    out = tmp_path / "recorded"
    recorder = ros_process("diffmf_ros.recorder", str(out), "--ready-file", str(ready),
                           "--max-frames", str(len(expected)), "--idle-timeout", "8", "--require-messages")
    wait_for(ready.exists, 60, "the recorder to match the node's publishers", node, recorder)
    player = ros_process("diffmf_ros.player", str(bag), "--clock", "--rate", "0.25",
                         "--wait-for-subscribers", "1", "--wait-timeout", "30")
    wait_for(lambda: recorder.poll() is not None, 60, "the recorder to finish", node, player)
    assert recorder.poll() == 0, recorder.describe()
    wait_for(lambda: player.poll() is not None, 20, "the player to finish", node)
    assert player.poll() == 0, player.describe()

    infos = read_infos(out)
    got = [(stamp_to_ns(i.thermal_stamp), stamp_to_ns(i.rgb_stamp)) for i in infos]
    assert got == expected, f"\n{node.describe()}\n{recorder.describe()}"
    assert [stamp_to_ns(i.header.stamp) for i in infos] == [rgb for _, rgb in expected]
    images = [msg for msg in _fused_stamps(out)]
    assert images == [rgb for _, rgb in expected]
    assert {i.mode for i in infos} <= {0, 3} and all(i.latency_ms > 0 for i in infos)


def _fused_stamps(path: Path) -> list[int]:
    store = bags.make_typestore()
    with bags.open_reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == bags.FUSED_TOPIC]
        out = []
        for _, _, raw in bags.iter_messages(reader, conns):
            msg = store.deserialize_cdr(raw, bags.IMAGE_TYPE)
            assert (msg.height, msg.width) == (H, W)
            out.append(stamp_to_ns(msg.header.stamp))
        return out
