"""diffmf bag recorder: record the fusion node's output (and optionally its inputs) to a rosbag2.

    python -m diffmf_ros.recorder OUTPUT [--inputs] [--max-frames N] [--duration S] [--idle-timeout S]

Subscribes with ``raw=True`` (messages arrive as serialised CDR, written unchanged with rosbags:
the same bytes ``rclpy.serialization.serialize_message`` produces) to fused/image and
fused/info (or ``--topics``), plus, with ``--inputs``, whichever of thermal/image_raw and
rgb/image_raw (raw and /compressed) appear while recording. Relative names resolve in the
recorder's namespace like the fusion node's (``--ros-args -r __ns:=/uav1`` records
/uav1/fused/image ...); the bag holds the resolved names. A topic's type is taken from the ROS graph once a publisher appears; its
reliability follows the publishers' (reliable if all are, else best effort), KEEP_LAST ``--depth``.
Bag time = wall-clock receive time. ``--ready-file`` is created once every ``--topics`` topic has a matched
publisher (for scripts that must not start the data flow before the recorder listens).

Stops on SIGINT/SIGTERM, after ``--max-frames`` messages on the first topic, after ``--duration``
seconds, or ``--idle-timeout`` seconds after the last message (after ``--max-frames`` the other
topics get up to a second to deliver their matching messages); then closes the bag (metadata
written) and prints a summary. Exit status: 0 ok, 1 error (including nothing recorded with
``--require-messages``).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from diffmf_core.tools.bag.common import (FUSED_TOPIC, INFO_TOPIC, RGB_TOPIC, STORAGES, THERMAL_TOPIC,
                                        make_typestore, open_writer)
from diffmf_ros.player import message_class

MAX_FRAMES_GRACE_S = 1.0
DISCOVERY_PERIOD_S = 0.1
# relative, as the node's: they follow the recorder's namespace
OUTPUT_TOPICS = [FUSED_TOPIC.lstrip("/"), INFO_TOPIC.lstrip("/")]
INPUT_TOPICS = [t.lstrip("/") + suffix for suffix in ("", "/compressed") for t in (THERMAL_TOPIC, RGB_TOPIC)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffmf_ros.recorder", description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="bag folder to create")
    p.add_argument("--topics", nargs="+", default=OUTPUT_TOPICS,
                   help="topics to record, relative ones in the recorder's namespace (default: fused/image fused/info)")
    p.add_argument("--inputs", action="store_true",
                   help="also record the camera topics (raw and /compressed) that appear; not needed for ready")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N messages on the first topic")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="stop S seconds after the last message (once something was recorded)")
    p.add_argument("--depth", type=int, default=100, help="subscription queue depth (default 100)")
    p.add_argument("--ready-file", help="create this file once every topic has a matched publisher")
    p.add_argument("--require-messages", action="store_true", help="exit 1 if nothing was recorded")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p.parse_args(argv)


class Recorder:
    """Subscribes to topics as they appear and writes every message to an open rosbags Writer."""

    def __init__(self, node, writer, topics: list[str], optional: list[str], depth: int):
        self.node, self.writer, self.depth = node, writer, depth
        self.store = make_typestore()
        self.topics = [node.resolve_topic_name(t) for t in topics]
        self.optional = [t for t in (node.resolve_topic_name(o) for o in optional) if t not in self.topics]
        self.subs: dict[str, object] = {}
        self.conns: dict[str, object] = {}
        self.counts = {t: 0 for t in self.topics}
        self.first_ns = self.last_ns = None
        self.last_rx = None

    def discover(self) -> None:
        """Subscribe to every wanted topic that now has a publisher."""
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics + self.optional:
            if topic in self.subs or topic not in types:
                continue
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            msgtype = types[topic][0]
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
            self.counts.setdefault(topic, 0)
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
            self.subs[topic] = self.node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True)
            self.node.get_logger().info(f"recording {topic} ({msgtype}, {'reliable' if reliable else 'best effort'})")

    def ready(self) -> bool:
        """Every required topic subscribed and matched with at least one publisher."""
        return all(t in self.subs and self.subs[t].get_publisher_count() > 0 for t in self.topics)

    def _on_message(self, topic: str, raw: bytes) -> None:
        now = time.time_ns()
        self.writer.write(self.conns[topic], now, raw)
        self.counts[topic] += 1
        self.first_ns = self.first_ns or now
        self.last_ns = now
        self.last_rx = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else ["recorder", *argv]
    args = parse_args(remove_ros_args(argv)[1:])
    output = Path(args.output)
    if output.exists():
        if not args.overwrite:
            print(f"recorder: error: {output} exists already (use --overwrite)", file=sys.stderr)
            return 1
        import shutil

        shutil.rmtree(output)
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = {"reason": None}

    def request_stop(signum, frame):
        stop["reason"] = signal.Signals(signum).name

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    node = rclpy.create_node("diffmf_bag_recorder")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = open_writer(output, args.storage)
    except Exception as exc:  # noqa: BLE001 - report any writer error in one line
        print(f"recorder: error: cannot create {output}: {exc}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 1
    rec = Recorder(node, writer, args.topics, INPUT_TOPICS if args.inputs else [], args.depth)
    started = time.monotonic()
    announced = False
    reached = None
    next_discovery = 0.0
    first = rec.topics[0]
    try:
        while stop["reason"] is None:
            rclpy.spin_once(node, timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_discovery:
                rec.discover()
                next_discovery = now + DISCOVERY_PERIOD_S
            if not announced:
                if rec.ready():
                    announced = True
                    if args.ready_file:
                        Path(args.ready_file).write_text("ready\n")
                    print(f"recorder: ready, recording {', '.join(rec.topics)} to {output}", flush=True)
            if args.max_frames and rec.counts[first] >= args.max_frames:
                # let companions (e.g. /fused/info) catch up, for at most MAX_FRAMES_GRACE_S
                reached = reached or now
                if all(rec.counts[t] >= args.max_frames for t in rec.topics) or now - reached > MAX_FRAMES_GRACE_S:
                    stop["reason"] = f"{args.max_frames} frames on {first}"
            elif args.duration and now - started >= args.duration:
                stop["reason"] = f"duration {args.duration} s"
            elif args.idle_timeout and rec.last_rx is not None and now - rec.last_rx >= args.idle_timeout:
                stop["reason"] = f"idle for {args.idle_timeout} s"
    finally:
        for sub in rec.subs.values():
            node.destroy_subscription(sub)
        writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    span = (rec.last_ns - rec.first_ns) / 1e9 if rec.first_ns else 0.0
    print(f"recorder: stopped ({stop['reason']}); wrote {output}: "
          + ", ".join(f"{t} {n}" for t, n in rec.counts.items()) + f" over {span:.2f} s", flush=True)
    if args.require_messages and not any(rec.counts.values()):
        print("recorder: error: nothing was recorded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
