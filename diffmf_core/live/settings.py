"""The fusion node's settings: one typed object for the ROS node and ``diffmf bag fuse``.

Contract:
- ``NodeSettings`` is a frozen dataclass with one field per node parameter (the names of
  config/fuse.yaml). Each field's metadata holds its description, its allowed choices, its
  numeric range [lo, hi] and whether it may change while the node runs (``runtime``).
- ``SPECS`` lists them as ``Spec`` records (name, default, description, choices, lo, hi, runtime):
  the node builds its ROS parameter descriptors from it, docs/node.md documents it.
- ``NodeSettings.check(values)`` lists every reason why a full name -> value mapping is invalid
  (empty list: valid); ``NodeSettings.from_mapping(values)`` fills missing names with defaults,
  ignores names that are not settings (e.g. ``use_sim_time``, ``qos_overrides.*``) and raises
  ``SettingsError`` naming every invalid value. ``replace(**changes)`` validates too.
- No ROS imports.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

from diffmf_core.common.imageheader import MAX_PIXELS

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
CLASSICAL_NAMES = ("gff", "laplacian", "laplacian_max", "max", "mean", "rule")  # diffmf_core.baselines.CLASSICAL_FUSERS keys


class SettingsError(ValueError):
    """Invalid settings; ``errors`` lists one reason per invalid value."""

    def __init__(self, errors: list[str]):
        super().__init__("invalid parameters: " + "; ".join(errors))
        self.errors = errors


@dataclasses.dataclass(frozen=True)
class Spec:
    """One setting: default, description, constraints, and whether it may change live."""

    name: str
    default: Any
    description: str
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    runtime: bool = False


def _s(default, description: str, choices: tuple = (), lo=None, hi=None, runtime: bool = False):
    return dataclasses.field(default=default, metadata={
        "description": description, "choices": choices, "lo": lo, "hi": hi, "runtime": runtime})


_TRANSPORT = "raw: Image on <topic>; compressed: CompressedImage on <topic>/compressed"


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """All node parameters with their defaults (see the module contract)."""

    autostart: bool = _s(True, "configure and activate at start")
    thermal_topic: str = _s("thermal/image_raw", "thermal camera image topic (relative: in the node's namespace)")
    rgb_topic: str = _s("rgb/image_raw", "RGB camera image topic (relative: in the node's namespace)")
    thermal_transport: str = _s("raw", _TRANSPORT, choices=("raw", "compressed"))
    rgb_transport: str = _s("raw", _TRANSPORT, choices=("raw", "compressed"))
    use_camera_info: bool = _s(True, "undistort a camera with the intrinsics of <camera>/camera_info once "
                                     "it arrives (topic next to the image topic)")
    qos_reliability: str = _s("best_effort", "subscription reliability (qos_overrides.* take precedence)",
                              choices=("best_effort", "reliable"))
    qos_depth: int = _s(5, "subscription history depth (qos_overrides.* take precedence)", lo=1, hi=100)
    sync_queue_size: int = _s(10, "frames kept per camera while waiting for a partner", lo=1, hi=100)
    sync_slop_s: float = _s(0.02, "largest stamp difference of a pair, s", lo=0.0, hi=1.0, runtime=True)
    sync_min_interval_s: float = _s(
        0.02, "shortest interval between two frames of one camera, s; lets a pair go out without waiting "
              "for the next frame (0 = wait: exact ApproximateTime)", lo=0.0, hi=1.0, runtime=True)
    thermal_delay_s: float = _s(0.0, "thermal stamps are this much later than RGB stamps, s", lo=-1.0, hi=1.0,
                                runtime=True)
    max_image_pixels: int = _s(MAX_PIXELS, "largest accepted input image, pixels", lo=1, hi=268435456, runtime=True)
    thermal_agc_mode: str = _s("auto", "mono16 thermal to 8 bit: auto or fixed [agc_low, agc_high]",
                               choices=("auto", "fixed"), runtime=True)
    agc_low: float = _s(0.0, "raw count mapped to 0 (fixed AGC)", lo=0.0, hi=65535.0, runtime=True)
    agc_high: float = _s(65535.0, "raw count mapped to 255 (fixed AGC)", lo=0.0, hi=65535.0, runtime=True)
    calibration_file: str = _s("", "homography YAML; empty = package config/calibration/identity.yaml")
    output_geometry: str = _s("rgb", "output size, frame and stamp: rgb, thermal, or fixed (RGB camera scaled "
                                     "to output_width x output_height)", choices=("rgb", "thermal", "fixed"))
    output_width: int = _s(640, "output width for output_geometry fixed", lo=16, hi=8192)
    output_height: int = _s(512, "output height for output_geometry fixed", lo=16, hi=8192)
    ecc_refine: bool = _s(False, "refine the calibrated homography with ECC (every 30th pair)")
    fuser: str = _s("warm_rule", "warm_rule (the decoder's warm rule, no network), diffmf (the network) or "
                                 "classical (always fallback_fuser); the first two fall back to fallback_fuser "
                                 "if they fail", choices=("warm_rule", "diffmf", "classical"))
    device: str = _s("auto", "inference device: auto, cpu, cuda or cuda:N")
    half_precision: bool = _s(True, "fp16 inference on CUDA")
    cuda_graph: bool = _s(False, "replay the network from a CUDA graph per input size (CUDA only)")
    preset: str = _s("live", "model preset", choices=("live", "paper"))
    weights: str = _s("", "weights .safetensors; empty = shipped weights of the preset")
    fallback_fuser: str = _s("gff", "classical fuser used when the network cannot run", choices=CLASSICAL_NAMES)
    warmup: bool = _s(True, "run one blank inference before activation")
    video_smoothing: float = _s(0.95, "weight of the past 1/30 s in what the fuser adds to its sources "
                                       "(sharpening, contrast, warm targets), for steadier video; 0 = each pair alone",
                                lo=0.0, hi=0.95)
    output_encoding: str = _s("bgr8", "encoding of fused/image", choices=("bgr8", "mono8"), runtime=True)
    publish_compressed: bool = _s(False, "also publish fused/image/compressed (JPEG)")
    jpeg_quality: int = _s(90, "JPEG quality of fused/image/compressed", lo=1, hi=100, runtime=True)
    frame_id: str = _s("", "frame_id of the outputs; empty = the output geometry camera's frame", runtime=True)
    source_timeout_s: float = _s(0.5, "a camera silent this long is degraded to single-source output, s",
                                 lo=0.05, hi=60.0, runtime=True)
    diagnostics_period_s: float = _s(1.0, "period of /diagnostics, s", lo=0.1, hi=60.0)
    stall_timeout_s: float = _s(3.0, "diagnostics ERROR when camera images arrive but nothing was published "
                                     "for this long, s", lo=0.1, hi=600.0, runtime=True)

    # ---- construction and checks -----------------------------------------------------------
    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        """Reasons why ``values`` (every setting name -> value) are not a valid configuration."""
        errors, type_errors = [], []
        for spec in SPECS:
            v = values[spec.name]
            if not isinstance(v, type(spec.default)) and not (isinstance(spec.default, float)
                                                               and isinstance(v, int) and not isinstance(v, bool)):
                type_errors.append(f"{spec.name}={v!r}: must be a {type(spec.default).__name__}")
                continue
            if spec.choices and v not in spec.choices:
                errors.append(f"{spec.name}={v!r}: must be one of {', '.join(spec.choices)}")
            if spec.lo is not None and not spec.lo <= v <= spec.hi:
                errors.append(f"{spec.name}={v!r}: must be in [{spec.lo}, {spec.hi}]")
        if type_errors:
            return type_errors + errors
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

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "NodeSettings":
        """Settings from a (possibly partial) name -> value mapping; unknown names are ignored."""
        full = {spec.name: values.get(spec.name, spec.default) for spec in SPECS}
        full = {k: float(v) if isinstance(SPEC_BY_NAME[k].default, float) and isinstance(v, int)
                and not isinstance(v, bool) else v for k, v in full.items()}
        errors = cls.check(full)
        if errors:
            raise SettingsError(errors)
        return cls(**full)

    def replace(self, **changes) -> "NodeSettings":
        return NodeSettings.from_mapping({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def unused_weights(self) -> str | None:
        """Why ``weights`` is set and ignored (the fuser is not the network), for a warning; else None."""
        if self.weights and self.fuser != "diffmf":
            return (f"weights {self.weights!r} is not used: fuser is {self.fuser!r} "
                    "(fuser: diffmf runs the network with them)")
        return None

    @property
    def geometry_source(self) -> str:
        """The camera whose pixels define the output ("thermal" or "rgb"; fixed is the scaled RGB camera)."""
        return "thermal" if self.output_geometry == "thermal" else "rgb"


SPECS: tuple[Spec, ...] = tuple(
    Spec(f.name, f.default, f.metadata["description"], f.metadata["choices"], f.metadata["lo"], f.metadata["hi"],
         f.metadata["runtime"]) for f in dataclasses.fields(NodeSettings))
SPEC_BY_NAME = {s.name: s for s in SPECS}
