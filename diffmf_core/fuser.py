"""Fuser: numpy image pairs in, fused images out, with a DIFF-MF weights file.

    fuser = Fuser()                            # shipped live weights, best device
    bgr = fuser.fuse(ir_gray_u8, vi_bgr_u8)    # same H x W; returns vi's layout (BGR or gray u8)

``WarmRuleFuser()`` has the same interface and runs the decoder's warm rule without a network (the
node's default fuser, see docs/model.md); ``SteadyVideoFuser`` wraps either for video.

Colour handling (as in the paper's qualitative figures): the network fuses the infrared image
with the visible image's Y (BT.601 YCrCb) channel, and the fused Y is recombined with the visible
Cr/Cb. Outputs with NaN/Inf raise ``NonFiniteOutput`` instead of becoming black pixels. Half precision is used on CUDA when ``half`` is true; with ``cuda_graph`` the network is
replayed from a CUDA graph captured once per input size (``GraphedForward``), which removes the
per-kernel launch cost that dominates a small network on a GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch

from diffmf_core.common.color import fuse_in_colour
from diffmf_core.common.paths import DEFAULT_PRESET, default_weights_path
from diffmf_core.config import DiffMFConfig
from diffmf_core.modules.pyramid_decoder import source_blend, warm_rule_fusion
from diffmf_core.weights import WeightsError, load_model

__all__ = ["Fuser", "GraphedForward", "NonFiniteOutput", "SteadyVideoFuser", "TensorFuser", "WarmRuleFuser",
           "WeightsError", "resolve_device"]


class NonFiniteOutput(RuntimeError):
    """The network produced NaN/Inf (e.g. overflow in half precision, or broken weights): the
    image would be silently black. Offline tools stop with an error; the node's pipeline counts it
    and falls back to its classical fuser (degraded mode)."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> first CUDA device if any, else CPU; ``cuda``/``cuda:N`` must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise RuntimeError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library when it is glibc (has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of returning them to the OS.

    Every frame allocates the same large activations; by default glibc maps blocks above 32 MB
    fresh each time, and the page faults of re-mapping them cost 10-30% of a CPU frame (more at
    1280x1024). Process-wide, idempotent; a no-op (False) where glibc is not the allocator.
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def release_freed_memory() -> None:
    """Return the blocks that ``keep_freed_memory`` kept to the OS (glibc ``malloc_trim``), e.g. before
    measuring a peak resident-memory increase. A no-op where glibc is not the allocator."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class GraphedForward:
    """``fn(*tensors)`` replayed from CUDA graphs, one per input shapes and dtypes (``max_shapes`` kept).

    The first call at a shape runs ``fn`` three times on a side stream (kernel autotuning, lazy
    allocations), then captures one run into static input and output buffers; later calls copy the
    inputs in and replay the graph. The returned tensor is the graph's static output: it is
    overwritten by the next call, so copy it before calling again. If capture fails at a shape, the
    reason is printed once and that shape runs eagerly from then on. CUDA tensors only.
    """

    def __init__(self, fn, max_shapes: int = 2):
        self.fn, self.max_shapes = fn, max_shapes
        self.graphs: OrderedDict = OrderedDict()  # key -> (graph, static inputs, static output)
        self.eager_keys: set = set()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        if key in self.eager_keys:
            return self.fn(*inputs)
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(inputs)
            except RuntimeError as exc:
                torch.cuda.synchronize(inputs[0].device)
                self.eager_keys.add(key)
                print(f"CUDA graph capture failed for {key[0][0]} ({exc}); running eagerly", file=sys.stderr)
                return self.fn(*inputs)
            self.graphs[key] = entry
            while len(self.graphs) > self.max_shapes:
                self.graphs.popitem(last=False)  # the least recently used shape
        self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, inputs):
            dst.copy_(src)
        graph.replay()
        return static_out

    def _capture(self, inputs: tuple):
        static_in = tuple(t.clone() for t in inputs)
        device = static_in[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.fn(*static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(*static_in)
        return graph, static_in, static_out


def luminance_tensors(ir_y: np.ndarray, vi_y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-size HxW luminance arrays -> (1, 1, H, W) float32 CPU tensors; ValueError otherwise."""
    if ir_y.shape != vi_y.shape:
        raise ValueError(f"size mismatch: ir {ir_y.shape}, vi {vi_y.shape}")
    return tuple(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None] for y in (ir_y, vi_y))


class TensorFuser:
    """What every torch fuser shares: numpy images in, fused images out, through
    ``self.forward(ir, vi)`` on ``self.device`` in ``self.dtype``. Subclasses set those, ``name``,
    ``pyramid_levels`` (the decoder's, for ``source_blend``) and ``source`` (named in errors)."""

    device: torch.device
    dtype: torch.dtype
    name: str
    pyramid_levels: int
    source: str

    def __init__(self, device: str):
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()

    @torch.inference_mode()
    def fuse_tensor(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        """(b, 1, H, W) float luminance in [0, 1] on any device -> fused (b, 1, H, W) float32."""
        ir = ir.to(self.device, self.dtype)
        vi = vi.to(self.device, self.dtype)
        out = self.forward(ir, vi).float()  # not in place: may be a CUDA graph's output
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise NonFiniteOutput(f"{self.name} produced {bad} non-finite (NaN/Inf) output value(s) "
                                  f"of {out.numel()} ({self.source})")
        return out.clamp(0, 1)

    def fuse_y(self, ir_y: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
        """float32 [0, 1] HxW luminance pair -> fused float32 [0, 1] HxW."""
        return self.fuse_tensor(*luminance_tensors(ir_y, vi_y))[0, 0].cpu().numpy()

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """ir HxW (or HxWx3) u8 + vi BGR u8 (or gray u8) of equal HxW -> fused in vi's layout."""
        return fuse_in_colour(self.fuse_y, ir, vi)

    def warmup(self, height: int = 512, width: int = 640) -> None:
        """One inference at the expected size, so the first real frame is not slow."""
        self.fuse_y(np.zeros((height, width), np.float32), np.zeros((height, width), np.float32))


class Fuser(TensorFuser):
    """DIFF-MF inference on numpy images (see module docstring)."""

    def __init__(self, weights: str | Path | None = None, preset: str | None = None, device: str = "auto",
                 half: bool = True, scan_backend: str | None = None, cuda_graph: bool = False):
        super().__init__(device)
        path = Path(weights) if weights else default_weights_path(preset or DEFAULT_PRESET)
        overrides = {"scan_backend": scan_backend} if scan_backend else {}
        self.model = load_model(path, self.device, expect_preset=preset, **overrides)
        self.config = self.model.cfg
        self.dtype = torch.float16 if (half and self.device.type == "cuda") else torch.float32
        self.model.to(self.dtype)
        self.weights_path = self.source = path
        self.name = f"diffmf-{self.config.name}"
        self.pyramid_levels = self.config.pyramid_levels
        self.forward = GraphedForward(self.model) if (cuda_graph and self.device.type == "cuda") else self.model


class WarmRuleFuser(TensorFuser):
    """The warm rule (``pyramid_decoder.warm_rule_fusion``: the decoder's rule with the thermal
    image on warm targets and the output stretched), without a network, on ``device`` ("auto":
    CUDA when available) in float32, with the decoder's default pyramid levels (the shipped
    networks')."""

    name = source = "warm_rule"

    def __init__(self, device: str = "auto"):
        super().__init__(device)
        self.dtype = torch.float32
        self.pyramid_levels = DiffMFConfig.pyramid_levels
        self.forward = functools.partial(warm_rule_fusion, levels=self.pyramid_levels)


MOTION_SIDE = 128       # camera_shift works on images reduced by a whole factor to about this short side
MOTION_MIN_SIDE = 32    # below this (at full size) no shift is estimated
MOTION_GAIN = 0.8       # a shift is the camera's only if it explains the frame change this much better
MOTION_MIN_RESPONSE = 0.05  # a weaker phase-correlation peak (flat images) is no movement


def motion_image(ir_y: np.ndarray, vi_y: np.ndarray) -> np.ndarray | None:
    """The sum of the two luminance images reduced by the whole factor that brings the short side
    to about MOTION_SIDE (area average; 640x512: a quarter), what ``camera_shift`` compares; None
    for images too small to tell a movement."""
    h, w = ir_y.shape
    if min(h, w) < MOTION_MIN_SIDE:
        return None
    total = np.asarray(ir_y, np.float32) + np.asarray(vi_y, np.float32)
    factor = max(1, min(h, w) // MOTION_SIDE)
    if factor == 1:
        return total
    return cv2.resize(total, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=4)
def _hann_window(shape: tuple[int, int]) -> np.ndarray:
    """The Hann window of ``camera_shift`` for motion images of ``shape`` (made once per size)."""
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)


def camera_shift(previous: np.ndarray | None, current: np.ndarray | None, size) -> tuple[int, int]:
    """(dx, dy), whole pixels at full ``size`` (H, W): how far the image moved from ``previous`` to
    ``current`` (``motion_image``s), by phase correlation with a Hann window; (0, 0) when either is
    None or the correlation has no clear peak (flat images)."""
    if previous is None or current is None or previous.shape != current.shape:
        return 0, 0
    (dx, dy), response = cv2.phaseCorrelate(previous, current, _hann_window(current.shape))
    if not (np.isfinite(dx) and np.isfinite(dy) and response >= MOTION_MIN_RESPONSE):
        return 0, 0
    scale_x, scale_y = size[1] / current.shape[1], size[0] / current.shape[0]
    return int(round(dx * scale_x)), int(round(dy * scale_y))


def overlap(size, dx: int, dy: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(destination, source) slices over the last two axes of an image of ``size`` (H, W) moved by
    (dx, dy) whole pixels: moved[destination] = image[source]."""
    h, w = size
    destination = (slice(max(dy, 0), h - max(-dy, 0)), slice(max(dx, 0), w - max(-dx, 0)))
    source = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
    return destination, source


def shifted(x: torch.Tensor, dx: int, dy: int, fill: torch.Tensor) -> torch.Tensor:
    """``x`` (b, c, H, W) moved by (dx, dy) whole pixels, out[y, x] = x[y - dy, x - dx]; where that
    does not exist, ``fill`` (same shape)."""
    (dy_, dx_), (sy, sx) = overlap(x.shape[-2:], dx, dy)
    out = fill.clone()
    out[..., dy_, dx_] = x[..., sy, sx]
    return out


class SteadyVideoFuser:
    """A Fuser (or WarmRuleFuser) for the consecutive frames of one video: what it adds to its sources
    (sharpening, contrast, the warm targets' selection: the fused image minus ``source_blend``, the
    decoder's brighter-source selection alone) is smoothed over time, so that sharpened texture and
    target edges that move do not shimmer:

        E_t = (1 - smoothing) (fused_t - blend_t) + smoothing shift(E_{t-1}, d_t),
        out_t = clip(blend_t + E_t)

    d_t is the camera's movement since the previous frame (``camera_shift``: a global translation,
    by phase correlation of the two sources' sum, reduced to a short side of about 128 px, kept only
    where it explains the frame's change: ``_camera_movement``), so the smoothed past
    moves with the image on a panning camera instead of trailing behind it; where the shifted past
    has no pixels (the side the camera turns to) the current frame's enhancement is used. The
    blend, i.e. everything the sources themselves show, follows every frame at once; only the
    enhancement of what moves in the scene lags, by about smoothing / (1 - smoothing) frames. A
    shift of more than a quarter of the image counts as a scene cut. ``smoothing`` 0 is the Fuser
    frame by frame. With frame stamps (``fuse(..., stamp_s=t)``) the weight of the past is
    smoothing ** (dt / frame_period_s), so the lag is the same in time whether every frame or only
    every tenth is fused; without, every call counts as one frame period. The first frame, a new
    size, a stamp that goes back, and a scene cut (the sources' mean absolute change above ``cut``,
    intensity units) start again from that frame alone, so stills and unrelated images are never
    mixed. Same ``fuse`` / ``name`` contract as Fuser; not for batches."""

    stamped = True  # fuse() takes the frame's stamp (FusionPipeline passes it)

    def __init__(self, fuser: TensorFuser, smoothing: float = 0.95, cut: float = 0.1, frame_period_s: float = 1 / 30):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.fuser, self.smoothing, self.cut, self.frame_period_s = fuser, smoothing, cut, frame_period_s
        self.name, self.device = fuser.name, fuser.device
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self._previous_small: np.ndarray | None = None
        self._enhancement: torch.Tensor | None = None
        self._stamp_s: float | None = None

    def reset(self) -> None:
        """Forget the past frames: the next one is fused on its own."""
        self._previous = self._previous_small = self._enhancement = self._stamp_s = None

    def _past_weight(self, stamp_s: float | None) -> float:
        """Weight of the smoothed past for a frame at ``stamp_s``; 0 when it goes back in time."""
        if stamp_s is None or self._stamp_s is None:
            return self.smoothing
        dt = stamp_s - self._stamp_s
        return self.smoothing ** (dt / self.frame_period_s) if dt > 0 else 0.0

    def _continues(self, ir: torch.Tensor, vi: torch.Tensor) -> bool:
        if self._previous is None or self._previous[0].shape != ir.shape:
            return False
        change = max(float((ir - self._previous[0]).abs().mean()), float((vi - self._previous[1]).abs().mean()))
        return change <= self.cut

    def _camera_movement(self, ir: torch.Tensor, vi: torch.Tensor, small: np.ndarray | None) -> tuple[int, int]:
        """The camera's movement since the previous frame: ``camera_shift``, kept only if moving the
        previous sources by it leaves less than MOTION_GAIN of their change to the current ones (a
        moving object in a still scene, which phase correlation may also find, does not)."""
        dx, dy = camera_shift(self._previous_small, small, ir.shape[-2:])
        if (dx, dy) == (0, 0):
            return 0, 0
        now, before = ir + vi, self._previous[0] + self._previous[1]
        (dy_, dx_), (sy, sx) = overlap(now.shape[-2:], dx, dy)
        moved_change = float((now[..., dy_, dx_] - before[..., sy, sx]).abs().mean())
        if moved_change < MOTION_GAIN * float((now - before).abs().mean()):
            return dx, dy
        return 0, 0

    def fuse_y(self, ir_y: np.ndarray, vi_y: np.ndarray, stamp_s: float | None = None) -> np.ndarray:
        """float32 [0, 1] HxW luminance pair (the next frame, taken at ``stamp_s`` seconds if known)
        -> fused float32 [0, 1] HxW. The blend and the smoothing run on the Fuser's device."""
        ir, vi = luminance_tensors(ir_y, vi_y)
        fused = self.fuser.fuse_tensor(ir, vi)
        if self.smoothing > 0.0:
            small = motion_image(ir_y, vi_y)
            with torch.inference_mode():
                ir, vi = ir.to(fused.device), vi.to(fused.device)
                blend = source_blend(ir, vi, self.fuser.pyramid_levels)
                enhancement = fused - blend
                weight = self._past_weight(stamp_s)
                if weight > 0.0 and self._continues(ir, vi):
                    dx, dy = self._camera_movement(ir, vi, small)
                    if abs(dx) <= ir.shape[-1] // 4 and abs(dy) <= ir.shape[-2] // 4:
                        past = shifted(self._enhancement, dx, dy, fill=enhancement)
                        enhancement = (1 - weight) * enhancement + weight * past
                self._previous, self._enhancement, self._stamp_s = (ir, vi), enhancement, stamp_s
                self._previous_small = small
                fused = (blend + enhancement).clamp(0, 1)
        return fused[0, 0].cpu().numpy()

    def fuse(self, ir: np.ndarray, vi: np.ndarray, stamp_s: float | None = None) -> np.ndarray:
        """The next frame: ir HxW (or HxWx3) u8 + vi BGR u8 (or gray u8) -> fused in vi's layout."""
        return fuse_in_colour(functools.partial(self.fuse_y, stamp_s=stamp_s), ir, vi)
