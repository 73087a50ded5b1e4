"""The per-pair fusion path shared by the ROS node and the offline bag tool.

Contract:
- ``FusionPipeline(fuser, registrar, fallback="gff", output_encoding="bgr8")``. ``fuser`` is the
  model (any object with ``.fuse(ir, vi)`` and ``.name``, see Fuser in docs/CONTRACTS.md) or None
  to run the classical ``fallback`` (a diffmf_core.baselines name, or a fuser object) from the
  start. ``fuse_pair(thermal, rgb, stamp_ns=None)`` registers the pair (``Registrar``) and fuses it
  (a fuser with ``stamped = True`` also gets the stamp: ``fuse(ir, vi, stamp_s=...)``). If the model
  raises any Exception (e.g. a CUDA out-of-memory RuntimeError), the pipeline switches to the
  fallback for good (this frame included), and ``degraded_reason`` keeps why (the caller logs it
  once).
- ``single_source(rgb=..., thermal=...)`` passes one camera through in the output frame
  (thermal as gray, or gray -> BGR for "bgr8" output).
- Output images are BGR uint8 (``output_encoding="bgr8"``) or gray uint8 ("mono8").
- The MODE_* ints below are the core's source of truth and equal msg/FusionInfo.msg's constants.
  ``FusedFrame.homography`` maps thermal pixels to output pixels; ``quality`` is NaN when not
  measured (single-source frames); ``inference_ms`` is the fuser's time (0 for pass-through).
- ``build_pipeline(params, warmup=False)`` builds the pipeline from the fusion node's parameters
  (config/fuse.yaml names; missing ones take the node defaults) for both the node and
  ``diffmf bag fuse``: calibration file (empty = the checkout's config/calibration/identity.yaml),
  output geometry, the model fuser (``fuser: warm_rule``, ``WarmRuleFuser``, or ``fuser: diffmf``,
  the DIFF-MF Fuser; a ``SteadyVideoFuser`` over it unless ``video_smoothing`` is 0: the pairs are
  consecutive frames) or None (``fuser: classical``); a model that cannot load is
  replaced by the classical fallback and the reason returned (never raised). Bad calibration
  files raise CalibrationError.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, NamedTuple

import cv2
import numpy as np

from diffmf_core.common.paths import repo_root
from diffmf_core.live.registration import Registrar, load_calibration
from diffmf_core.live.settings import NodeSettings

MODE_FUSED = 0
MODE_RGB_ONLY = 1
MODE_THERMAL_ONLY = 2
MODE_CLASSICAL = 3


class FusedFrame(NamedTuple):
    image: np.ndarray
    mode: int
    homography: np.ndarray
    quality: float
    inference_ms: float
    model_name: str


class FusionPipeline:
    """Register -> fuse (model, or the classical fallback once the model has failed)."""

    def __init__(self, fuser, registrar: Registrar | None = None, fallback="gff", output_encoding: str = "bgr8"):
        if output_encoding not in ("bgr8", "mono8"):
            raise ValueError(f"output_encoding must be 'bgr8' or 'mono8', got {output_encoding!r}")
        if isinstance(fallback, str):
            from diffmf_core.baselines import ClassicalFuser
            fallback = ClassicalFuser(fallback)
        self.model = fuser
        self.fallback = fallback
        self.registrar = registrar if registrar is not None else Registrar()
        self.output_encoding = output_encoding
        self.degraded_reason: str | None = None if fuser is not None else "no model fuser"

    @property
    def mode(self) -> int:
        """MODE_FUSED while the model is in use, else MODE_CLASSICAL."""
        return MODE_FUSED if self.model is not None else MODE_CLASSICAL

    @property
    def active_name(self) -> str:
        """Name of the fuser that will handle the next pair."""
        return (self.model if self.model is not None else self.fallback).name

    def _to_output(self, image: np.ndarray) -> np.ndarray:
        if self.output_encoding == "mono8":
            return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)

    def fuse_pair(self, thermal: np.ndarray, rgb: np.ndarray, stamp_ns: int | None = None) -> FusedFrame:
        """Register and fuse one synchronized pair (thermal gray/BGR u8, rgb BGR/gray u8) taken at
        ``stamp_ns`` (given to a fuser that uses stamps, e.g. SteadyVideoFuser)."""
        reg = self.registrar.register(thermal, rgb)
        if self.model is not None:
            try:
                return self._fuse_with(self.model, MODE_FUSED, reg, stamp_ns)
            except Exception as exc:  # noqa: BLE001 - any model failure degrades to the fallback
                self.degraded_reason = f"{self.model.name} failed: {type(exc).__name__}: {exc}"
                self.model = None
        return self._fuse_with(self.fallback, MODE_CLASSICAL, reg, stamp_ns)

    def _fuse_with(self, fuser, mode: int, reg, stamp_ns: int | None) -> FusedFrame:
        start = time.perf_counter()
        if stamp_ns is not None and getattr(fuser, "stamped", False):
            fused = fuser.fuse(reg.ir, reg.vi, stamp_s=stamp_ns * 1e-9)
        else:
            fused = fuser.fuse(reg.ir, reg.vi)
        ms = (time.perf_counter() - start) * 1e3
        return FusedFrame(self._to_output(fused), mode, reg.homography_used, reg.quality, ms, fuser.name)

    def single_source(self, rgb: np.ndarray | None = None, thermal: np.ndarray | None = None) -> FusedFrame:
        """Pass exactly one camera through in the output frame (MODE_RGB_ONLY / MODE_THERMAL_ONLY)."""
        if (rgb is None) == (thermal is None):
            raise ValueError("single_source needs exactly one of rgb= or thermal=")
        if rgb is not None:
            image, h = self.registrar.register_rgb(rgb)
            mode, name = MODE_RGB_ONLY, "passthrough:rgb"
        else:
            image, h = self.registrar.register_thermal(thermal)
            mode, name = MODE_THERMAL_ONLY, "passthrough:thermal"
        return FusedFrame(self._to_output(image), mode, h, float("nan"), 0.0, name)


class BuiltPipeline(NamedTuple):
    pipeline: FusionPipeline
    load_error: str | None  # why the model fuser is not in use (None: loaded, or fuser=classical)
    frame_ids: dict  # {"thermal": ..., "rgb": ...} from the calibration file


def model_fuser(params: Mapping):
    """The torch fuser that node parameters name (``fuser: warm_rule`` -> ``WarmRuleFuser``, else
    the DIFF-MF ``Fuser`` with ``weights``, ``preset``, ``device``, ``half_precision``,
    ``cuda_graph``), frame by frame; raises what its construction raises."""
    from diffmf_core.fuser import Fuser, WarmRuleFuser

    if params.get("fuser", NodeSettings.fuser) == "warm_rule":
        return WarmRuleFuser(device=params.get("device", "auto"))
    return Fuser(params.get("weights") or None, preset=params.get("preset") or None,
                 device=params.get("device", "auto"), half=bool(params.get("half_precision", True)),
                 cuda_graph=bool(params.get("cuda_graph", False)))


def build_pipeline(params: Mapping, warmup: bool = False) -> BuiltPipeline:
    """FusionPipeline from node parameters (see the module contract). With ``warmup`` (and the
    ``warmup`` parameter true) the model runs once at the expected output size."""
    calib = params.get("calibration_file") or repo_root() / "config" / "calibration" / "identity.yaml"
    cal = load_calibration(Path(calib))
    geometry = params.get("output_geometry", "rgb")
    fixed = (int(params.get("output_width", 640)), int(params.get("output_height", 512)))
    registrar = Registrar.from_calibration(cal, output=geometry, output_size=fixed if geometry == "fixed" else None,
                                           ecc_refine=bool(params.get("ecc_refine", False)))
    model, load_error = None, None
    kind = params.get("fuser", NodeSettings.fuser)
    if kind != "classical":
        preset = params.get("preset") or None
        try:
            from diffmf_core.fuser import SteadyVideoFuser

            model = model_fuser(params)
            if warmup and params.get("warmup", True):
                size = {"fixed": fixed, "thermal": cal.thermal_size}.get(geometry, cal.rgb_size)
                width, height = size or (640, 512)
                model.warmup(height, width)
            smoothing = float(params.get("video_smoothing", NodeSettings.video_smoothing))
            if smoothing > 0:
                model = SteadyVideoFuser(model, smoothing)
        except Exception as exc:  # noqa: BLE001 - missing/corrupt weights, OOM, ...: classical fallback
            what = "warm_rule" if kind == "warm_rule" else f"model {preset or 'default'!r}"
            model, load_error = None, f"{what} not loaded ({type(exc).__name__}: {exc})"
    pipeline = FusionPipeline(model, registrar, fallback=params.get("fallback_fuser", "gff"),
                              output_encoding=params.get("output_encoding", "bgr8"))
    if load_error:
        pipeline.degraded_reason = load_error
    return BuiltPipeline(pipeline, load_error, {"thermal": cal.thermal_frame_id, "rgb": cal.rgb_frame_id})
