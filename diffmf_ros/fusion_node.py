"""diffmf_fusion: the live thermal + RGB fusion node (thin glue over diffmf_core).

Reference: docs/node.md (topics, parameters, QoS overrides, stamp/frame rule, diagnostics,
lifecycle). All topic names are relative (they follow the node's namespace and remappings) except
/diagnostics. Derived topics follow the RESOLVED name of their base topic, as image_transport's:
<image>/compressed and the camera_info next to it, for the inputs and for fused/image. A managed
(lifecycle) node: on_configure loads the calibration and the model (the classical fallback when it
cannot load) and warms it up; on_activate subscribes and starts the worker thread; `autostart`
(default true) runs both transitions at start. on_cleanup (and on_error, after a transition
failed with an exception) returns to unconfigured with fresh counters; the shutdown transition
ends the process (exit code 0). /diagnostics runs on a steady-clock timer, so it is published
under use_sim_time before /clock arrives and while a bag is paused.

Data flow: subscriptions decode with diffmf_core.live.imagecodec (bad messages and zero stamps are
dropped and counted as decode_error.<kind>) -> diffmf_core.live.frames.FrameRouter (pairing, degraded
modes, the stamp/frame rule, monotonic output stamps) -> a one-slot latest-job mailbox (a newer
job replaces a waiting one: drops_mailbox) -> one worker thread running diffmf_core.live.frames.run_job
-> fused/image (+ fused/image/compressed), fused/camera_info, fused/info. Nothing is fused in a
subscription callback. The settings are diffmf_core.live.settings.NodeSettings, the same object
`diffmf bag fuse` uses, and the per-frame routine is the bag tool's too.

Time: pairing uses header stamps only, so use_sim_time (bag replay) works. latency_ms = ROS clock
now - the newer input stamp; under use_sim_time (coarse, may pause) it is the steady-clock time
since the newer input message arrived, i.e. the node's own latency.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

_STOP = threading.Event()  # set by SIGINT/SIGTERM in main(): finish what is running, then exit 0


def _request_stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _STOP.set()


if __name__ == "__main__":  # python -m diffmf_ros.fusion_node: no traceback for a Ctrl-C during imports
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.qos_overriding_options import QoSOverridingOptions  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from diffmf_core.live import imagecodec  # noqa: E402
from diffmf_core.live.agc import ThermalAGC  # noqa: E402
from diffmf_core.live.camera import CameraModel, camera_for, camera_info_topic  # noqa: E402
from diffmf_core.live.frames import SOURCES, Frame, FrameRouter, Job, Undistortion, run_job  # noqa: E402
from diffmf_core.live.imagecodec import ImageDecodeError  # noqa: E402
from diffmf_core.live.pipeline import FusionPipeline, build_pipeline  # noqa: E402
from diffmf_core.live.registration import CalibrationError  # noqa: E402
from diffmf_core.live.settings import SPEC_BY_NAME, SPECS, NodeSettings, SettingsError, Spec  # noqa: E402
from diffmf_core.live.sync import split_ns, stamp_to_ns  # noqa: E402
from diffmf_ros.msg import FusionInfo  # noqa: E402
from diffmf_ros.node_stats import LatestMailbox, Stats  # noqa: E402

NODE_NAME = "diffmf_fusion"
DIAGNOSTICS_TOPIC = "/diagnostics"  # global by convention
MODE_NAMES = {
    FusionInfo.MODE_FUSED: "FUSED",
    FusionInfo.MODE_RGB_ONLY: "RGB_ONLY",
    FusionInfo.MODE_THERMAL_ONLY: "THERMAL_ONLY",
    FusionInfo.MODE_CLASSICAL: "CLASSICAL",
}
# PairSynchronizer counters that mean a camera sent bad stamps -> what the log says
SYNC_ANOMALIES = {
    "duplicates": "duplicate stamp ignored",
    "out_of_order": "stamp older than already paired frames",
    "resets": "stamp jumped back by more than 1 s; pairing restarted",
}
PARAMS = SPECS  # the node's parameters (diffmf_core.live.settings)
PARAM_BY_NAME = SPEC_BY_NAME
# qos_overrides.<resolved topic>.<publisher|subscription>.<policy> parameters for these policies
QOS_OVERRIDES = QoSOverridingOptions(policy_kinds=(QoSPolicyKind.RELIABILITY, QoSPolicyKind.DEPTH,
                                                   QoSPolicyKind.HISTORY, QoSPolicyKind.DURABILITY))
OUTPUT_QOS_DEPTH = 5
LOG_REPEAT_S = 30.0  # a repeated warning (bad input of one kind, a camera timing out) at most this often


def descriptor(spec: Spec) -> ParameterDescriptor:
    """The ROS parameter descriptor of one setting (read-only unless it may change live)."""
    d = ParameterDescriptor(name=spec.name, description=spec.description, read_only=not spec.runtime)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.lo is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=spec.lo, to_value=spec.hi, step=0.0)]
    elif spec.lo is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
    return d


def check_params(values: dict[str, Any]) -> list[str]:
    """Reasons why ``values`` (name -> value, all parameters) are not a valid configuration."""
    return NodeSettings.check(values)


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


class FusionNode(LifecycleNode):
    """The diffmf_fusion node (see the module docstring and docs/node.md)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in SPECS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        values = {spec.name: self.get_parameter(spec.name).value for spec in SPECS}
        self.s = NodeSettings.from_mapping(values)  # raises SettingsError naming every invalid value
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.stats = Stats()
        self.mailbox = LatestMailbox()
        self._lock = threading.Lock()  # guards the router, AGC and camera infos
        self._pipeline: FusionPipeline | None = None
        self._router: FrameRouter | None = None
        self._last_mode: int | None = None
        self._logged_reason: str | None = None
        self._agc = self._make_agc()
        self._worker: threading.Thread | None = None
        self._subs: list = []
        self._own_timers: list = []
        self._pubs: dict[str, Any] = {}
        self._stale: dict[str, bool] = {s: False for s in SOURCES}
        self._logged_silent: dict[str, bool] = {}  # was the camera's last time-out logged?
        self._logged: dict[str, float] = {}  # repeated-warning key -> monotonic time last logged
        self._state = "unconfigured"
        self.finalized = threading.Event()  # set by the shutdown transition: main() then exits
        self._active_since_ns = 0
        self._cameras: dict[str, CameraModel | None] = {}  # last camera_info per camera
        self._undistortion = Undistortion()
        # /diagnostics is reported in every lifecycle state: a plain publisher and a steady-clock
        # timer (a ROS-clock timer stops under use_sim_time without /clock, e.g. a paused bag)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10,
                                               qos_overriding_options=QOS_OVERRIDES)
        self._diag_timer = self.create_timer(self.s.diagnostics_period_s, self._publish_diagnostics,
                                             clock=self._steady)

    @property
    def p(self) -> dict[str, Any]:
        """The settings as a dict (read-only view)."""
        return self.s.as_dict()

    # ---- parameters --------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        values = self.s.as_dict()
        for prm in params:
            if prm.name in PARAM_BY_NAME:
                values[prm.name] = prm.value
        errors = NodeSettings.check(values)
        return SetParametersResult(successful=not errors, reason="; ".join(errors))

    def _after_set_parameters(self, params) -> None:
        changes = {prm.name: prm.value for prm in params if prm.name in PARAM_BY_NAME}
        if not changes:
            return
        self.s = self.s.replace(**changes)
        with self._lock:
            if self._router is not None:
                self._router.update(self.s)
            if changes.keys() & {"thermal_agc_mode", "agc_low", "agc_high"}:
                self._agc = self._make_agc()
        if "output_encoding" in changes and self._pipeline is not None:
            self._pipeline.output_encoding = self.s.output_encoding

    def _make_agc(self) -> ThermalAGC:
        return ThermalAGC(self.s.thermal_agc_mode, self.s.agc_low, self.s.agc_high)

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().info(f"configuring: loading the calibration and the {self.s.fuser} fuser")
        self._agc = self._make_agc()
        try:
            self._pipeline, frame_ids = self._build_pipeline()
        except (CalibrationError, ValueError) as exc:
            self.get_logger().fatal(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._router = FrameRouter(self.s, frame_ids)
        # image_transport style: compressed and camera_info follow fused/image's resolved name
        image_topic = self.resolve_topic_name("fused/image")
        self._pubs = {
            "image": self._lifecycle_publisher(Image, image_topic),
            "camera_info": self._lifecycle_publisher(CameraInfo, camera_info_topic(image_topic)),
            "info": self._lifecycle_publisher(FusionInfo, "fused/info"),
        }
        if self.s.publish_compressed:
            self._pubs["compressed"] = self._lifecycle_publisher(CompressedImage, image_topic + "/compressed")
        self._state = "inactive"
        return super().on_configure(state)

    def _lifecycle_publisher(self, msg_type, topic: str):
        return self.create_lifecycle_publisher(msg_type, topic, OUTPUT_QOS_DEPTH, qos_overriding_options=QOS_OVERRIDES)

    def _input_qos(self) -> QoSProfile:
        """A new profile for each subscription: rclpy applies qos_overrides.* to it in place."""
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.s.qos_depth,
            reliability=ReliabilityPolicy.BEST_EFFORT if self.s.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for source in SOURCES:
            if getattr(self.s, f"{source}_transport") == "compressed":
                self._subs.append(self.create_subscription(
                    CompressedImage, self._topic(source), lambda msg, s=source: self._on_compressed(s, msg),
                    self._input_qos(), qos_overriding_options=QOS_OVERRIDES))
            else:
                self._subs.append(self.create_subscription(
                    Image, self._topic(source), lambda msg, s=source: self._on_image(s, msg), self._input_qos(),
                    qos_overriding_options=QOS_OVERRIDES))
            if self.s.use_camera_info:
                self._subs.append(self.create_subscription(
                    CameraInfo, camera_info_topic(self._image_topic(source)),
                    lambda msg, s=source: self._on_camera_info(s, msg), self._input_qos(),
                    qos_overriding_options=QOS_OVERRIDES))
        now = time.monotonic_ns()
        with self._lock:
            self._router.start(now)
        self._active_since_ns = now
        self._stale = {s: False for s in SOURCES}
        self.mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, name="diffmf_worker", daemon=True)
        self._worker.start()
        self._own_timers = [self.create_timer(0.05, self._watch_sources, clock=self._steady)]
        self._state = "active"
        self.get_logger().info(
            f"fusing {self._resolved(self._topic('thermal'))} + {self._resolved(self._topic('rgb'))} -> "
            f"{self._resolved('fused/image')} with {self._pipeline_name()} ({MODE_NAMES[self._pipeline.mode]})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured (configure again)."""
        self.get_logger().error(f"a lifecycle transition failed in state {state.label!r}: releasing everything, "
                                "back to unconfigured")
        self.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._state = "finalized"
        self.get_logger().info("shut down by a lifecycle transition: exiting")
        self.finalized.set()
        return super().on_shutdown(state)

    def _release(self) -> None:
        """Back to unconfigured: no publishers, pipeline or pairing state; fresh counters and camera infos."""
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self._pipeline = None
        with self._lock:
            self._router = None
            self._cameras = {}
        self._undistortion = Undistortion()
        self.stats = Stats()
        self.mailbox = LatestMailbox()
        self._last_mode = None
        self._logged_reason = None
        self._logged = {}
        self._state = "unconfigured"

    def stop(self) -> None:
        """Remove subscriptions and timers, close the mailbox and join the worker thread (which
        finishes and publishes the frame it is working on)."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._own_timers:
            self.destroy_timer(timer)
        self._subs, self._own_timers = [], []
        self.mailbox.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _image_topic(self, source: str) -> str:
        """The camera's image topic, resolved (namespace and remapping applied)."""
        return self.resolve_topic_name(getattr(self.s, f"{source}_topic"))

    def _topic(self, source: str) -> str:
        """The subscribed topic: the resolved image topic, + /compressed for the compressed transport."""
        topic = self._image_topic(source)
        compressed = getattr(self.s, f"{source}_transport") == "compressed"
        return topic.rstrip("/") + "/compressed" if compressed else topic

    def _resolved(self, topic: str) -> str:
        try:
            return self.resolve_topic_name(topic)
        except Exception:  # noqa: BLE001 - only for the log line
            return topic

    # ---- model -------------------------------------------------------------------------------
    def _build_pipeline(self) -> tuple[FusionPipeline, dict]:
        """diffmf_core.live.pipeline.build_pipeline from the settings (model warmed up)."""
        calib = self.s.calibration_file or str(package_config_file("calibration/identity.yaml"))
        if self.s.unused_weights:
            self.get_logger().warning(self.s.unused_weights)
        t0 = time.perf_counter()
        pipeline, _, frame_ids = build_pipeline({**self.s.as_dict(), "calibration_file": calib}, warmup=True)
        if pipeline.model is not None:
            self.get_logger().info(f"loaded {pipeline.model.name} on {pipeline.model.device} "
                                   f"in {time.perf_counter() - t0:.1f} s")
        self._log_degraded_reason(pipeline)
        return pipeline, frame_ids

    def _model_failed(self) -> bool:
        """A model fuser was asked for (fuser: warm_rule or diffmf) but is not in use."""
        return self._pipeline is not None and self._pipeline.model is None and self.s.fuser != "classical"

    def _log_degraded_reason(self, pipeline: FusionPipeline) -> None:
        """Log, once per reason, why the model fuser is not in use (fuser: classical is no failure)."""
        reason = pipeline.degraded_reason
        if pipeline.model is None and self.s.fuser != "classical" and reason != self._logged_reason:
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
        self._receive(source, msg, msg.encoding, lambda: imagecodec.decode_image(
            msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
            max_pixels=self.s.max_image_pixels, agc=self._agc if source == "thermal" else None))

    def _on_compressed(self, source: str, msg: CompressedImage) -> None:
        self._receive(source, msg, msg.format, lambda: imagecodec.decode_compressed(
            msg.format, msg.data, max_pixels=self.s.max_image_pixels,
            agc=self._agc if source == "thermal" else None))

    def _on_camera_info(self, source: str, msg: CameraInfo) -> None:
        """Keep the camera's intrinsics; frames arriving from now on are undistorted with them."""
        try:
            model = CameraModel.from_msg(msg)
        except ValueError as exc:
            self._count_decode_error(source, "camera_info", f"camera_info ignored: {exc}")
            return
        with self._lock:
            changed = self._cameras.get(source) != model
            self._cameras[source] = model
        if changed:
            self.get_logger().info(f"{source} camera_info: {model.width}x{model.height} {model.distortion_model} "
                                   f"d={list(model.d)}" if model else f"{source} camera_info without calibration")

    def _receive(self, source: str, msg, encoding: str, decode) -> None:
        """Decode, check against the camera_info, and route one camera message; ``encoding`` (the
        Image encoding or CompressedImage format) keys the log of refused encodings."""
        rx = time.monotonic_ns()
        self.stats.tick(source)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:
            self._count_decode_error(source, "zero_stamp", "zero_stamp: header stamp is zero (unset)")
            return
        if not self._use_sim_time():
            self.stats.record_delay(source, (self.get_clock().now().nanoseconds - stamp_ns) / 1e6)
        try:
            with self._lock:
                image = decode()
        except ImageDecodeError as exc:
            # each refused encoding is logged (once, then every LOG_REPEAT_S), not only the first
            self._count_decode_error(source, exc.kind, str(exc),
                                     log_key=f"{exc.kind}:{encoding}" if exc.kind == "unknown_encoding" else "")
            return
        with self._lock:
            camera, mismatch = camera_for(image, self._cameras.get(source))
        if mismatch:  # used raw; its outputs carry an uncalibrated fused/camera_info
            self._count_decode_error(source, "camera_info_size", f"camera_info_size: {mismatch}; not rectified")
        frame = Frame(image, stamp_ns, msg.header.frame_id, rx, camera=camera)
        with self._lock:
            router = self._router
            if router is None:
                return
            before = router.sync.stats.as_dict()
            pairs_before, unnamed_before = router.pairs, router.frame_id_drops
            jobs = router.add(source, frame)
            after = router.sync.stats.as_dict()
            new_pairs = router.pairs - pairs_before
            unnamed = router.frame_id_drops
        if unnamed > unnamed_before:
            self._log_repeated("frame_id", f"{source} frame not published: the output frame_id is not known yet "
                               f"(no {self.s.geometry_source} frame received; set the frame_id parameter or "
                               f"{self.s.geometry_source}_frame_id in the calibration file); counted in "
                               f"drops_no_frame_id ({unnamed} so far)")
        for _ in range(new_pairs):
            self.stats.tick("pair")
        for key in SYNC_ANOMALIES:
            if after[key] > before[key]:
                self._log_bad_input(key, f"{source} stamp {stamp_ns} ns: {SYNC_ANOMALIES[key]} "
                                         f"(counted in sync_{key})", after[key])
        if jobs:
            self.mailbox.put(jobs[-1])

    def _count_decode_error(self, source: str, kind: str, message: str, log_key: str = "") -> None:
        """Count a dropped message (decode_error.<kind>) and log it (rate-limited per ``log_key`` or kind)."""
        key = f"decode_error.{kind}"
        self.stats.count(key)
        self._log_bad_input(log_key or kind, f"dropping {source} message: {message}", self.stats.counters[key])

    def _log_bad_input(self, kind: str, message: str, total: int) -> None:
        """Log the first bad input of each kind, then its running total at most every LOG_REPEAT_S."""
        first = kind not in self._logged
        self._log_repeated(kind, message if first else f"still receiving bad input ({kind}: {total} so far)")

    def _log_repeated(self, key: str, message: str) -> bool:
        """WARN ``message`` unless a warning of ``key`` was logged in the last LOG_REPEAT_S; True if logged."""
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_REPEAT_S:
            return False
        self._logged[key] = now
        self.get_logger().warning(message)
        return True

    def _watch_sources(self) -> None:
        """Log when a camera goes silent or returns (the router does the switching)."""
        now = time.monotonic_ns()
        with self._lock:
            if self._router is None:
                return
            stale = {s: self._router.stale(s, now) for s in SOURCES}
        for source in SOURCES:
            if stale[source] != self._stale[source]:
                self._stale[source] = stale[source]
                other = "rgb" if source == "thermal" else "thermal"
                if stale[source]:  # counted every time, logged once per LOG_REPEAT_S (a slow camera flaps)
                    self.stats.count(f"source_timeouts_{source}")
                    n = self.stats.counters[f"source_timeouts_{source}"]
                    self._logged_silent[source] = self._log_repeated(
                        f"silent:{source}", f"no {source} image for {self.s.source_timeout_s} s: "
                        + ("no output" if stale[other] else f"publishing {other} alone")
                        + ("" if n == 1 else f" ({n} times so far; a camera slower than "
                           f"{1.0 / self.s.source_timeout_s:.1f} Hz times out between its frames: "
                           "raise source_timeout_s)"))
                elif self._logged_silent.get(source):
                    self.get_logger().info(f"{source} camera is back")

    # ---- worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        # test hook: DIFFMF_TEST_WORKER_DELAY_S holds every pair this long before fusing it, so a test
        # can make the node slower than its input on any machine (test_node_overload's overload)
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
        out = run_job(pipeline, job, self._undistortion)
        if out.mode == FusionInfo.MODE_CLASSICAL:
            self._log_degraded_reason(pipeline)
        self._last_mode = out.mode
        header = Header(stamp=to_stamp(out.stamp_ns), frame_id=out.frame_id)
        # check_fields=False: with ROS_PYTHON_CHECK_FIELDS=1 rclpy checks every byte in Python
        # (about 0.4 s per 1 MB frame); the fields come from imagecodec's checked encoder.
        height, width, encoding, step, data = imagecodec.encode_image(out.image, pipeline.output_encoding)
        self._publish("image", Image(header=header, height=height, width=width, encoding=encoding,
                                     is_bigendian=0, step=step, data=data, check_fields=False))
        if "compressed" in self._pubs:
            fmt, jpeg = imagecodec.encode_compressed(out.image, "jpeg", self.s.jpeg_quality)
            self._publish("compressed", CompressedImage(header=header, format=fmt, data=jpeg, check_fields=False))
        self._publish("camera_info", self._camera_info(header, width, height, out.camera_info))
        if self._use_sim_time():
            latency_ms = (time.monotonic_ns() - max(f.rx_ns for f in job.frames)) / 1e6
        else:
            latency_ms = (self.get_clock().now().nanoseconds - max(f.stamp_ns for f in job.frames)) / 1e6
        self._publish("info", FusionInfo(
            header=header, thermal_stamp=to_stamp(out.thermal_stamp_ns), rgb_stamp=to_stamp(out.rgb_stamp_ns),
            homography=out.homography, registration_quality=out.registration_quality, mode=out.mode,
            inference_ms=out.inference_ms, latency_ms=float(latency_ms), model_name=out.model_name))
        self.stats.tick("output")
        self.stats.record(latency_ms, out.inference_ms)

    @staticmethod
    def _camera_info(header: Header, width: int, height: int, camera) -> CameraInfo:
        """fused/camera_info: the output's size and rectified intrinsics (diffmf_core.live.camera.
        output_camera_info of the output geometry camera; k and p all zero: uncalibrated)."""
        return CameraInfo(header=header, width=width, height=height, distortion_model=camera.distortion_model,
                          d=camera.d, k=camera.k, r=camera.r, p=camera.p)

    def _use_sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    def _publish(self, name: str, msg) -> None:
        try:
            self._pubs[name].publish(msg)
        except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError under transport pressure
            self.stats.count("publish_errors")
            self.get_logger().warning(f"publish on {name} failed: {exc!r}", throttle_duration_sec=10.0)

    # ---- diagnostics -------------------------------------------------------------------------
    def diagnostic_level(self) -> tuple[int, str]:
        """(level, message) of the fusion status; the rules are in docs/node.md."""
        if self._state != "active":
            what = "not configured" if self._state == "unconfigured" else "configured, not active"
            return DiagnosticStatus.WARN, f"{self._state}: {what}, no subscriptions, no output"
        now = time.monotonic_ns()
        inputs = self.stats.rate("thermal") + self.stats.rate("rgb") > 0.0
        last_out = self.stats.last_ns.get("output", self._active_since_ns)
        silent_s = (now - max(last_out, self._active_since_ns)) / 1e9
        mode = self._last_mode if self._last_mode is not None else self._pipeline.mode
        if inputs and silent_s > self.s.stall_timeout_s:
            return DiagnosticStatus.ERROR, f"camera images arrive but nothing published for {silent_s:.1f} s"
        if not inputs:
            return DiagnosticStatus.WARN, "no camera images"
        if self._model_failed():
            return DiagnosticStatus.WARN, f"CLASSICAL fallback: {self._pipeline.degraded_reason}"
        if mode in (FusionInfo.MODE_RGB_ONLY, FusionInfo.MODE_THERMAL_ONLY):
            return DiagnosticStatus.WARN, f"{MODE_NAMES[mode]}: one camera silent"
        return DiagnosticStatus.OK, MODE_NAMES[mode]

    def _publish_diagnostics(self) -> None:
        level, message = self.diagnostic_level()
        values: dict[str, Any] = {"lifecycle_state": self._state}
        if self._pipeline is not None:
            mode = self._last_mode if self._last_mode is not None else self._pipeline.mode
            values.update({"mode": MODE_NAMES[mode], "device": self._pipeline_device(),
                           "model": self._pipeline_name()})
        values.update({
            "thermal_rate_hz": self.stats.rate("thermal"),
            "rgb_rate_hz": self.stats.rate("rgb"),
            "pair_rate_hz": self.stats.rate("pair"),
            "output_rate_hz": self.stats.rate("output"),
            "drops_mailbox": self.mailbox.dropped,
            "mailbox_pending": self.mailbox.pending,
        })
        with self._lock:
            if self._router is not None:
                queues = self._router.sync.queue_lengths()
                values.update({"sync_queue_thermal": queues[0], "sync_queue_rgb": queues[1],
                               "drops_stamp_order": self._router.stamp_order_drops,
                               "drops_no_frame_id": self._router.frame_id_drops,
                               **{f"sync_{k}": v for k, v in self._router.sync.stats.as_dict().items()}})
        values.update(self.stats.percentiles())
        values.update(dict(self.stats.counters))
        if self._model_failed():
            values["degraded_reason"] = self._pipeline.degraded_reason
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: fusion",
            hardware_id=self.get_fully_qualified_name(), message=message,
            values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                    for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        try:
            self._diag_pub.publish(msg)
        except Exception:  # noqa: BLE001 - context shutting down
            pass


def main(args: list[str] | None = None) -> int:
    """Entry point: `python -m diffmf_ros.fusion_node --ros-args --params-file config/fuse.yaml`.

    SIGINT/SIGTERM at any moment end the process with code 0: the running step (parameter
    declaration, model load, a frame in the worker) finishes, then the node is torn down."""
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    try:
        try:
            node = FusionNode()
        except (SettingsError, rclpy.exceptions.ParameterException) as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
            return 2
        if node.s.autostart:
            for transition in (node.trigger_configure, node.trigger_activate):
                if _STOP.is_set():
                    return 0
                result = transition()
                if _STOP.is_set():
                    return 0
                if result != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"autostart: {transition.__name__} failed")
                    return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not _STOP.is_set() and node.context.ok() and not node.finalized.is_set():
            executor.spin_once(timeout_sec=0.1)
        if node.finalized.is_set():  # let the change_state response and the transition event go out
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and node.context.ok():
                executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # The executor holds a guard condition of the context: shut it down while the context is
        # still valid, or its __del__ runs after rclpy.try_shutdown() and raises InvalidHandle.
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
        # Ctrl-C under `ros2 launch` signals twice (the terminal's process group, then launch):
        # a second SIGINT during interpreter shutdown, when Python has put back the default
        # handler, would end the process with -2. Everything is torn down: ignore it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
