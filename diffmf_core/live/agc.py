"""Automatic gain control for raw 16-bit thermal frames: uint16 HxW -> uint8 HxW.

Contract:
- ``mode="fixed"``: ``out = clip(round((v - low) * 255 / (high - low)), 0, 255)`` with the given
  ``low < high`` (raw counts); frames do not change the mapping.
- ``mode="auto"``: each frame's ``percentiles`` (low, high) are measured on a subsample and the
  mapping range follows them with exponential smoothing,
  ``range = smoothing * range + (1 - smoothing) * measured`` (the first frame sets it directly),
  so a single hot object or outlier frame moves the range gradually instead of making the
  picture flicker. The range is never narrower than ``min_span`` counts (uniform scenes do not
  blow up sensor noise). ``reset()`` forgets the tracked range.
Input of either byte order is accepted (big-endian views from ``imagecodec`` work unchanged).
"""
from __future__ import annotations

import numpy as np

_LUT_SIZE = 65536
_MAX_SAMPLES = 65536  # percentile estimate uses at most about this many pixels


class ThermalAGC:
    """Maps raw 16-bit thermal counts to 8 bit with a fixed or a smoothly tracked range."""

    def __init__(self, mode: str = "auto", low: float | None = None, high: float | None = None,
                 percentiles: tuple[float, float] = (1.0, 99.0), smoothing: float = 0.9,
                 min_span: float = 32.0):
        if mode not in ("auto", "fixed"):
            raise ValueError(f"ThermalAGC mode must be 'auto' or 'fixed', got {mode!r}")
        if mode == "fixed":
            if low is None or high is None or not (0 <= low < high <= _LUT_SIZE - 1):
                raise ValueError(f"fixed AGC needs 0 <= low < high <= 65535, got low={low} high={high}")
        p_lo, p_hi = percentiles
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if min_span <= 0:
            raise ValueError(f"min_span must be > 0, got {min_span}")
        self.mode = mode
        self.percentiles = (float(p_lo), float(p_hi))
        self.smoothing = float(smoothing)
        self.min_span = float(min_span)
        self._fixed = (float(low), float(high)) if mode == "fixed" else None
        self._range: tuple[float, float] | None = self._fixed
        self._lut: np.ndarray | None = None
        self._lut_range: tuple[float, float] | None = None

    @property
    def range(self) -> tuple[float, float] | None:
        """The (low, high) raw counts currently mapped to 0 and 255 (None before the first auto frame)."""
        return self._range

    def reset(self) -> None:
        """Forget the tracked range (auto mode); fixed mode keeps its range."""
        self._range = self._fixed

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Map a 2-D uint16 (or uint8) array of either byte order to a new HxW uint8 array."""
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.dtype.kind != "u" or raw.dtype.itemsize > 2:
            raise ValueError(f"ThermalAGC.apply expects a 2-D uint16 array, got {raw.dtype} {raw.shape}")
        if self.mode == "auto":
            self._track(raw)
        return self._lookup()[raw]

    def _track(self, raw: np.ndarray) -> None:
        stride = max(1, int(np.sqrt(raw.size / _MAX_SAMPLES)))
        sample = raw[::stride, ::stride]
        low, high = (float(v) for v in np.percentile(sample, self.percentiles))
        if self._range is not None:
            a = self.smoothing
            low = a * self._range[0] + (1.0 - a) * low
            high = a * self._range[1] + (1.0 - a) * high
        if high - low < self.min_span:
            centre = 0.5 * (low + high)
            low, high = centre - 0.5 * self.min_span, centre + 0.5 * self.min_span
        self._range = (low, high)

    def _lookup(self) -> np.ndarray:
        if self._lut is None or self._lut_range != self._range:
            low, high = self._range
            values = (np.arange(_LUT_SIZE, dtype=np.float64) - low) * (255.0 / (high - low))
            self._lut = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            self._lut_range = self._range
        return self._lut
