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
        jobs += router.add("rgb", Frame(img, t, ids["rgb"], t)) + router.add("thermal", Frame(img, t, ids["thermal"], t))
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
