"""diffmf bag player: publish a rosbag2's image topics with their recorded timing (rclpy).

    python -m diffmf_ros.player BAG [--rate 1.0] [--loop] [--clock] [--wait-for-subscribers N]

Reads the bag with rosbags and publishes each message's raw CDR bytes (no deserialisation) at
``first_wall + (bag_time - first_bag_time) / rate``. Default topics: every sensor_msgs Image and
CompressedImage topic (``--topics`` picks others). ``--clock`` also publishes rosgraph_msgs/Clock
on /clock (bag time, at ``--clock-hz`` and with every message) for nodes run with use_sim_time.
``--wait-for-subscribers N`` waits (up to ``--wait-timeout`` s) until every published topic has
N subscribers, then ``--settle`` s more (a publisher sees a subscription before the subscriber has
matched the publisher, and a volatile subscriber loses what is sent in between), so no frame is
lost to discovery. Publishers are RELIABLE, KEEP_LAST ``--depth``
(a reliable publisher also serves best-effort subscribers). Remap topics with the usual
``--ros-args -r /thermal/image_raw:=/other``. Exit status: 0 done/interrupted, 1 error.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from diffmf_core.tools.bag.common import COMPRESSED_TYPE, IMAGE_TYPE, BagError, iter_messages, open_reader
from diffmf_core.live.sync import split_ns

IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


def message_class(msgtype: str):
    """The rclpy message class for "pkg/msg/Name"."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not available in this Python environment") from exc


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffmf_ros.player", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 folder, .mcap or .db3")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    p.add_argument("--clock", action="store_true", help="publish /clock (bag time) for use_sim_time")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate between messages (default 40)")
    p.add_argument("--topics", nargs="+", help="topics to play (default: all image topics)")
    p.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                   help="wait until every played topic has N subscribers before starting")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for subscribers")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait after the subscribers appeared (default 1; with --wait-for-subscribers)")
    p.add_argument("--depth", type=int, default=100, help="publisher queue depth (default 100)")
    p.add_argument("--linger", type=float, default=2.0,
                   help="seconds to wait at the end for reliable delivery to finish (default 2)")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be > 0")
    return args


class Player:
    """Publishes a bag's chosen topics; ``stop`` may be set from a signal handler."""

    def __init__(self, node, reader, topics: list[str] | None, depth: int, clock: bool, clock_hz: float):
        self.node, self.reader, self.stop = node, reader, False
        available = reader.topics
        if topics:
            missing = [t for t in topics if t not in available]
            if missing:
                raise BagError(f"{reader.path}: no topic(s) {', '.join(missing)} "
                               f"(bag has {', '.join(sorted(available))})")
        else:
            topics = sorted(t for t, info in available.items() if info.msgtype in IMAGE_TYPES)
            if not topics:
                raise BagError(f"{reader.path}: no sensor_msgs Image/CompressedImage topics "
                               f"(bag has {', '.join(sorted(available)) or 'nothing'})")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.connections = [c for c in reader.connections if c.topic in topics]
        self.pubs = {t: node.create_publisher(message_class(available[t].msgtype), t, qos) for t in topics}
        self.counts = {t: 0 for t in topics}
        self.errors = 0
        self.clock_pub = None
        self.clock_period = 1.0 / clock_hz
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_msg = Clock
            self.clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10))

    def wait_for_subscribers(self, count: int, timeout: float, settle: float = 0.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop:
            lacking = [t for t, p in self.pubs.items() if p.get_subscription_count() < count]
            if not lacking:
                end = time.monotonic() + settle
                while not self.stop and time.monotonic() < end:
                    time.sleep(0.05)
                return not self.stop
            if time.monotonic() > deadline:
                print(f"player: error: after {timeout:.0f} s, fewer than {count} subscriber(s) on "
                      f"{', '.join(lacking)}", file=sys.stderr)
                return False
            time.sleep(0.05)
        return False

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(self._clock_msg(clock=ns_to_time_msg(bag_ns)))

    def play_once(self, rate: float) -> None:
        """Publish every message once with its recorded spacing divided by ``rate``."""
        first_bag = first_wall = None
        next_clock = 0.0
        for conn, bag_ns, raw in iter_messages(self.reader, self.connections):
            if first_bag is None:
                first_bag, first_wall = bag_ns, time.monotonic()
            due = first_wall + (bag_ns - first_bag) / 1e9 / rate
            while not self.stop:
                now = time.monotonic()
                if now >= due:
                    break
                if self.clock_pub is not None and now >= next_clock:
                    self._publish_clock(first_bag + int((now - first_wall) * rate * 1e9))
                    next_clock = now + self.clock_period
                time.sleep(min(due - now, self.clock_period if self.clock_pub else 0.05))
            if self.stop:
                return
            self._publish_clock(bag_ns)
            try:
                self.pubs[conn.topic].publish(bytes(raw))
                self.counts[conn.topic] += 1
            except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError under transport pressure
                self.errors += 1
                print(f"player: publish on {conn.topic} failed: {exc!r}", file=sys.stderr)

    def linger(self, seconds: float) -> None:
        """Give reliable subscribers time to receive the last messages."""
        deadline = time.monotonic() + seconds
        for pub in self.pubs.values():
            left = deadline - time.monotonic()
            if left <= 0 or self.stop:
                break
            pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))


def ns_to_time_msg(ns: int):
    """builtin_interfaces.msg.Time (rclpy) for nanoseconds."""
    from builtin_interfaces.msg import Time

    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else ["player", *argv]
    args = parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = player = None

    def request_stop(signum, frame):
        if player is not None:
            player.stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    started = time.monotonic()
    try:
        node = rclpy.create_node("diffmf_bag_player")
        with open_reader(Path(args.bag)) as reader:
            player = Player(node, reader, args.topics, args.depth, args.clock, args.clock_hz)
            if args.wait_for_subscribers and not player.wait_for_subscribers(args.wait_for_subscribers,
                                                                             args.wait_timeout, args.settle):
                return 1
            print(f"player: playing {args.bag} ({', '.join(player.pubs)}) at rate {args.rate}", flush=True)
            started = time.monotonic()
            while not player.stop:
                player.play_once(args.rate)
                if not args.loop:
                    break
            player.linger(args.linger)
    except BagError as exc:
        print(f"player: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    state = "interrupted" if player.stop else "done"
    print(f"player: {state} after {time.monotonic() - started:.2f} s: "
          + ", ".join(f"{t} {n}" for t, n in player.counts.items())
          + (f", {player.errors} publish errors" if player.errors else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
