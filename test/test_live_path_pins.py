"""Issue 26: tests that pin the live path where realistic single mutations survived before, without
ROS: the output frame_id keeps the last non-empty one; fused/camera_info carries the intrinsics of
the output geometry's camera for each ``output_geometry``; a one-frame stamp step back starts the
video smoothing afresh; the decoder's selection map (brighter_source) has its resolution and
smoothing. (AGC pixels after the range moves: test_agc.py; the node's diagnostics, QoS and live
AGC changes: test_node_pins.py; outputs and bag flags: test_output_pins.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffmf_core.live.camera import CameraModel
from diffmf_core.live.frames import Frame, FrameRouter, run_job
from diffmf_core.live.pipeline import MODE_RGB_ONLY, MODE_THERMAL_ONLY, build_pipeline
from diffmf_core.live.settings import NodeSettings
from diffmf_core.modules.pyramid_decoder import SELECT_SHARPNESS, brighter_source

MS = 1_000_000


# ---- frame_id: an empty frame_id after a good one keeps the good one ---------------------------

@pytest.mark.parametrize("geometry", ["rgb", "thermal"])
def test_empty_frame_id_after_a_named_frame_keeps_the_last_good_one(geometry):
    """A driver that sends frame_id "" now and then: the outputs keep the geometry camera's last
    non-empty frame_id (not the calibration's name, not ""), for pairs and for frames alone."""
    router = FrameRouter(NodeSettings(output_geometry=geometry, source_timeout_s=0.15),
                         {"thermal": "cal_thermal", "rgb": "cal_rgb"})
    img = np.zeros((4, 4), np.uint8)
    named = {"thermal": "flir", "rgb": "cam"}
    jobs, t = [], 1_000 * MS
    for i in range(6):  # pairs; from the third on, both cameras send frame_id ""
        ids = named if i < 2 else {"thermal": "", "rgb": ""}
        jobs += router.add("rgb", Frame(img, t, ids["rgb"], t))
        jobs += router.add("thermal", Frame(img, t, ids["thermal"], t))
        t += 100 * MS
    for _ in range(4):  # the other camera silent: the geometry camera alone, still sending ""
        jobs += router.add(geometry, Frame(img, t, "", t))
        t += 100 * MS
    kinds = [("T" if j.thermal else "") + ("R" if j.rgb else "") for j in jobs]
    assert kinds.count("TR") == 6 and kinds.count("T" if geometry == "thermal" else "R") >= 2, kinds
    assert {j.frame_id for j in jobs} == {named[geometry]}


# ---- fused/camera_info: the intrinsics of the output geometry's camera -------------------------

THERMAL_K = (30.0, 0.0, 15.5, 0.0, 31.0, 11.5, 0.0, 0.0, 1.0)  # 32x24 thermal camera
RGB_K = (50.0, 0.0, 19.5, 0.0, 52.0, 15.5, 0.0, 0.0, 1.0)  # 40x32 RGB camera
# output_geometry -> (output width, height), expected k; fixed: the RGB camera scaled to 20x16
# (cv2.resize pixel centres: c' = s (c + 0.5) - 0.5)
GEOMETRIES = {
    "rgb": ((40, 32), RGB_K),
    "thermal": ((32, 24), THERMAL_K),
    "fixed": ((20, 16), (25.0, 0.0, 9.5, 0.0, 26.0, 7.5, 0.0, 0.0, 1.0)),
}


def cameras() -> dict[str, CameraModel]:
    return {"thermal": CameraModel(32, 24, THERMAL_K, (0.0,) * 5, "plumb_bob"),
            "rgb": CameraModel(40, 32, RGB_K, (0.0,) * 5, "plumb_bob")}


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_fused_camera_info_is_the_output_geometry_camera_for_each_geometry(geometry):
    """Pairs and either camera alone: fused/camera_info's k (and p) are the output geometry's
    camera at the output size; for thermal, the thermal intrinsics, not the RGB ones scaled."""
    (width, height), k = GEOMETRIES[geometry]
    pipeline = build_pipeline({"fuser": "classical", "fallback_fuser": "mean", "output_geometry": geometry,
                               "output_width": 20, "output_height": 16}).pipeline
    router = FrameRouter(NodeSettings(output_geometry=geometry, output_width=20, output_height=16,
                                      source_timeout_s=0.15), {"thermal": "t", "rgb": "r"})
    cams = cameras()
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (24, 32), np.uint8)
    vi = rng.integers(0, 256, (32, 40, 3), np.uint8)

    def send(source, t):
        image = ir if source == "thermal" else vi
        return router.add(source, Frame(image, t, source, t, camera=cams[source]))

    jobs, t = [], 1_000 * MS
    for _ in range(3):
        jobs += send("rgb", t) + send("thermal", t)
        t += 100 * MS
    for _ in range(3):  # RGB silent: thermal alone
        jobs += send("thermal", t)
        t += 100 * MS
    for _ in range(3):  # both again, then thermal silent: RGB alone
        jobs += send("rgb", t) + send("thermal", t)
        t += 100 * MS
    for _ in range(3):
        jobs += send("rgb", t)
        t += 100 * MS
    results = [run_job(pipeline, job) for job in jobs]
    modes = {r.mode for r in results}
    assert {MODE_THERMAL_ONLY, MODE_RGB_ONLY} <= modes and len(results) >= 10, modes
    for r in results:
        assert r.image.shape[:2] == (height, width), (r.mode, r.image.shape)
        np.testing.assert_allclose(r.camera_info.k, k, err_msg=f"mode {r.mode}")
        np.testing.assert_allclose(np.reshape(r.camera_info.p, (3, 4))[:, :3].reshape(9), k)


# ---- SteadyVideoFuser: a one-frame stamp step back starts afresh -------------------------------

@pytest.fixture(scope="module")
def fuser():
    from diffmf_core.fuser import Fuser

    return Fuser(device="cpu")


def test_one_frame_stamp_step_back_starts_the_smoothing_afresh(fuser):
    """Frames at 30 Hz, then a frame stamped one period back (a driver's clock correction): that
    frame is fused on its own (not mixed with a decayed past), and the frame after it continues
    from it as from a first frame."""
    from diffmf_core.fuser import SteadyVideoFuser
    from test_steady_video import moving_texture

    frames = moving_texture(frames=6)
    period = 1 / 30
    steady = SteadyVideoFuser(fuser)
    for n in range(3):
        steady.fuse(*frames[n], stamp_s=100 + n * period)
    back = steady.fuse(*frames[3], stamp_s=100 + 1 * period)
    assert np.array_equal(back, fuser.fuse(*frames[3]))
    after = steady.fuse(*frames[4], stamp_s=100 + 2 * period)
    fresh = SteadyVideoFuser(fuser)
    fresh.fuse(*frames[3], stamp_s=100 + 1 * period)
    assert np.array_equal(after, fresh.fuse(*frames[4], stamp_s=100 + 2 * period))
    # the pair after the step back is smoothed (differs from the frame alone): the reset is not a stop
    assert not np.array_equal(after, fuser.fuse(*frames[4]))


# ---- the decoder's selection map: resolution and smoothing -------------------------------------

def _binomial_reduce(x: np.ndarray) -> np.ndarray:
    """Independent numpy pyr_down: [1 4 6 4 1]/16 along both axes, reflect padding, every 2nd pixel."""
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

    def blur(a: np.ndarray, axis: int) -> np.ndarray:
        padded = np.pad(a, [(2, 2) if ax == axis else (0, 0) for ax in range(2)], mode="reflect")
        return sum(k[i] * np.take(padded, np.arange(i, i + a.shape[axis]), axis=axis) for i in range(5))

    return blur(blur(x, 1), 0)[::2, ::2]


@pytest.mark.parametrize("shape, low", [((64, 80), (16, 20)), ((65, 81), (17, 21)), ((5, 7), (2, 2)),
                                        ((3, 9), (2, 5)), ((2, 6), (2, 6))])
def test_brighter_source_resolution_and_values(shape, low):
    """w = sigmoid(SELECT_SHARPNESS * pyr_down^2(ir - vi)) at a quarter of the size (ceil twice);
    a side of 2 or less is not reduced further. Values against an independent numpy reduction."""
    gen = torch.Generator().manual_seed(sum(shape))
    ir, vi = torch.rand(1, 1, *shape, generator=gen, dtype=torch.float64), torch.rand(1, 1, *shape, generator=gen,
                                                                                      dtype=torch.float64)
    w = brighter_source(ir, vi)
    assert tuple(w.shape) == (1, 1, *low)
    difference = (ir - vi)[0, 0].numpy()
    for _ in range(2):
        if min(difference.shape) > 2:
            difference = _binomial_reduce(difference)
    np.testing.assert_allclose(w[0, 0].numpy(), 1 / (1 + np.exp(-SELECT_SHARPNESS * difference)), atol=1e-12)


def test_brighter_source_smooths_a_single_hot_pixel_to_a_weak_preference():
    """A thermal pixel 0.3 above the visible one at (16, 16) of 64x64, elsewhere equal: two
    binomial reductions spread it to 0.3 (44/256)^2 at (4, 4) (hand value), so its region prefers
    the infrared only weakly (w = sigmoid(50 * 0.00886) = 0.609); a constant difference is kept."""
    vi = torch.full((1, 1, 64, 64), 0.4, dtype=torch.float64)
    ir = vi.clone()
    ir[0, 0, 16, 16] += 0.3
    w = brighter_source(ir, vi)[0, 0]
    peak = 0.3 * (44 / 256) ** 2
    assert float(w[4, 4]) == pytest.approx(1 / (1 + np.exp(-SELECT_SHARPNESS * peak)), abs=1e-9)
    assert float(w[4, 4]) == pytest.approx(0.6090, abs=1e-3) and float(w.max()) == float(w[4, 4])
    assert float(w[0, 0]) == pytest.approx(0.5) and float(w[10, 10]) == pytest.approx(0.5)
    flat = brighter_source(vi + 0.02, vi)
    assert torch.allclose(flat, torch.full_like(flat, 1 / (1 + np.exp(-1.0))), atol=1e-9)


# ---- found by the scoped mutation run of frames.py (issue 26) ------------------------------------

def _f(stamp: int, rx: int | None = None, frame_id: str = "x", camera=None) -> Frame:
    return Frame(np.zeros((4, 4), np.uint8), stamp, frame_id, stamp if rx is None else rx, camera=camera)


def test_router_counts_pairs_and_stamp_order_drops():
    router = FrameRouter(NodeSettings(source_timeout_s=0.15), None)
    assert router.pairs == 0
    t = 1_000 * MS
    for i in range(4):  # RGB alone: the 3rd and 4th go out alone
        router.add("rgb", _f(t + i * 100 * MS))
    for i in range(2):  # the thermal partners of the 3rd and 4th: their pairs would repeat a stamp
        router.add("thermal", _f(t + (2 + i) * 100 * MS, rx=t + 400 * MS + i))
    assert router.pairs == 2 and router.stamp_order_drops == 2


def test_router_passes_the_thermal_delay_to_its_synchronizer():
    router = FrameRouter(NodeSettings(thermal_delay_s=0.06), None)
    jobs = []
    for i in range(4):
        t = 1_000 * MS + i * 100 * MS
        jobs += router.add("rgb", _f(t)) + router.add("thermal", _f(t + 60 * MS))
    assert [j.thermal.stamp_ns - j.rgb.stamp_ns for j in jobs] == [60 * MS] * 4


def test_stale_boundary_and_start():
    router = FrameRouter(NodeSettings(source_timeout_s=10.0), None)
    assert not router.stale("rgb", 10**12)  # never seen, never started: not stale
    router.start(5 * 10**9)
    assert not router.stale("rgb", 5 * 10**9 + 10 * 10**9)  # exactly source_timeout_s: not yet
    assert router.stale("rgb", 5 * 10**9 + 10 * 10**9 + 1) and router.stale("thermal", 5 * 10**9 + 10 * 10**9 + 1)


def test_first_frame_after_a_shared_silence_waits_for_its_partner():
    """Started at t0, then only thermal frames from t0 + 1 s: the first waits (both cameras were
    silent together), the next ones go out alone; a thermal frame whose previous frame arrived at
    the same moment as the RGB camera's last frame also waits."""
    router = FrameRouter(NodeSettings(source_timeout_s=0.5), {"thermal": "t", "rgb": "r"})
    t0 = 1_000 * MS
    router.start(t0)
    out = [len(router.add("thermal", _f(t0 + 1_000 * MS + i * 100 * MS))) for i in range(3)]
    assert out == [0, 1, 1]
    same = FrameRouter(NodeSettings(source_timeout_s=0.5), {"thermal": "t", "rgb": "r"})
    same.add("thermal", _f(t0, rx=t0))
    same.add("rgb", _f(t0 + 5_000 * MS, rx=t0))  # no partner; arrived with the thermal frame
    assert same.add("thermal", _f(t0 + 1_000 * MS, rx=t0 + 1_000 * MS)) == []
    assert len(same.add("thermal", _f(t0 + 1_100 * MS, rx=t0 + 1_100 * MS))) == 1


def test_update_rebuilds_the_synchronizer_only_for_its_settings():
    settings = NodeSettings()
    router = FrameRouter(settings, None)
    sync = router.sync
    router.update(settings.replace(source_timeout_s=2.0, frame_id="base"))
    assert router.sync is sync and router.settings.source_timeout_s == 2.0 and router.frame_id() == "base"
    for key, value in (("sync_queue_size", 3), ("sync_slop_s", 0.03), ("sync_min_interval_s", 0.0),
                       ("thermal_delay_s", 0.01)):
        before = router.sync
        router.update(router.settings.replace(**{key: value}))
        assert router.sync is not before, key
    s = router.sync
    assert (s.queue_size, s.slop_ns, s.lower_bound_ns, s.offset_ns) == (3, 30 * MS, [0, 0], 10 * MS)


def test_a_pair_carries_its_own_frames_camera_not_the_last_one():
    """A pair of an older RGB frame (calibrated) completed after a newer RGB frame arrived without a
    fitting camera: the job has the older frame's camera."""
    cam = cameras()["rgb"]
    router = FrameRouter(NodeSettings(), {"thermal": "t", "rgb": "r"})
    t = 1_000 * MS
    router.add("rgb", _f(t, camera=cam))
    router.add("rgb", _f(t + 100 * MS, camera=None))
    (job,) = router.add("thermal", _f(t))
    assert job.rgb.stamp_ns == t and job.camera is cam


class FakePipeline:
    """Duck-typed FusionPipeline: records the stamps it gets; numpy scalar and float32 outputs."""

    def __init__(self) -> None:
        self.stamps: list = []

    def _frame(self, image, mode):
        from diffmf_core.live.pipeline import FusedFrame

        return FusedFrame(image, mode, np.eye(3, dtype=np.float32), np.float32(0.5), np.float32(1.5), "fake")

    def fuse_pair(self, thermal, rgb, stamp_ns=None):
        self.stamps.append(stamp_ns)
        return self._frame(rgb, 0)

    def single_source(self, rgb=None, thermal=None):
        return self._frame(rgb if rgb is not None else thermal, MODE_RGB_ONLY if rgb is not None else MODE_THERMAL_ONLY)


def test_run_job_fields_stamps_and_undistortion():
    from diffmf_core.live.camera import Undistorter
    from diffmf_core.live.frames import Job

    pipeline = FakePipeline()
    vi = np.random.default_rng(2).integers(0, 256, (32, 40, 3), np.uint8)
    ir = np.zeros((24, 32), np.uint8)
    pair = Job(Frame(ir, 7 * MS, "t", 0), Frame(vi, 5 * MS, "r", 0), 5 * MS, "r")
    r = run_job(pipeline, pair)
    assert pipeline.stamps == [5 * MS]  # the pair's stamp reaches a stamped fuser (video smoothing)
    assert (r.thermal_stamp_ns, r.rgb_stamp_ns, r.stamp_ns, r.frame_id) == (7 * MS, 5 * MS, 5 * MS, "r")
    assert r.homography.dtype == np.float64 and r.homography.shape == (9,)
    assert type(r.registration_quality) is float and type(r.inference_ms) is float and type(r.mode) is int
    assert (r.registration_quality, r.inference_ms, r.model_name) == (0.5, 1.5, "fake")
    for alone, stamps in ((Job(None, Frame(vi, 9 * MS, "r", 0), 9 * MS, "r"), (0, 9 * MS)),
                          (Job(Frame(ir, 8 * MS, "t", 0), None, 8 * MS, "r"), (8 * MS, 0))):
        r = run_job(pipeline, alone)
        assert (r.thermal_stamp_ns, r.rgb_stamp_ns) == stamps
    distorted = CameraModel(40, 32, RGB_K, (-0.3, 0.1, 0.0, 0.0, 0.0), "plumb_bob")
    r = run_job(pipeline, Job(None, Frame(vi, 10 * MS, "r", 0, camera=distorted), 10 * MS, "r"))
    expected = Undistorter().undistort(vi, distorted)
    assert not np.array_equal(expected, vi) and np.array_equal(r.image, expected)


# ---- found by the scoped mutation run of pyramid_decoder.py (issue 26) ---------------------------

def test_band_constants_beyond_the_table_are_one():
    from diffmf_core.modules.pyramid_decoder import DETAIL_GAIN, _of_band

    assert [_of_band(DETAIL_GAIN, k) for k in range(6)] == [*DETAIL_GAIN, 1.0, 1.0]
    assert _of_band((2.0, 3.0), 2) == 1.0


def test_resize_averages_blocks_down_and_interpolates_up():
    """Down: mean over r x r blocks (r from the height ratio, rounded up; partial blocks at the
    edge average what they hold), then bilinear to the exact size; up: bilinear, half-pixel centres."""
    from diffmf_core.modules.pyramid_decoder import _resize

    x = torch.arange(100, dtype=torch.float64).reshape(1, 1, 10, 10)
    down = _resize(x, (4, 4))  # r = 3: blocks rows/cols 0-2, 3-5, 6-8, 9
    expected = np.array([[np.mean(x[0, 0, i:i + 3, j:j + 3].numpy()) for j in (0, 3, 6, 9)] for i in (0, 3, 6, 9)])
    np.testing.assert_allclose(down[0, 0].numpy(), expected)
    wide = _resize(torch.ones(1, 1, 16, 16, dtype=torch.float64).cumsum(-1), (8, 32))  # r from the height: 2
    pooled = torch.nn.functional.avg_pool2d(torch.ones(1, 1, 16, 16, dtype=torch.float64).cumsum(-1), 2)
    np.testing.assert_allclose(wide.numpy(), torch.nn.functional.interpolate(pooled, size=(8, 32), mode="bilinear",
                                                                             align_corners=False).numpy())
    tall = _resize(torch.zeros(1, 1, 8, 5), (8, 8))
    assert tuple(tall.shape) == (1, 1, 8, 8)
    up = _resize(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]), (4, 4))
    np.testing.assert_allclose(up[0, 0, 0].numpy(), [0.0, 0.25, 0.75, 1.0])  # half-pixel centres, edges clamped


def test_brighter_source_of_a_narrow_image_is_not_reduced_below_three_pixels():
    ir, vi = torch.rand(1, 1, 9, 2, dtype=torch.float64), torch.rand(1, 1, 9, 2, dtype=torch.float64)
    w = brighter_source(ir, vi)
    np.testing.assert_allclose(w.numpy(), torch.sigmoid(SELECT_SHARPNESS * (ir - vi)).numpy())


def test_decoder_maps_keep_the_feature_grid():
    from diffmf_core.modules.pyramid_decoder import PyramidDecoder

    decoder = PyramidDecoder(dim=8, levels=4)
    assert tuple(decoder.maps(torch.zeros(2, 6, 10, 8)).shape) == (2, 9, 6, 10)


def test_rule_contrast_is_about_each_images_own_mean():
    """Two images in a batch, each a vertical ramp (no detail): the rule stretches each about its
    own mean by CONTRAST (not about the batch's, not row by row)."""
    from diffmf_core.modules.pyramid_decoder import CONTRAST, rule_fusion

    ramp = torch.linspace(0, 1, 64, dtype=torch.float64)[:, None].expand(64, 48)
    x = torch.stack([0.3 + 0.4 * ramp, 0.1 + 0.2 * ramp])[:, None]
    out = rule_fusion(x, x, 5)
    inner = (slice(None), 0, slice(16, 48), slice(16, 32))  # away from the borders of the pyramid
    np.testing.assert_allclose(out.mean(dim=(-2, -1))[:, 0].numpy(), x.mean(dim=(-2, -1))[:, 0].numpy(), atol=2e-3)
    spread_out = (out[inner] - out.mean(dim=(-2, -1), keepdim=True)[:, 0]).std(dim=(-2, -1))
    spread_in = (x[inner] - x.mean(dim=(-2, -1), keepdim=True)[:, 0]).std(dim=(-2, -1))
    np.testing.assert_allclose((spread_out / spread_in).numpy(), [CONTRAST, CONTRAST], rtol=0.02)


def test_rule_and_blend_are_clipped_below_at_zero():
    """A warm square on black in both sources' dark surroundings: sharpening undershoots below 0
    around it (rule: -0.030 before clipping) and so does mixing the two sources' bands with a
    soft selection (blend: -0.012); both outputs are clipped to [0, 1]."""
    from diffmf_core.modules.pyramid_decoder import rule_fusion, source_blend

    ir = torch.zeros((1, 1, 32, 32), dtype=torch.float64)
    ir[..., 12:20, 12:20] = 1.0
    vi = torch.zeros_like(ir)
    for out in (rule_fusion(ir, vi, 4), source_blend(ir, vi, 4)):
        assert float(out.min()) == 0.0 and float(out.max()) <= 1.0


def test_source_blend_of_a_tall_narrow_image_is_the_unit_gain_rule(monkeypatch):
    """The blend's pyramid depth comes from the smaller side (here the width, 12 px: two levels)."""
    from diffmf_core.modules import pyramid_decoder

    monkeypatch.setattr(pyramid_decoder, "DETAIL_GAIN", (1.0,) * 4)
    monkeypatch.setattr(pyramid_decoder, "CONTRAST", 1.0)
    gen = torch.Generator().manual_seed(5)
    ir, vi = (torch.rand(1, 1, 64, 12, generator=gen, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(pyramid_decoder.source_blend(ir, vi, 5), pyramid_decoder.rule_fusion(ir, vi, 5),
                               atol=1e-9, rtol=0)


# ---- found by the scoped mutation run of fuser.py (issue 26) --------------------------------------

def test_resolve_device_table(monkeypatch):
    from diffmf_core.fuser import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError) as err:
        resolve_device("cuda")
    assert str(err.value) == "device 'cuda' requested but CUDA is not available"
    with pytest.raises(RuntimeError) as err:
        resolve_device("mps")
    assert str(err.value) == "unsupported device 'mps' (use auto, cpu, cuda or cuda:N)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device() == torch.device("cuda") and resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(RuntimeError) as err:
        resolve_device("cuda:2")
    assert str(err.value) == "device 'cuda:2' requested but only 2 CUDA device(s)"


def test_luminance_tensors_are_float32_and_sizes_must_match():
    from diffmf_core.fuser import luminance_tensors

    ir, vi = luminance_tensors(np.zeros((4, 5)), np.ones((4, 5)))  # float64 in
    assert ir.dtype == vi.dtype == torch.float32 and tuple(ir.shape) == (1, 1, 4, 5) and float(vi.sum()) == 20
    with pytest.raises(ValueError) as err:
        luminance_tensors(np.zeros((4, 5), np.float32), np.zeros((4, 6), np.float32))
    assert str(err.value) == "size mismatch: ir (4, 5), vi (4, 6)"


def test_fuser_defaults_and_what_it_passes_to_load_model(monkeypatch):
    import inspect

    from diffmf_core import fuser as fuser_module
    from diffmf_core.common.paths import default_weights_path

    defaults = {k: p.default for k, p in inspect.signature(fuser_module.Fuser).parameters.items()}
    assert defaults == {"weights": None, "preset": None, "device": "auto", "half": True, "scan_backend": None,
                        "cuda_graph": False}
    assert fuser_module.Fuser().device == fuser_module.resolve_device("auto")  # the default device is auto
    calls, kept = [], []
    load = fuser_module.load_model
    monkeypatch.setattr(fuser_module, "load_model", lambda *a, **kw: (calls.append((a, kw)), load(*a, **kw))[1])
    monkeypatch.setattr(fuser_module, "keep_freed_memory", lambda: kept.append(True))
    fuser = fuser_module.Fuser(preset="live", device="cpu", half=True, scan_backend="naive")
    assert calls == [((default_weights_path("live"), torch.device("cpu")),
                      {"expect_preset": "live", "scan_backend": "naive"})]
    assert kept == [True] and fuser.weights_path == default_weights_path("live")
    assert fuser.config.scan_backend == "naive" and fuser.dtype == torch.float32  # no half precision on the CPU
    assert fuser.forward is fuser.model and fuser.name == "diffmf-live"


def test_warmup_runs_one_blank_frame_of_the_expected_size(monkeypatch):
    from diffmf_core.fuser import Fuser

    fuser = Fuser(device="cpu")
    seen = []
    monkeypatch.setattr(fuser, "fuse_y", lambda ir, vi: seen.append((ir.shape, vi.shape, ir.dtype, float(ir.max()),
                                                                      float(vi.max()))))
    fuser.warmup()
    fuser.warmup(48, 64)
    assert seen == [((512, 640), (512, 640), np.float32, 0.0, 0.0), ((48, 64), (48, 64), np.float32, 0.0, 0.0)]


def test_release_freed_memory_trims_glibc(monkeypatch):
    from diffmf_core import fuser as fuser_module

    trims = []

    class Libc:
        def malloc_trim(self, pad):
            trims.append(pad)

    monkeypatch.setattr(fuser_module, "_glibc", lambda: Libc())
    fuser_module.release_freed_memory()
    assert trims == [0]
    monkeypatch.setattr(fuser_module, "_glibc", lambda: None)
    fuser_module.release_freed_memory()  # no glibc: nothing to do
    assert trims == [0]


class ConstantFuser:
    """Stands in for Fuser in SteadyVideoFuser: its 'network' outputs a constant image."""

    def __init__(self, value: float) -> None:
        self.value, self.name, self.device = value, "constant", torch.device("cpu")
        self.pyramid_levels = 4

    def fuse_tensor(self, ir, vi):
        return torch.full_like(ir, self.value)


@pytest.mark.parametrize("value, bound", [(1.0, 1.0), (0.0, 0.0)])
def test_smoothed_enhancement_is_clipped_to_the_unit_range(value, bound):
    """Flat frames at 0.2 then 0.25 (one scene) fused as 1.0: the second frame's blend plus the
    smoothed enhancement is 1.035 (0.25 + 0.3 * 0.75 + 0.7 * 0.8), clipped to 1; mirrored (0.8,
    0.75, fused 0.0): -0.035, clipped to 0."""
    from diffmf_core.fuser import SteadyVideoFuser

    steady = SteadyVideoFuser(ConstantFuser(value))
    levels = (0.2, 0.25) if value == 1.0 else (0.8, 0.75)
    for level in levels:
        out = steady.fuse_y(np.full((16, 16), level, np.float32), np.full((16, 16), level, np.float32))
    assert out.dtype == np.float32 and np.all(out == bound)


def test_a_repeated_stamp_is_fused_on_its_own(fuser):
    from diffmf_core.fuser import SteadyVideoFuser
    from test_steady_video import moving_texture

    frames = moving_texture(frames=3)
    steady = SteadyVideoFuser(fuser)
    steady.fuse(*frames[0], stamp_s=10.0)
    steady.fuse(*frames[1], stamp_s=10.0 + 1 / 30)
    assert np.array_equal(steady.fuse(*frames[2], stamp_s=10.0 + 1 / 30), fuser.fuse(*frames[2]))
