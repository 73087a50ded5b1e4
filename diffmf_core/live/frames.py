"""The per-frame routine shared by the fusion node and ``diffmf bag fuse``.

Contract:
- ``Frame(image, stamp_ns, frame_id, rx_ns)``: one decoded camera image, its header stamp and
  frame_id, and its arrival time on the caller's clock (the node: steady clock; the bag tool:
  bag receive time). ``decode_ms`` is optional bookkeeping for the bag tool.
- ``FrameRouter(settings, default_frame_ids)`` decides what goes out for each arriving frame:
  ``add(source, frame) -> list[Job]``. Frames are paired by header stamp with
  ``PairSynchronizer`` (ApproximateTime, ``sync_slop_s``, ``thermal_delay_s``,
  ``sync_min_interval_s``); a frame that forms no pair while the other camera has been silent
  (arrival times) for more than ``source_timeout_s``, and since before this camera's previous
  frame, goes out alone (degraded mode). So when both cameras start or come back at once, the
  first frame waits for its partner (no single frame followed by its own pair); the camera's next
  frame goes out alone if no partner came. Before the first frame
  (``start(now_ns)`` not called) both cameras count as seen at the first arrival.
- The stamp and frame rule (every Job): the output is in the pixels of the output geometry's
  camera (``settings.geometry_source``: thermal for ``output_geometry: thermal``, else RGB).
  ``Job.frame_id`` = ``settings.frame_id`` if set, else that camera's frame_id as last received
  (non-empty), else the calibration file's name for it (if it names one). No placeholder is
  made up: a job of the other camera alone while that frame is unknown is not run
  (``frame_id_drops``); a job with the geometry camera carries its frame's frame_id as it came.
  ``Job.stamp_ns`` = that camera's stamp in the job; a single-camera job has only its own
  camera's stamp, so it carries that one. ``Job.camera`` = the camera model of the output
  geometry's pixels: the geometry camera's ``Frame.camera`` in the job, else (the other camera
  alone, drawn in the geometry camera's pixels) the one of its last frame; None = uncalibrated.
- Monotonic stamps: a job whose stamp is not strictly later than the last job's stamp is dropped
  (``stats["stamp_order_drops"]``): outputs never repeat a stamp or go back in time through
  start-up, drop-out and return of either camera (e.g. a fused pair whose RGB frame already went
  out alone). A stamp back-jump that resets the synchronizer (> 1 s: bag loop, clock reset)
  starts a new epoch.
- ``FrameResult`` / ``run_job(pipeline, job, undistortion)``: rectifies frames that carry a
  ``camera`` (diffmf_core.live.camera, maps cached per camera in ``Undistortion``), runs the pipeline,
  and returns its output with every field of diffmf_ros/FusionInfo except latency_ms (which
  depends on the caller's clock), plus ``camera_info``: the output's CameraInfo fields
  (``camera.output_camera_info`` of ``Job.camera`` at the output size).
- Not thread-safe; the caller serialises ``add`` calls. No ROS imports.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from diffmf_core.live.camera import CameraModel, OutputCamera, Undistorter, output_camera_info
from diffmf_core.live.settings import NodeSettings
from diffmf_core.live.sync import PairSynchronizer

SOURCES = ("thermal", "rgb")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded camera image (see the module contract)."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    rx_ns: int
    decode_ms: float = 0.0
    camera: CameraModel | None = None  # intrinsics/distortion (camera_info) to undistort with


@dataclasses.dataclass(frozen=True)
class Job:
    """What to publish next: a matched pair, or one camera alone; with its output stamp and frame."""

    thermal: Frame | None
    rgb: Frame | None
    stamp_ns: int
    frame_id: str
    camera: CameraModel | None = None  # camera model of the output geometry's pixels (None: uncalibrated)

    @property
    def frames(self) -> list[Frame]:
        return [f for f in (self.thermal, self.rgb) if f is not None]


class FrameResult(NamedTuple):
    """One output frame: image, header (stamp, frame_id) and the FusionInfo fields but latency_ms."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    thermal_stamp_ns: int  # 0 when the thermal camera is not in the frame
    rgb_stamp_ns: int  # 0 when the RGB camera is not in the frame
    homography: np.ndarray  # 9 float64, thermal pixels -> output pixels, row-major
    registration_quality: float
    mode: int
    inference_ms: float
    model_name: str
    camera_info: OutputCamera  # fused/camera_info fields (k, d, r, p, distortion_model)


def make_synchronizer(settings: NodeSettings) -> PairSynchronizer:
    interval = settings.sync_min_interval_s
    return PairSynchronizer(settings.sync_queue_size, settings.sync_slop_s, settings.thermal_delay_s,
                            inter_message_lower_bound=(interval, interval))


class FrameRouter:
    """Pairing, degraded-mode routing and the stamp/frame rule (see the module contract)."""

    def __init__(self, settings: NodeSettings, default_frame_ids: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.default_frame_ids = {s: (default_frame_ids or {}).get(s) or "" for s in SOURCES}
        self.sync = make_synchronizer(settings)
        self.last_rx: dict[str, int] = {}
        self.last_frame_id: dict[str, str] = {}
        self.last_camera: dict[str, CameraModel | None] = {}
        self.last_stamp_ns: int | None = None
        self.stamp_order_drops = 0
        self.frame_id_drops = 0
        self.pairs = 0

    def start(self, now_ns: int) -> None:
        """Both cameras count as seen at ``now_ns`` (the node calls this on activation)."""
        self.last_rx = {s: now_ns for s in SOURCES}

    def update(self, settings: NodeSettings) -> None:
        """New settings (live parameter change); the synchronizer is rebuilt if its settings changed."""
        old, self.settings = self.settings, settings
        keys = ("sync_queue_size", "sync_slop_s", "sync_min_interval_s", "thermal_delay_s")
        if any(getattr(old, k) != getattr(settings, k) for k in keys):
            self.sync = make_synchronizer(settings)

    def stale(self, source: str, now_ns: int) -> bool:
        """Has ``source`` been silent for longer than source_timeout_s at ``now_ns``?"""
        last = self.last_rx.get(source)
        return last is not None and now_ns - last > self.settings.source_timeout_s * 1e9

    def frame_id(self, source: str | None = None) -> str:
        """frame_id of outputs: override, else the geometry camera's last frame_id, else the
        calibration's; "" when none is known."""
        if self.settings.frame_id:
            return self.settings.frame_id
        source = source or self.settings.geometry_source
        return self.last_frame_id.get(source) or self.default_frame_ids[source]

    def _job(self, thermal: Frame | None, rgb: Frame | None, stamp_ns: int) -> Job:
        geometry = self.settings.geometry_source
        own = thermal if geometry == "thermal" else rgb
        camera = own.camera if own is not None else self.last_camera.get(geometry)
        return Job(thermal, rgb, stamp_ns, self.frame_id(), camera)

    def add(self, source: str, frame: Frame) -> list[Job]:
        """Route one arriving frame of ``source`` ("thermal"/"rgb"); the jobs to run, in order."""
        other = "rgb" if source == "thermal" else "thermal"
        self.last_rx.setdefault(other, frame.rx_ns)
        previous_rx = self.last_rx.get(source, frame.rx_ns)
        self.last_rx[source] = frame.rx_ns
        if frame.frame_id:
            self.last_frame_id[source] = frame.frame_id
        self.last_camera[source] = frame.camera
        add = self.sync.add_thermal if source == "thermal" else self.sync.add_rgb
        resets = self.sync.stats.resets
        pairs = add(frame.stamp_ns, frame)
        if self.sync.stats.resets != resets:
            self.last_stamp_ns = None  # new stamp epoch (bag loop, clock reset)
        geometry = self.settings.geometry_source
        jobs = []
        for pair in pairs:
            self.pairs += 1
            ref = pair.thermal if geometry == "thermal" else pair.rgb
            jobs.append(self._job(pair.thermal, pair.rgb, ref.stamp_ns))
        # alone only if the other camera went silent before this camera's previous frame: when both
        # come back at once (start-up, a shared outage), the first frame waits for its partner
        if not pairs and self.stale(other, frame.rx_ns) and self.last_rx[other] < previous_rx:
            jobs.append(self._job(frame if source == "thermal" else None, frame if source == "rgb" else None,
                                  frame.stamp_ns))
        return [job for job in jobs if self._admit(job)]

    def _admit(self, job: Job) -> bool:
        if not job.frame_id and getattr(job, self.settings.geometry_source) is None:
            self.frame_id_drops += 1  # the other camera alone, in a frame nobody has named yet
            return False
        if self.last_stamp_ns is not None and job.stamp_ns <= self.last_stamp_ns:
            self.stamp_order_drops += 1
            return False
        self.last_stamp_ns = job.stamp_ns
        return True


class Undistortion:
    """One cached Undistorter per camera (diffmf_core.live.camera)."""

    def __init__(self) -> None:
        self.cameras = {s: Undistorter() for s in SOURCES}

    def image(self, source: str, frame: Frame | None) -> np.ndarray | None:
        if frame is None:
            return None
        return self.cameras[source].undistort(frame.image, frame.camera)


def run_job(pipeline, job: Job, undistortion: Undistortion | None = None) -> FrameResult:
    """Run ``pipeline`` (diffmf_core.live.pipeline.FusionPipeline) on ``job``: undistort the frames that
    carry a camera model, then fuse a pair or pass one camera through in the output geometry."""
    undistortion = undistortion or Undistortion()
    thermal, rgb = undistortion.image("thermal", job.thermal), undistortion.image("rgb", job.rgb)
    if thermal is not None and rgb is not None:
        out = pipeline.fuse_pair(thermal, rgb, job.stamp_ns)
    else:
        out = pipeline.single_source(rgb=rgb, thermal=thermal)
    return FrameResult(
        image=out.image, stamp_ns=job.stamp_ns, frame_id=job.frame_id,
        thermal_stamp_ns=job.thermal.stamp_ns if job.thermal else 0,
        rgb_stamp_ns=job.rgb.stamp_ns if job.rgb else 0,
        homography=np.asarray(out.homography, dtype=np.float64).reshape(9),
        registration_quality=float(out.quality), mode=int(out.mode), inference_ms=float(out.inference_ms),
        model_name=out.model_name, camera_info=output_camera_info(job.camera, (out.image.shape[1], out.image.shape[0])))
