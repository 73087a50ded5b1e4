"""The shared per-pair path: register -> model fuser or classical fallback (diffmf_core.live.pipeline)."""
import math

import cv2
import numpy as np
import pytest

from diffmf_core.live.pipeline import (MODE_CLASSICAL, MODE_FUSED, MODE_RGB_ONLY, MODE_THERMAL_ONLY, FusedFrame,
                                  FusionPipeline)
from diffmf_core.common.paths import repo_root
from diffmf_core.live.registration import Registrar

RNG = np.random.default_rng(3)
IR = RNG.integers(0, 256, (32, 40), dtype=np.uint8)
VI = RNG.integers(0, 256, (32, 40, 3), dtype=np.uint8)


class MaxFuser:
    """Test double with the Fuser interface: per-pixel max of thermal and each colour channel."""
    name = "test-max"

    def __init__(self):
        self.calls = 0

    def fuse(self, ir, vi):
        self.calls += 1
        return np.maximum(vi, ir[..., None]) if vi.ndim == 3 else np.maximum(vi, ir)


class FailingFuser:
    name = "test-oom"

    def __init__(self):
        self.calls = 0

    def fuse(self, ir, vi):
        self.calls += 1
        raise RuntimeError("CUDA out of memory")


class MeanFuser:
    name = "test-mean"

    def fuse(self, ir, vi):
        return ((vi.astype(np.uint16) + ir[..., None]) // 2).astype(np.uint8)


def test_modes_match_fusion_info_msg():
    text = (repo_root() / "msg" / "FusionInfo.msg").read_text()
    for name, value in [("MODE_FUSED", MODE_FUSED), ("MODE_RGB_ONLY", MODE_RGB_ONLY),
                        ("MODE_THERMAL_ONLY", MODE_THERMAL_ONLY), ("MODE_CLASSICAL", MODE_CLASSICAL)]:
        assert f"uint8 {name}={value}" in text


def test_fused_pair_uses_the_model():
    model = MaxFuser()
    frame = FusionPipeline(model, Registrar(), fallback=MeanFuser()).fuse_pair(IR, VI)
    assert isinstance(frame, FusedFrame) and frame.mode == MODE_FUSED and frame.model_name == "test-max"
    np.testing.assert_array_equal(frame.image, np.maximum(VI, IR[..., None]))
    np.testing.assert_array_equal(frame.homography, np.eye(3))
    assert 0.0 <= frame.quality <= 1.0 and frame.inference_ms >= 0.0


def test_model_failure_switches_to_fallback_for_good():
    model = FailingFuser()
    pipeline = FusionPipeline(model, Registrar(), fallback=MeanFuser())
    assert pipeline.mode == MODE_FUSED and pipeline.degraded_reason is None
    first = pipeline.fuse_pair(IR, VI)
    assert first.mode == MODE_CLASSICAL and first.model_name == "test-mean"
    np.testing.assert_array_equal(first.image, MeanFuser().fuse(IR, VI))  # this frame is not lost
    assert "RuntimeError: CUDA out of memory" in pipeline.degraded_reason
    second = pipeline.fuse_pair(IR, VI)
    assert second.mode == MODE_CLASSICAL and model.calls == 1  # the model is not retried
    assert pipeline.mode == MODE_CLASSICAL and pipeline.active_name == "test-mean"


def test_no_model_means_classical_from_the_start():
    pipeline = FusionPipeline(None, Registrar(), fallback=MeanFuser())
    assert pipeline.mode == MODE_CLASSICAL and pipeline.degraded_reason
    assert pipeline.fuse_pair(IR, VI).mode == MODE_CLASSICAL


def test_named_classical_fallback_from_baselines():
    pytest.importorskip("diffmf_core.baselines")
    frame = FusionPipeline(None, Registrar(), fallback="mean").fuse_pair(IR, VI)
    assert frame.mode == MODE_CLASSICAL and frame.image.shape == VI.shape and frame.image.dtype == np.uint8
    assert frame.model_name == "mean"


def test_registration_happens_before_fusion():
    model = MaxFuser()
    small_ir = cv2.resize(IR, (20, 16), interpolation=cv2.INTER_AREA)
    frame = FusionPipeline(model, Registrar(np.eye(3)), fallback=MeanFuser()).fuse_pair(small_ir, VI)
    assert frame.image.shape == VI.shape
    assert frame.homography[0, 0] == pytest.approx(2.0)


@pytest.mark.parametrize("encoding,shape", [("bgr8", (32, 40, 3)), ("mono8", (32, 40))])
def test_output_encoding(encoding, shape):
    pipeline = FusionPipeline(MaxFuser(), Registrar(), fallback=MeanFuser(), output_encoding=encoding)
    assert pipeline.fuse_pair(IR, VI).image.shape == shape
    assert pipeline.fuse_pair(IR, VI[..., 0]).image.shape == shape  # gray visible camera
    assert pipeline.single_source(thermal=IR).image.shape == shape
    assert pipeline.single_source(rgb=VI).image.shape == shape


def test_single_source_modes():
    pipeline = FusionPipeline(MaxFuser(), Registrar(), fallback=MeanFuser())
    rgb_only = pipeline.single_source(rgb=VI)
    assert rgb_only.mode == MODE_RGB_ONLY and math.isnan(rgb_only.quality) and rgb_only.inference_ms == 0.0
    np.testing.assert_array_equal(rgb_only.image, VI)
    thermal_only = pipeline.single_source(thermal=IR)
    assert thermal_only.mode == MODE_THERMAL_ONLY
    np.testing.assert_array_equal(thermal_only.image, cv2.cvtColor(IR, cv2.COLOR_GRAY2BGR))
    with pytest.raises(ValueError):
        pipeline.single_source()
    with pytest.raises(ValueError):
        pipeline.single_source(rgb=VI, thermal=IR)


def test_thermal_only_is_registered_into_the_output_frame():
    h = np.array([[1, 0, 4.0], [0, 1, 0], [0, 0, 1]])
    pipeline = FusionPipeline(MaxFuser(), Registrar(h), fallback=MeanFuser(), output_encoding="mono8")
    frame = pipeline.single_source(thermal=IR)
    np.testing.assert_array_equal(frame.image[:, 4:], IR[:, :-4])
    np.testing.assert_array_equal(frame.homography, h)


def test_bad_output_encoding():
    with pytest.raises(ValueError):
        FusionPipeline(MaxFuser(), Registrar(), fallback=MeanFuser(), output_encoding="rgb8")
