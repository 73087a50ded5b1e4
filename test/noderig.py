"""Reliability-test helpers: diffmf_fusion in its own process (started with the launch file's
arguments, test_node_integration.node_ros_args), driven from this process with scripted frames.

* ``start_node(tmp, **params)``: the node process (rosutil.RosProcess).
* ``Rig(transports)``: camera publishers (raw Image or CompressedImage per camera), collectors of
  /fused/info (``Out`` records), the last few /fused/image messages and /diagnostics (dicts), a
  background executor. ``connect(proc)`` waits for discovery by counts.
* ``image(...)`` / ``compressed(...)``: messages with explicit fields (check_fields=False, so bad
  fields reach the node untouched); ``Stamps``: increasing wall-clock stamps.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

import rosutil
from diffmf_core.live.sync import split_ns, stamp_to_ns
from diffmf_ros.msg import FusionInfo
from test_node_integration import ROOT, launch_settings, node_ros_args

SOURCES = ("thermal", "rgb")


def start_node(tmp: Path, **params) -> rosutil.RosProcess:
    """diffmf_fusion as `ros2 launch diffmf_ros fuse.launch.py device:=cpu` plus -p ``params``."""
    settings = launch_settings(device="cpu")
    return rosutil.start_python_module(f"diffmf_ros.{settings['executable']}", *node_ros_args(settings, params),
                                       cwd=ROOT, log_dir=tmp)


def _set_stamp(msg, stamp_ns: int, frame_id: str):
    msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def image(array: np.ndarray | None, encoding: str, stamp_ns: int, frame_id: str = "", **fields) -> Image:
    """sensor_msgs/Image of ``array`` (fields derived from it) with ``fields`` overriding any of them."""
    values = {"encoding": encoding, "is_bigendian": 0}
    if array is not None:
        values.update(height=array.shape[0], width=array.shape[1], step=array.strides[0], data=array.tobytes())
    values.update(fields)
    return _set_stamp(Image(**values, check_fields=False), stamp_ns, frame_id)


def compressed(fmt: str, data: bytes, stamp_ns: int, frame_id: str = "") -> CompressedImage:
    return _set_stamp(CompressedImage(format=fmt, data=data, check_fields=False), stamp_ns, frame_id)


class Stamps:
    """Increasing stamps: wall clock now, at least ``min_step_s`` after the previous one."""

    def __init__(self, min_step_s: float = 0.03) -> None:
        self.step = int(min_step_s * 1e9)
        self.last = 0

    def next(self) -> int:
        self.last = max(time.time_ns(), self.last + self.step)
        return self.last


class Out(NamedTuple):
    """One /fused/info message as received here."""

    t: float  # time.monotonic() on arrival
    rx_ns: int  # time.time_ns() on arrival
    stamp: int
    thermal: int
    rgb: int
    mode: int
    latency_ms: float
    model: str


class Rig:
    """This process's side of a node test (see the module docstring)."""

    def __init__(self, transports: tuple[str, str] = ("raw", "raw"), keep_images: int = 30) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("diffmf_reliability_rig", context=self.context)
        self.pubs = {}
        for source, transport in zip(SOURCES, transports):
            topic = f"/{source}/image_raw" + ("/compressed" if transport == "compressed" else "")
            kind = CompressedImage if transport == "compressed" else Image
            self.pubs[source] = self.node.create_publisher(kind, topic, qos_profile_sensor_data)
        self.lock = threading.RLock()
        self.outs: list[Out] = []
        self.images: collections.deque = collections.deque(maxlen=keep_images)  # (stamp_ns, Image)
        self.diags: list[dict[str, str]] = []
        self.node.create_subscription(FusionInfo, "/fused/info", self._on_info, 100)
        self.node.create_subscription(Image, "/fused/image", self._on_image, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_info(self, msg) -> None:
        out = Out(time.monotonic(), time.time_ns(), stamp_to_ns(msg.header.stamp), stamp_to_ns(msg.thermal_stamp),
                  stamp_to_ns(msg.rgb_stamp), msg.mode, msg.latency_ms, msg.model_name)
        with self.lock:
            self.outs.append(out)

    def _on_image(self, msg) -> None:
        with self.lock:
            self.images.append((stamp_to_ns(msg.header.stamp), msg))

    def _on_diag(self, msg) -> None:
        values = {kv.key: kv.value for status in msg.status for kv in status.values}
        with self.lock:
            self.diags.append(values)

    def connect(self, proc: rosutil.RosProcess, timeout: float = 60.0) -> None:
        """Wait until the node subscribes to both cameras and publishes /fused/info (discovery by counts)."""
        ok = self.wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values())
                           and self.node.count_publishers("/fused/info") > 0
                           and self.node.count_publishers("/fused/image") > 0, timeout, locked=False)
        assert ok and proc.poll() is None, f"node did not come up:\n{proc.describe()}"

    def prime(self, send, proc: rosutil.RosProcess, timeout: float = 30.0) -> None:
        """Call ``send()`` until an output comes back: a publisher can see the node's subscription
        before the node's reader has matched it, so the first best-effort frames may be lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send()
            if self.wait_for(lambda: bool(self.outs), 0.25):
                return
        raise AssertionError(f"no output from the node in {timeout} s:\n{proc.describe()}")

    def wait_for(self, predicate, timeout: float, locked: bool = True) -> bool:
        """Poll ``predicate`` (under the collector lock) until true or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if locked:
                with self.lock:
                    ok = predicate()
            else:
                ok = predicate()
            if ok or time.monotonic() > deadline:
                return bool(ok)
            time.sleep(0.005)

    def publish(self, source: str, msg) -> None:
        self.pubs[source].publish(msg)

    def out_for(self, rgb_stamp: int) -> Out | None:
        with self.lock:
            return next((o for o in reversed(self.outs) if o.rgb == rgb_stamp), None)

    def image_for(self, stamp: int) -> Image | None:
        with self.lock:
            return next((m for s, m in reversed(self.images) if s == stamp), None)

    def fresh_diag(self, predicate=lambda d: True, timeout: float = 5.0) -> dict[str, str]:
        """The first /diagnostics values arriving from now on that satisfy ``predicate``."""
        with self.lock:
            start = len(self.diags)
        found: list[dict] = []

        def check() -> bool:
            found[:] = [d for d in self.diags[start:] if predicate(d)]
            return bool(found)

        assert self.wait_for(check, timeout), f"no matching /diagnostics in {timeout} s; last: {self.diags[-1:]}"
        return found[0]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
