"""SteadyVideoFuser (the node's video path): what the fuser (the network, or the warm rule) adds to
its sources is smoothed over time, the sources' own blend is not; stills, new sizes and scene cuts
are fused on their own."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from diffmf_core.fuser import Fuser, SteadyVideoFuser, WarmRuleFuser
from diffmf_core.live.pipeline import build_pipeline
from diffmf_core.modules import pyramid_decoder
from diffmf_core.modules.pyramid_decoder import source_blend
from diffmf_core.training.evaluation import temporal_flicker


@pytest.fixture(scope="module", params=["diffmf", "warm_rule"])
def fuser(request) -> Fuser | WarmRuleFuser:
    """The two fusers the node runs on video: the network and the warm rule (its default)."""
    return Fuser(device="cpu") if request.param == "diffmf" else WarmRuleFuser(device="cpu")


def moving_texture(frames: int = 8, shape=(64, 80), seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gray u8 (ir, vi) pairs of a still camera: a textured scene with a warm target, and in it a
    patch of texture moving by one pixel per frame (foliage in the wind: what shimmers)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    texture = [cv2.GaussianBlur(rng.normal(0, 1, (h, w + frames)), (0, 0), 1.5) for _ in range(2)]
    scene_ir = np.clip(110 + 60 * texture[0], 0, 255)
    scene_vi = np.clip(140 + 80 * texture[1], 0, 255)
    pairs = []
    for t in range(frames):
        ir, vi = scene_ir[:, :w].copy(), scene_vi[:, :w].copy()
        ir[36:60, 8:48], vi[36:60, 8:48] = scene_ir[36:60, 8 + t:48 + t], scene_vi[36:60, 8 + t:48 + t]
        ir[10:30, 50:70] = 230  # a warm target
        pairs.append((ir.astype(np.uint8), vi.astype(np.uint8)))
    return pairs


def test_source_blend_is_the_decoder_rule_with_unit_gains(monkeypatch):
    monkeypatch.setattr(pyramid_decoder, "DETAIL_GAIN", (1.0,) * 4)
    monkeypatch.setattr(pyramid_decoder, "CONTRAST", 1.0)
    gen = torch.Generator().manual_seed(1)
    ir, vi = torch.rand(1, 1, 48, 72, generator=gen), torch.rand(1, 1, 48, 72, generator=gen)
    with torch.no_grad():
        decoded = pyramid_decoder.rule_fusion(ir, vi, 5)
    assert torch.allclose(source_blend(ir, vi, 5), decoded, atol=1e-5)


def test_first_frame_stills_and_zero_smoothing_are_the_fuser_itself(fuser):
    (ir, vi), *_ = moving_texture()
    steady = SteadyVideoFuser(fuser)
    for _ in range(3):  # a still: the same pair again and again
        assert np.array_equal(steady.fuse(ir, vi), fuser.fuse(ir, vi))
    frames = moving_texture()
    plain = SteadyVideoFuser(fuser, smoothing=0.0)
    assert all(np.array_equal(plain.fuse(i, v), fuser.fuse(i, v)) for i, v in frames)
    with pytest.raises(ValueError, match="smoothing"):
        SteadyVideoFuser(fuser, smoothing=1.0)


def test_moving_texture_flickers_less_and_only_the_enhancement_lags(fuser):
    frames = moving_texture()
    irs, vis = [i for i, _ in frames], [v for _, v in frames]
    each = [fuser.fuse(i, v) for i, v in frames]
    steady = SteadyVideoFuser(fuser, smoothing=0.65)
    video = [steady.fuse(i, v) for i, v in frames]
    assert temporal_flicker(video, irs, vis) < 0.8 * temporal_flicker(each, irs, vis)
    # the output stays the frame's own blend plus at most the enhancement of recent frames
    ir_y, vi_y = (torch.from_numpy(x.astype(np.float32) / 255)[None, None] for x in frames[-1])
    blend = source_blend(ir_y, vi_y, fuser.pyramid_levels)[0, 0].numpy() * 255
    enhancement = np.abs(each[-1].astype(np.float32) - blend).max()
    assert np.abs(video[-1].astype(np.float32) - each[-1]).max() <= 2 * enhancement + 1


def test_a_scene_cut_or_a_new_size_starts_afresh(fuser):
    steady = SteadyVideoFuser(fuser)
    for ir, vi in moving_texture(seed=0)[:4]:
        steady.fuse(ir, vi)
    cut_ir, cut_vi = moving_texture(seed=5)[0]
    cut_ir = 255 - cut_ir  # an unrelated scene
    assert np.array_equal(steady.fuse(cut_ir, cut_vi), fuser.fuse(cut_ir, cut_vi))
    small_ir, small_vi = moving_texture(shape=(48, 64))[0]
    assert np.array_equal(steady.fuse(small_ir, small_vi), fuser.fuse(small_ir, small_vi))
    for ir, vi in moving_texture()[:3]:
        steady.fuse(ir, vi)
    steady.reset()
    ir, vi = moving_texture()[3]
    assert np.array_equal(steady.fuse(ir, vi), fuser.fuse(ir, vi))


def test_the_api_default_smoothing_is_the_node_parameter_default(fuser):
    """diffmf eval measures flicker with SteadyVideoFuser's default: it must be what the node runs."""
    from diffmf_core.live.settings import NodeSettings

    assert SteadyVideoFuser(fuser).smoothing == NodeSettings.video_smoothing


def test_the_pipeline_runs_video_through_it_unless_smoothing_is_zero():
    from diffmf_core.fuser import WarmRuleFuser
    from diffmf_core.live.settings import NodeSettings

    built = build_pipeline({"device": "cpu"})  # the default fuser: the warm rule
    assert isinstance(built.pipeline.model, SteadyVideoFuser) and built.pipeline.model.smoothing == 0.95
    assert NodeSettings.video_smoothing == 0.95 and NodeSettings.fuser == "warm_rule"
    assert built.pipeline.model.name == "warm_rule" and str(built.pipeline.model.device) == "cpu"
    assert isinstance(build_pipeline({"device": "cpu", "video_smoothing": 0.0}).pipeline.model, WarmRuleFuser)
    network = build_pipeline({"device": "cpu", "fuser": "diffmf", "video_smoothing": 0.7}).pipeline.model
    assert isinstance(network, SteadyVideoFuser) and network.smoothing == 0.7 and network.name == "diffmf-live"
    assert isinstance(build_pipeline({"device": "cpu", "fuser": "diffmf", "video_smoothing": 0.0}).pipeline.model,
                      Fuser)


def test_stamps_set_the_weight_of_the_past_in_time(fuser):
    frames = moving_texture()
    period = 1 / 30
    by_count, by_time = SteadyVideoFuser(fuser, 0.7), SteadyVideoFuser(fuser, 0.7)
    for t, (ir, vi) in enumerate(frames[:4]):  # every frame at 30 Hz: as if counted
        assert np.array_equal(by_count.fuse(ir, vi), by_time.fuse(ir, vi, stamp_s=100 + t * period))
    sparse = SteadyVideoFuser(fuser, 0.7)
    sparse.fuse(*frames[0], stamp_s=100.0)
    far = sparse.fuse(*frames[1], stamp_s=100.0 + 20 * period)  # weight 0.7 ** 20: the frame alone
    assert np.abs(far.astype(int) - fuser.fuse(*frames[1]).astype(int)).max() <= 1
    back = sparse.fuse(*frames[2], stamp_s=99.0)  # time went back (a bag replayed again): start afresh
    assert np.array_equal(back, fuser.fuse(*frames[2]))


def test_the_pipeline_gives_the_fuser_each_pairs_stamp(fuser):
    kind = "warm_rule" if isinstance(fuser, WarmRuleFuser) else "diffmf"
    pipeline = build_pipeline({"device": "cpu", "fuser": kind}).pipeline
    frames = moving_texture()
    pipeline.fuse_pair(*frames[0], stamp_ns=2_000_000_000)
    again = pipeline.fuse_pair(*frames[1], stamp_ns=1_000_000_000).image  # earlier stamp: frame alone
    assert np.array_equal(again, cv2.cvtColor(fuser.fuse(*frames[1]), cv2.COLOR_GRAY2BGR))


def panning(frames: int = 24, step: int = 3, shape=(96, 128), seed: int = 3):
    """Gray u8 (ir, vi) crops of one scene under a camera panning ``step`` px per frame: textured
    sources, a warm square in a visible image brighter than it (what the warm rule must keep)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    width = w + step * frames
    texture = [cv2.GaussianBlur(rng.normal(0, 1, (h, width)), (0, 0), 2.0) for _ in range(2)]
    scene_ir = np.clip(70 + 25 * texture[0], 0, 255)
    scene_vi = np.clip(200 + 25 * texture[1], 0, 255)
    scene_ir[40:60, 60:80] = 190  # a warm target, darker than the visible image around it
    return [(scene_ir[:, step * t:step * t + w].astype(np.uint8), scene_vi[:, step * t:step * t + w].astype(np.uint8))
            for t in range(frames)]


def test_camera_shift_finds_a_pan_and_shifted_moves_an_image():
    from diffmf_core.fuser import camera_shift, motion_image, shifted

    (ir0, vi0), (ir1, vi1) = panning(frames=2, step=6)
    small = [motion_image(i.astype(np.float32) / 255, v.astype(np.float32) / 255) for i, v in ((ir0, vi0), (ir1, vi1))]
    dx, dy = camera_shift(small[0], small[1], ir0.shape)
    assert abs(dx - -6) <= 1 and abs(dy) <= 1  # the camera moves right: the image moves left
    assert camera_shift(None, small[1], ir0.shape) == (0, 0)
    flat = np.zeros_like(small[0])
    assert camera_shift(flat, flat, ir0.shape) == (0, 0) and camera_shift(flat, flat + 0.5, ir0.shape) == (0, 0)
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    out = shifted(x, 1, -1, fill=torch.full_like(x, -1.0))
    assert out[0, 0, 0, 1] == x[0, 0, 1, 0] and out[0, 0, 2, 4] == x[0, 0, 3, 3]
    assert (out[0, 0, :, 0] == -1).all() and (out[0, 0, 3] == -1).all() and int((out >= 0).sum()) == 12
    assert torch.equal(shifted(x, 0, 0, fill=x * 0), x)


def test_a_panning_camera_keeps_the_warm_target_on_the_video_path(monkeypatch):
    """The smoothed past moves with the image: on a pan the warm target stays nearly as visible as
    frame by frame; a past that stays put (no camera shift) leaves it as a ghost behind."""
    from diffmf_core import fuser as fuser_module
    from diffmf_core.training.metrics import target_retention

    warm = WarmRuleFuser(device="cpu")
    frames = panning()

    def retention(video) -> float:
        kept = []
        for t, (ir, vi) in enumerate(frames):
            out = video.fuse(ir, vi, stamp_s=t / 30)
            if t >= 8:
                kept += target_retention(ir, out)
        return float(np.mean(kept))
    alone = retention(SteadyVideoFuser(warm, smoothing=0.0))
    steady = retention(SteadyVideoFuser(warm))
    monkeypatch.setattr(fuser_module, "camera_shift", lambda *args: (0, 0))
    trailing = retention(SteadyVideoFuser(warm))
    assert alone > 0.8 and steady > 0.8 * alone and trailing < 0.5 * alone, (alone, steady, trailing)


def test_an_object_moving_in_a_still_scene_is_not_taken_for_the_camera():
    from diffmf_core.fuser import camera_shift, motion_image

    ir, vi = moving_texture(frames=1)[0]
    steady = SteadyVideoFuser(WarmRuleFuser(device="cpu"))
    steady.fuse(ir, vi)
    moved = ir.copy()
    moved[20:40, 30:50] = ir.mean()
    moved[20:40, 36:56] = 255  # a bright object 6 px further right; the rest is still
    small = motion_image(moved.astype(np.float32) / 255, vi.astype(np.float32) / 255)
    tensors = [torch.from_numpy(x.astype(np.float32) / 255)[None, None] for x in (moved, vi)]
    assert steady._camera_movement(*tensors, small) == (0, 0)
