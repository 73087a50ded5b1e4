"""The same camera input through the fusion node (in this process, real rclpy publishers and
subscriptions) and through `diffmf bag fuse` (diffmf_core.tools.bag.fuse_bag) gives the same outputs:
stamps, frame_ids, modes, FusionInfo source stamps and pixels. Distinct thermal/RGB stamps, two
image sizes, an unpaired thermal frame; run for output_geometry rgb and thermal."""
from __future__ import annotations

import rosutil

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from diffmf_core.tools import bag as bags  # noqa: E402
from diffmf_core.live.sync import split_ns, stamp_to_ns  # noqa: E402

pytestmark = pytest.mark.ros
PARAMS = {"fuser": "classical", "fallback_fuser": "mean"}
BASE = 1_700_000_000_000_000_000
RNG = np.random.default_rng(3)


def inputs() -> list[tuple[str, np.ndarray, int, str]]:
    """(source, image, stamp, frame_id) in arrival order: 6 pairs (thermal 4 ms after RGB), an
    unpaired thermal frame after the third."""
    out = []
    for i in range(6):
        t = BASE + i * 100_000_000
        out.append(("rgb", RNG.integers(0, 256, (48, 64, 3), np.uint8), t, "rgb_optical"))
        out.append(("thermal", RNG.integers(0, 256, (40, 56), np.uint8), t + 4_000_000, "flir_optical"))
        if i == 2:
            out.append(("thermal", RNG.integers(0, 256, (40, 56), np.uint8), t + 50_000_000, "flir_optical"))
    return out


def through_bag(tmp_path, frames, params) -> list[tuple]:
    store = bags.make_typestore()
    writer = bags.open_writer(tmp_path / "in", "mcap")
    conns = {s: writer.add_connection(topic, bags.IMAGE_TYPE, typestore=store)
             for s, topic in (("thermal", bags.THERMAL_TOPIC), ("rgb", bags.RGB_TOPIC))}
    for source, img, stamp, frame_id in frames:
        msg = bags.image_msg(store, img, stamp, frame_id)
        writer.write(conns[source], stamp, store.serialize_cdr(msg, bags.IMAGE_TYPE))
    writer.close()
    bags.fuse_bag(tmp_path / "in", tmp_path / "out", params, progress=False)
    images, infos = {}, []
    with bags.open_reader(tmp_path / "out") as reader:
        conns = [c for c in reader.connections if c.topic in (bags.FUSED_TOPIC, bags.INFO_TOPIC)]
        for conn, _, raw in bags.iter_messages(reader, conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == bags.INFO_TOPIC:
                infos.append(msg)
            else:
                images[stamp_to_ns(msg.header.stamp)] = (msg.header.frame_id, np.asarray(msg.data).tobytes())
    return [(stamp_to_ns(i.header.stamp), i.header.frame_id, int(i.mode), stamp_to_ns(i.thermal_stamp),
             stamp_to_ns(i.rgb_stamp), images[stamp_to_ns(i.header.stamp)]) for i in infos]


def through_node(frames, params) -> list[tuple]:
    context = rclpy.Context()
    rclpy.init(context=context)
    node = fusion_node.FusionNode(context=context, parameter_overrides=[Parameter(k, value=v)
                                                                        for k, v in params.items()])
    rig = rclpy.create_node("bag_compare_rig", context=context)
    infos, images = [], {}
    rig.create_subscription(fusion_node.FusionInfo, "fused/info", infos.append, 50)
    rig.create_subscription(Image, "fused/image", lambda m: images.__setitem__(
        stamp_to_ns(m.header.stamp), (m.header.frame_id, bytes(m.data))), 50)
    pubs = {s: rig.create_publisher(Image, f"{s}/image_raw", qos_profile_sensor_data) for s in ("thermal", "rgb")}
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(rig)

    def spin(seconds, until=lambda: False):
        rosutil.spin_for(executor, seconds, until)

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        spin(10.0, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()))
        spin(0.5)  # let the node's readers match the publishers
        for source, img, stamp, frame_id in frames:
            msg = Image(height=img.shape[0], width=img.shape[1], encoding="bgr8" if img.ndim == 3 else "mono8",
                        step=img.strides[0], data=img.tobytes(), check_fields=False)
            msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(stamp)
            msg.header.frame_id = frame_id
            n = len(infos)
            pubs[source].publish(msg)
            # lock-step: after the frame that completes a pair, wait for its output (no mailbox drop)
            spin(3.0 if source == "thermal" else 0.05, lambda: len(infos) > n)
        spin(0.5)
    finally:
        executor.shutdown()
        node.stop()
        node.destroy_node()
        rig.destroy_node()
        context.try_shutdown()
    return [(stamp_to_ns(i.header.stamp), i.header.frame_id, int(i.mode), stamp_to_ns(i.thermal_stamp),
             stamp_to_ns(i.rgb_stamp), images[stamp_to_ns(i.header.stamp)]) for i in infos]


@pytest.mark.parametrize("geometry", ["rgb", "thermal"])
def test_node_and_bag_fuse_give_the_same_outputs(tmp_path, geometry):
    frames = inputs()
    params = {**PARAMS, "output_geometry": geometry}
    from_bag = through_bag(tmp_path, frames, params)
    from_node = through_node(frames, params)
    assert len(from_bag) == 6, [o[:5] for o in from_bag]
    assert [o[:5] for o in from_node] == [o[:5] for o in from_bag]
    for (_, _, _, _, _, (node_frame, node_px)), (_, _, _, _, _, (bag_frame, bag_px)) in zip(from_node, from_bag):
        assert node_frame == bag_frame and node_px == bag_px
    ref = 3 if geometry == "thermal" else 4
    assert all(o[0] == o[ref] for o in from_bag)  # the geometry camera's stamp
    assert {o[1] for o in from_bag} == {"flir_optical" if geometry == "thermal" else "rgb_optical"}
