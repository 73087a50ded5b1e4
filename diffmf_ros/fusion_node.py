"""diffmf_fusion: the live thermal + RGB fusion node (thin glue over diffmf_core).

A managed (lifecycle) node. on_configure loads the model (classical fallback when it cannot load)
and warms it up; on_activate subscribes and starts the worker thread; `autostart` (default true)
runs both transitions at start.

Data flow: subscriptions decode with diffmf_core.imagecodec (bad messages, and messages with a
zero header stamp, are dropped and counted in /diagnostics as decode_error.<ImageDecodeError.kind>
or decode_error.zero_stamp) -> diffmf_core.sync.PairSynchronizer (duplicate, out-of-order and
back-jumping stamps: its sync_* counters) -> a one-slot latest-pair
mailbox (a newer pair replaces a waiting one; counted as a drop) -> one worker thread running
diffmf_core.pipeline.FusionPipeline -> /fused/image (+ /fused/image/compressed), /fused/info
(diffmf_ros/FusionInfo) and /diagnostics. Nothing is fused in a subscription callback. Each kind of
bad input is logged once, then with its running total at most every 30 s. /diagnostics also
reports the queues (sync_queue_thermal/rgb <= sync_queue_size, mailbox_pending <= 1) and, when the
network is not in use, degraded_reason.

Degraded modes: a camera silent for longer than source_timeout_s (steady clock, measured on
arrival) makes every frame of the other camera go out alone (RGB_ONLY / THERMAL_ONLY) until it
returns. A model that cannot load or run is replaced by the classical fallback_fuser (CLASSICAL).

Time: pairing uses header stamps only, so use_sim_time (bag replay) works. Output stamp = the
stamp of the output geometry's camera. latency_ms = ROS clock now - the newer input stamp; under
use_sim_time (where the simulated clock is coarse and may be paused) it is the steady-clock time
since the newer input message arrived, i.e. the node's own latency.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from diffmf_core import imagecodec
from diffmf_core.agc import ThermalAGC
from diffmf_core.baselines import CLASSICAL_FUSERS
from diffmf_core.imagecodec import ImageDecodeError
from diffmf_core.pipeline import FusionPipeline, build_pipeline
from diffmf_core.registration import CalibrationError
from diffmf_core.sync import PairSynchronizer, split_ns, stamp_to_ns
from diffmf_ros.msg import FusionInfo

NODE_NAME = "diffmf_fusion"
SOURCES = ("thermal", "rgb")
MODE_NAMES = {
    FusionInfo.MODE_FUSED: "FUSED",
    FusionInfo.MODE_RGB_ONLY: "RGB_ONLY",
    FusionInfo.MODE_THERMAL_ONLY: "THERMAL_ONLY",
    FusionInfo.MODE_CLASSICAL: "CLASSICAL",
}
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# PairSynchronizer counters that mean a camera sent bad stamps -> what the log says
SYNC_ANOMALIES = {
    "duplicates": "duplicate stamp ignored",
    "out_of_order": "stamp older than already paired frames",
    "resets": "stamp jumped back by more than 1 s; pairing restarted",
}


@dataclasses.dataclass(frozen=True)
class Param:
    """One node parameter: default, description, constraints, and whether it may change live."""

    name: str
    default: Any
    description: str
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    runtime: bool = False

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=not self.runtime)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.lo is not None and isinstance(self.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=self.lo, to_value=self.hi, step=0.0)]
        elif self.lo is not None:
            d.integer_range = [IntegerRange(from_value=int(self.lo), to_value=int(self.hi), step=1)]
        return d


PARAMS = (
    Param("autostart", True, "configure and activate at start"),
    Param("thermal_topic", "/thermal/image_raw", "thermal camera topic"),
    Param("rgb_topic", "/rgb/image_raw", "RGB camera topic"),
    Param("thermal_transport", "raw", "raw: Image on <topic>; compressed: CompressedImage on <topic>/compressed",
          choices=("raw", "compressed")),
    Param("rgb_transport", "raw", "raw: Image on <topic>; compressed: CompressedImage on <topic>/compressed",
          choices=("raw", "compressed")),
    Param("qos_reliability", "best_effort", "subscription reliability", choices=("best_effort", "reliable")),
    Param("qos_depth", 5, "subscription history depth", lo=1, hi=100),
    Param("sync_queue_size", 10, "frames kept per camera while waiting for a partner", lo=1, hi=100),
    Param("sync_slop_s", 0.02, "largest stamp difference of a pair, s", lo=0.0, hi=1.0, runtime=True),
    Param("sync_min_interval_s", 0.02, "shortest interval between two frames of one camera, s; lets a pair "
          "go out without waiting for the next frame (0 = wait: exact ApproximateTime)", lo=0.0, hi=1.0,
          runtime=True),
    Param("thermal_delay_s", 0.0, "thermal stamps are this much later than RGB stamps, s", lo=-1.0, hi=1.0,
          runtime=True),
    Param("max_image_pixels", 16777216, "largest accepted input image, pixels", lo=1, hi=268435456, runtime=True),
    Param("thermal_agc_mode", "auto", "mono16 thermal to 8 bit: auto or fixed [agc_low, agc_high]",
          choices=("auto", "fixed"), runtime=True),
    Param("agc_low", 0.0, "raw count mapped to 0 (fixed AGC)", lo=0.0, hi=65535.0, runtime=True),
    Param("agc_high", 65535.0, "raw count mapped to 255 (fixed AGC)", lo=0.0, hi=65535.0, runtime=True),
    Param("calibration_file", "", "homography YAML; empty = package config/calibration/identity.yaml"),
    Param("output_geometry", "rgb", "output size and frame", choices=("rgb", "thermal", "fixed")),
    Param("output_width", 640, "output width for output_geometry fixed", lo=16, hi=8192),
    Param("output_height", 512, "output height for output_geometry fixed", lo=16, hi=8192),
    Param("ecc_refine", False, "refine the calibrated homography with ECC (every 30th pair)"),
    Param("fuser", "diffmf", "diffmf (network, classical fallback) or classical (always fallback_fuser)",
          choices=("diffmf", "classical")),
    Param("device", "auto", "inference device: auto, cpu, cuda or cuda:N"),
    Param("half_precision", True, "fp16 inference on CUDA"),
    Param("cuda_graph", False, "replay the network from a CUDA graph per input size (CUDA only)"),
    Param("preset", "live", "model preset", choices=("live", "paper")),
    Param("weights", "", "weights .safetensors; empty = shipped weights of the preset"),
    Param("fallback_fuser", "gff", "classical fuser used when the network cannot run", choices=tuple(CLASSICAL_FUSERS)),
    Param("warmup", True, "run one blank inference before activation"),
    Param("output_encoding", "bgr8", "encoding of /fused/image", choices=("bgr8", "mono8"), runtime=True),
    Param("publish_compressed", False, "also publish /fused/image/compressed (JPEG)"),
    Param("jpeg_quality", 90, "JPEG quality of /fused/image/compressed", lo=1, hi=100, runtime=True),
    Param("frame_id", "", "frame_id of the outputs; empty = the output geometry camera's frame", runtime=True),
    Param("source_timeout_s", 0.5, "a camera silent this long is degraded to single-source output, s",
          lo=0.05, hi=60.0, runtime=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics, s", lo=0.1, hi=60.0),
)
PARAM_BY_NAME = {p.name: p for p in PARAMS}


def check_params(values: dict[str, Any]) -> list[str]:
    """Reasons why `values` (name -> value, all parameters) are not a valid configuration."""
    errors = []
    for p in PARAMS:
        v = values[p.name]
        if p.choices and v not in p.choices:
            errors.append(f"{p.name}={v!r}: must be one of {', '.join(p.choices)}")
        if p.lo is not None and not p.lo <= v <= p.hi:
            errors.append(f"{p.name}={v!r}: must be in [{p.lo}, {p.hi}]")
    if not DEVICE_RE.match(values["device"]):
        errors.append(f"device={values['device']!r}: must be auto, cpu, cuda or cuda:N")
    if values["agc_low"] >= values["agc_high"]:
        errors.append(f"agc_low={values['agc_low']} must be below agc_high={values['agc_high']}")
    for name in ("thermal_topic", "rgb_topic"):
        if not values[name]:
            errors.append(f"{name} must not be empty")
    if values["thermal_topic"] == values["rgb_topic"]:
        errors.append("thermal_topic and rgb_topic must differ")
    calib = values["calibration_file"]
    if calib and not Path(calib).is_file():
        errors.append(f"calibration_file={calib!r}: no such file")
    return errors


def package_config_file(relative: str) -> Path:
    """A file under the package's config/ (installed share dir on a ROS 2 system, else the checkout)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            candidate = Path(get_package_share_directory("diffmf_ros")) / "config" / relative
            if candidate.is_file():
                return candidate
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent / "config" / relative


def to_stamp(ns: int) -> Time:
    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded camera image with its header stamp, frame_id and steady-clock arrival time."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    rx_ns: int


@dataclasses.dataclass(frozen=True)
class Job:
    """Work for the worker: a matched pair, or one camera alone (degraded mode)."""

    thermal: Frame | None
    rgb: Frame | None
    stamp_ns: int


class LatestMailbox:
    """One-slot holder: put() replaces a waiting item (counted in `dropped`); get() blocks."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self):
        """The newest item, or None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items waiting (0 or 1)."""
        return int(self._item is not None)


class Stats:
    """Thread-safe counters, event rates over a sliding window and latency percentiles."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._window_ns = int(window_s * 1e9)
        self._events: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._latency = collections.deque(maxlen=300)
        self._inference = collections.deque(maxlen=300)
        self.counters: collections.Counter = collections.Counter()
        self._start_ns = time.monotonic_ns()

    def tick(self, name: str) -> None:
        with self._lock:
            self._events[name].append(time.monotonic_ns())

    def count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def record(self, latency_ms: float, inference_ms: float) -> None:
        with self._lock:
            self._latency.append(latency_ms)
            self._inference.append(inference_ms)

    def rate(self, name: str) -> float:
        now = time.monotonic_ns()
        with self._lock:
            q = self._events[name]
            while q and q[0] < now - self._window_ns:
                q.popleft()
            span = min(self._window_ns, now - self._start_ns)
            return len(q) * 1e9 / span if span > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        with self._lock:
            lat, inf = list(self._latency), list(self._inference)
        out = {}
        if lat:
            for q, v in zip((50, 90, 99), np.percentile(lat, (50, 90, 99))):
                out[f"latency_p{q}_ms"] = float(v)
            out["inference_p50_ms"] = float(np.median(inf))
        return out


class FusionNode(LifecycleNode):
    """The diffmf_fusion node (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, p.descriptor())
        self.p = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        errors = check_params(self.p)
        if errors:
            raise ValueError("invalid parameters: " + "; ".join(errors))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.stats = Stats()
        self.mailbox = LatestMailbox()
        self._lock = threading.Lock()  # guards the synchronizer, AGC and last-arrival times
        self._pipeline = None
        self._sync: PairSynchronizer | None = None
        self._last_mode: int | None = None
        self._logged_reason: str | None = None
        self._frame_ids = {s: s for s in SOURCES}
        self._agc: ThermalAGC | None = None
        self._worker: threading.Thread | None = None
        self._subs: list = []
        self._timers: list = []
        self._pubs: dict[str, Any] = {}
        self._last_rx: dict[str, int] = {}
        self._stale: dict[str, bool] = {s: False for s in SOURCES}
        self._bad_logged: dict[str, float] = {}  # bad-input kind -> monotonic time last logged

    # ---- parameters --------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        values = dict(self.p)
        for prm in params:
            if prm.name in PARAM_BY_NAME:
                values[prm.name] = prm.value
        errors = check_params(values)
        return SetParametersResult(successful=not errors, reason="; ".join(errors))

    def _after_set_parameters(self, params) -> None:
        for prm in params:
            if prm.name in PARAM_BY_NAME:
                self.p[prm.name] = prm.value
        names = {prm.name for prm in params}
        with self._lock:
            if names & {"sync_slop_s", "sync_min_interval_s", "thermal_delay_s"} and self._sync is not None:
                self._sync = self._make_sync()
            if names & {"thermal_agc_mode", "agc_low", "agc_high"}:
                self._agc = self._make_agc()
        if "output_encoding" in names and self._pipeline is not None:
            self._pipeline.output_encoding = self.p["output_encoding"]

    def _make_sync(self) -> PairSynchronizer:
        interval = self.p["sync_min_interval_s"]
        return PairSynchronizer(self.p["sync_queue_size"], self.p["sync_slop_s"], self.p["thermal_delay_s"],
                                inter_message_lower_bound=(interval, interval))

    def _make_agc(self) -> ThermalAGC:
        return ThermalAGC(self.p["thermal_agc_mode"], self.p["agc_low"], self.p["agc_high"])

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._sync = self._make_sync()
        self._agc = self._make_agc()
        try:
            self._pipeline = self._build_pipeline()
        except (CalibrationError, ValueError) as exc:
            self.get_logger().fatal(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._pubs = {
            "image": self.create_lifecycle_publisher(Image, "/fused/image", 5),
            "info": self.create_lifecycle_publisher(FusionInfo, "/fused/info", 5),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 5),
        }
        if self.p["publish_compressed"]:
            self._pubs["compressed"] = self.create_lifecycle_publisher(
                CompressedImage, "/fused/image/compressed", 5)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.p["qos_depth"],
            reliability=ReliabilityPolicy.BEST_EFFORT if self.p["qos_reliability"] == "best_effort"
            else ReliabilityPolicy.RELIABLE)
        for source in SOURCES:
            if self.p[f"{source}_transport"] == "compressed":
                self._subs.append(self.create_subscription(
                    CompressedImage, self._topic(source), lambda msg, s=source: self._on_compressed(s, msg), qos))
            else:
                self._subs.append(self.create_subscription(
                    Image, self._topic(source), lambda msg, s=source: self._on_image(s, msg), qos))
        now = time.monotonic_ns()
        self._last_rx = {s: now for s in SOURCES}
        self._stale = {s: False for s in SOURCES}
        self.mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, name="diffmf_worker", daemon=True)
        self._worker.start()
        self._timers = [
            self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics),
            self.create_timer(0.05, self._watch_sources),
        ]
        self.get_logger().info(
            f"fusing {self._topic('thermal')} + {self._topic('rgb')} -> /fused/image "
            f"with {self._pipeline_name()} ({MODE_NAMES[self._pipeline.mode]})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self._pipeline = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return super().on_shutdown(state)

    def stop(self) -> None:
        """Remove subscriptions and timers, close the mailbox and join the worker thread."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._subs, self._timers = [], []
        self.mailbox.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _topic(self, source: str) -> str:
        topic = self.p[f"{source}_topic"]
        return topic.rstrip("/") + "/compressed" if self.p[f"{source}_transport"] == "compressed" else topic

    # ---- model -------------------------------------------------------------------------------
    def _build_pipeline(self) -> FusionPipeline:
        """diffmf_core.pipeline.build_pipeline from the node's parameters (model warmed up)."""
        calib = self.p["calibration_file"] or str(package_config_file("calibration/identity.yaml"))
        t0 = time.perf_counter()
        pipeline, _, self._frame_ids = build_pipeline({**self.p, "calibration_file": calib}, warmup=True)
        if pipeline.model is not None:
            self.get_logger().info(f"loaded {pipeline.model.name} on {pipeline.model.device} "
                                   f"in {time.perf_counter() - t0:.1f} s")
        self._log_degraded_reason(pipeline)
        return pipeline

    def _log_degraded_reason(self, pipeline: FusionPipeline) -> None:
        """Log, once per reason, why the network is not in use (fuser: classical is no failure)."""
        reason = pipeline.degraded_reason
        if pipeline.model is None and self.p["fuser"] == "diffmf" and reason != self._logged_reason:
            self._logged_reason = reason
            self.get_logger().error(f"{reason}: using the classical fuser {pipeline.fallback.name!r}")

    def _pipeline_name(self) -> str:
        return self._pipeline.active_name if self._pipeline is not None else ""

    def _pipeline_device(self) -> str:
        if self._pipeline is None:
            return ""
        return str(getattr(self._pipeline.model or self._pipeline.fallback, "device", "cpu"))

    # ---- inputs (executor thread) -------------------------------------------------------------
    def _on_image(self, source: str, msg: Image) -> None:
        self._receive(source, msg, lambda: imagecodec.decode_image(
            msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
            max_pixels=self.p["max_image_pixels"], agc=self._agc if source == "thermal" else None))

    def _on_compressed(self, source: str, msg: CompressedImage) -> None:
        self._receive(source, msg, lambda: imagecodec.decode_compressed(
            msg.format, msg.data, max_pixels=self.p["max_image_pixels"],
            agc=self._agc if source == "thermal" else None))

    def _receive(self, source: str, msg, decode) -> None:
        rx = time.monotonic_ns()
        self.stats.tick(source)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:
            self._count_decode_error(source, "zero_stamp", "zero_stamp: header stamp is zero (unset)")
            return
        try:
            with self._lock:
                image = decode()
        except ImageDecodeError as exc:
            self._count_decode_error(source, exc.kind, str(exc))
            return
        frame = Frame(image, stamp_ns, msg.header.frame_id, rx)
        other = "rgb" if source == "thermal" else "thermal"
        with self._lock:
            self._last_rx[source] = rx
            add = self._sync.add_thermal if source == "thermal" else self._sync.add_rgb
            before = self._sync.stats.as_dict()
            pairs = add(frame.stamp_ns, frame)
            after = self._sync.stats.as_dict()
            other_stale = rx - self._last_rx[other] > self.p["source_timeout_s"] * 1e9
        for key in SYNC_ANOMALIES:
            if after[key] > before[key]:
                self._log_bad_input(key, f"{source} stamp {stamp_ns} ns: {SYNC_ANOMALIES[key]} "
                                         f"(counted in sync_{key})", after[key])
        if pairs:
            pair = pairs[-1]
            self.mailbox.put(Job(thermal=pair.thermal, rgb=pair.rgb, stamp_ns=pair.stamp_ns))
        elif other_stale:
            self.mailbox.put(Job(thermal=frame if source == "thermal" else None,
                                 rgb=frame if source == "rgb" else None, stamp_ns=frame.stamp_ns))

    def _count_decode_error(self, source: str, kind: str, message: str) -> None:
        """Count a dropped message (decode_error.<kind>) and log it (rate-limited)."""
        key = f"decode_error.{kind}"
        self.stats.count(key)
        self._log_bad_input(kind, f"dropping {source} message: {message}", self.stats.counters[key])

    def _log_bad_input(self, kind: str, message: str, total: int) -> None:
        """Log the first bad input of each kind, then its running total at most every 30 s."""
        now = time.monotonic()
        last = self._bad_logged.get(kind)
        if last is not None and now - last < 30.0:
            return
        self.get_logger().warning(message if last is None else f"still receiving bad input ({kind}: {total} so far)")
        self._bad_logged[kind] = now

    def _watch_sources(self) -> None:
        """Log when a camera goes silent or returns (the subscriptions do the switching)."""
        now = time.monotonic_ns()
        with self._lock:
            stale = {s: now - self._last_rx[s] > self.p["source_timeout_s"] * 1e9 for s in SOURCES}
        for source in SOURCES:
            if stale[source] != self._stale[source]:
                self._stale[source] = stale[source]
                other = "rgb" if source == "thermal" else "thermal"
                if stale[source]:
                    self.get_logger().warning(
                        f"no {source} image for {self.p['source_timeout_s']} s: "
                        + ("no output" if stale[other] else f"publishing {other} alone"))
                else:
                    self.get_logger().info(f"{source} camera is back")

    # ---- worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        # test hook: DIFFMF_TEST_WORKER_DELAY_S holds every pair this long before fusing it, so a test
        # can make the node slower than its input on any machine (test_reliability_load's overload)
        delay_s = float(os.environ.get("DIFFMF_TEST_WORKER_DELAY_S") or 0.0)
        while (job := self.mailbox.get()) is not None:
            if delay_s > 0:
                time.sleep(delay_s)
            try:
                self._process(job)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the node
                self.stats.count("worker_errors")
                self.get_logger().error(f"frame dropped: {exc!r}", throttle_duration_sec=10.0)

    def _process(self, job: Job) -> None:
        pipeline = self._pipeline
        if job.thermal is not None and job.rgb is not None:
            out = pipeline.fuse_pair(job.thermal.image, job.rgb.image)
            if out.mode == FusionInfo.MODE_CLASSICAL:
                self._log_degraded_reason(pipeline)
        else:
            out = pipeline.single_source(rgb=job.rgb.image if job.rgb else None,
                                         thermal=job.thermal.image if job.thermal else None)
        self._last_mode = out.mode
        header = Header(stamp=to_stamp(job.stamp_ns), frame_id=self._output_frame_id(job))
        # check_fields=False: with ROS_PYTHON_CHECK_FIELDS=1 rclpy checks every byte in Python
        # (about 0.4 s per 1 MB frame); the fields come from imagecodec's checked encoder.
        height, width, encoding, step, data = imagecodec.encode_image(out.image, pipeline.output_encoding)
        self._publish("image", Image(header=header, height=height, width=width, encoding=encoding,
                                     is_bigendian=0, step=step, data=data, check_fields=False))
        if "compressed" in self._pubs:
            fmt, jpeg = imagecodec.encode_compressed(out.image, "jpeg", self.p["jpeg_quality"])
            self._publish("compressed", CompressedImage(header=header, format=fmt, data=jpeg, check_fields=False))
        newest = max((f for f in (job.thermal, job.rgb) if f is not None), key=lambda f: f.stamp_ns)
        if self._use_sim_time():
            latency_ms = (time.monotonic_ns() - max(f.rx_ns for f in (job.thermal, job.rgb) if f)) / 1e6
        else:
            latency_ms = (self.get_clock().now().nanoseconds - newest.stamp_ns) / 1e6
        self._publish("info", FusionInfo(
            header=header,
            thermal_stamp=to_stamp(job.thermal.stamp_ns) if job.thermal else Time(),
            rgb_stamp=to_stamp(job.rgb.stamp_ns) if job.rgb else Time(),
            homography=np.asarray(out.homography, dtype=np.float64).reshape(9),
            registration_quality=float(out.quality), mode=out.mode, inference_ms=float(out.inference_ms),
            latency_ms=float(latency_ms), model_name=out.model_name))
        self.stats.tick("output")
        self.stats.record(latency_ms, out.inference_ms)

    def _use_sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    def _output_frame_id(self, job: Job) -> str:
        if self.p["frame_id"]:
            return self.p["frame_id"]
        source = "thermal" if self.p["output_geometry"] == "thermal" else "rgb"
        frame = job.thermal if source == "thermal" else job.rgb
        return frame.frame_id if frame is not None and frame.frame_id else self._frame_ids[source]

    def _publish(self, name: str, msg) -> None:
        try:
            self._pubs[name].publish(msg)
        except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError under transport pressure
            self.stats.count("publish_errors")
            self.get_logger().warning(f"publish on {name} failed: {exc!r}", throttle_duration_sec=10.0)

    # ---- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        mode = self._last_mode if self._last_mode is not None else self._pipeline.mode
        with self._lock:
            queues, sync_stats = self._sync.queue_lengths(), self._sync.stats.as_dict()
        flowing = self.stats.rate("output") > 0.0
        level = DiagnosticStatus.OK if mode == FusionInfo.MODE_FUSED and flowing else DiagnosticStatus.WARN
        values = {
            "mode": MODE_NAMES[mode],
            "device": str(self._pipeline_device()),
            "model": self._pipeline_name(),
            "thermal_rate_hz": self.stats.rate("thermal"),
            "rgb_rate_hz": self.stats.rate("rgb"),
            "output_rate_hz": self.stats.rate("output"),
            "drops_mailbox": self.mailbox.dropped,
            "mailbox_pending": self.mailbox.pending,
            "sync_queue_thermal": queues[0],
            "sync_queue_rgb": queues[1],
            **{f"sync_{k}": v for k, v in sync_stats.items()},
            **self.stats.percentiles(),
            **dict(self.stats.counters),
        }
        if self._pipeline.model is None and self.p["fuser"] == "diffmf":
            values["degraded_reason"] = self._pipeline.degraded_reason
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: fusion", hardware_id=str(self._pipeline_device()),
            message=MODE_NAMES[mode] if flowing else f"{MODE_NAMES[mode]}, no output",
            values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                    for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish("diagnostics", msg)


def main(args: list[str] | None = None) -> int:
    """Entry point: `python -m diffmf_ros.fusion_node --ros-args --params-file config/fuse.yaml`."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = FusionNode()
        except (ValueError, rclpy.exceptions.ParameterException) as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
            return 2
        if node.p["autostart"]:
            for transition in (node.trigger_configure, node.trigger_activate):
                result = transition()
                if not node.context.ok():
                    return 0  # SIGINT/SIGTERM while loading the model
                if result != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"autostart: {transition.__name__} failed")
                    return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
