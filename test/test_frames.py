"""diffmf_core.live.frames.FrameRouter: the node's and the bag tool's routing and stamp/frame rule,
driven with scripted arrival times (no ROS): output stamps strictly increase through start-up,
drop-out and return of either camera, in either order; the stamp and frame_id come from the output
geometry's camera; and diffmf_core.live.settings.NodeSettings validation."""
from __future__ import annotations

import numpy as np
import pytest

from diffmf_core.live.frames import Frame, FrameRouter
from diffmf_core.live.settings import SPECS, NodeSettings, SettingsError

MS = 1_000_000
PERIOD = 100 * MS  # 10 Hz cameras
DELAY = 7 * MS  # thermal stamps 7 ms after RGB: distinct stamps, within the 20 ms slop
IMG = np.zeros((4, 4), np.uint8)


def frame(stamp: int, frame_id: str) -> Frame:
    return Frame(IMG, stamp, frame_id, rx_ns=stamp)  # arrival time = stamp (a bag-like clock)


def play(router: FrameRouter, schedule) -> list:
    """schedule: list of (source, rgb_base_stamp); thermal frames get +DELAY. Returns jobs in order."""
    jobs = []
    for source, t in schedule:
        stamp = t + DELAY if source == "thermal" else t
        jobs += router.add(source, frame(stamp, "flir" if source == "thermal" else "cam"))
    return jobs


def scenario(first: str) -> list:
    """``first`` camera alone for 1 s (start-up), both 1 s, the other one drops out 1 s, returns 1 s."""
    other = "rgb" if first == "thermal" else "thermal"
    sched, t = [], 10_000 * MS
    for _ in range(10):
        sched.append((first, t)); t += PERIOD
    for _ in range(10):
        sched += [(first, t), (other, t)]; t += PERIOD
    for _ in range(10):
        sched.append((first, t)); t += PERIOD
    for _ in range(10):
        sched += [(other, t), (first, t)]; t += PERIOD
    return sched


@pytest.mark.parametrize("geometry", ["rgb", "thermal"])
@pytest.mark.parametrize("first", ["rgb", "thermal"])
def test_stamps_strictly_increase_through_start_drop_and_return(first, geometry):
    settings = NodeSettings(output_geometry=geometry, source_timeout_s=0.35)
    router = FrameRouter(settings, {"thermal": "cal_thermal", "rgb": "cal_rgb"})
    jobs = play(router, scenario(first))
    stamps = [j.stamp_ns for j in jobs]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
    kinds = [("T" if j.thermal else "") + ("R" if j.rgb else "") for j in jobs]
    alone = "T" if first == "thermal" else "R"
    # single frames at start-up and during the drop-out, fused pairs in between and after the return
    assert kinds.count("TR") >= 17 and kinds.count(alone) >= 10, kinds
    assert kinds[-5:] == ["TR"] * 5
    geometry_source = "thermal" if geometry == "thermal" else "rgb"
    first_pair = kinds.index("TR")
    for n, job in enumerate(jobs):
        if job.thermal and job.rgb:  # pairs: the geometry camera's stamp
            assert job.stamp_ns == getattr(job, geometry_source).stamp_ns
        else:  # one camera: its own stamp
            assert job.stamp_ns == (job.thermal or job.rgb).stamp_ns
        # frame_id: the geometry camera's as last received; the calibration's before it was ever seen
        seen = first == geometry_source or n >= first_pair
        expected = ("flir" if geometry_source == "thermal" else "cam") if seen else "cal_" + geometry_source
        assert job.frame_id == expected, (n, job.frame_id, expected)


def test_single_frame_already_published_is_not_repeated_by_its_pair():
    """RGB first: its frames go out alone; when thermal arrives, the pair of an RGB frame already
    published alone would repeat its stamp: it is dropped and counted."""
    router = FrameRouter(NodeSettings(source_timeout_s=0.15), None)
    t = 0
    jobs = []
    for i in range(4):
        t = 1_000 * MS + i * PERIOD
        jobs += router.add("rgb", frame(t, "cam"))
    assert [bool(j.thermal) for j in jobs] == [False, False]  # 3rd and 4th frames, after 0.15 s
    jobs += router.add("thermal", frame(t + DELAY, "flir"))  # pairs with the RGB frame at t
    assert len(jobs) == 2 and router.stamp_order_drops == 1
    later = router.add("rgb", frame(t + PERIOD, "cam")) + router.add("thermal", frame(t + PERIOD + DELAY, "flir"))
    assert [j.stamp_ns for j in later] == [t + PERIOD] and later[0].thermal is not None


def test_no_placeholder_frame_id_and_the_output_camera_of_each_job():
    """No frame_id parameter and none in the calibration: thermal frames alone (RGB geometry) are
    held back until the RGB camera names its frame, then carry it; every job carries the camera
    model of the RGB pixels (the RGB frame's, or for thermal alone the last RGB frame's)."""
    from diffmf_core.live.camera import CameraModel

    router = FrameRouter(NodeSettings(source_timeout_s=0.15), {"thermal": "", "rgb": ""})
    cam = CameraModel(4, 4, (2.0, 0, 1.5, 0, 2.0, 1.5, 0, 0, 1.0), (0.0,) * 5, "plumb_bob")
    t, jobs = 1_000 * MS, []
    for _ in range(5):  # thermal alone from the start
        jobs += router.add("thermal", frame(t + DELAY, "flir"))
        t += PERIOD
    assert jobs == [] and router.frame_id_drops == 3  # 3rd..5th would go out alone
    for _ in range(3):  # both: pairs in the RGB camera's frame
        jobs += router.add("rgb", Frame(IMG, t, "cam", t, camera=cam)) + router.add("thermal", frame(t + DELAY, "flir"))
        t += PERIOD
    for _ in range(4):  # RGB silent: thermal alone, now in the RGB camera's known frame
        jobs += router.add("thermal", frame(t + DELAY, "flir"))
        t += PERIOD
    kinds = [("T" if j.thermal else "") + ("R" if j.rgb else "") for j in jobs]
    assert kinds[:3] == ["TR"] * 3 and set(kinds[3:]) == {"T"} and len(kinds) >= 5, kinds
    assert {j.frame_id for j in jobs} == {"cam"} and all(j.camera is cam for j in jobs)


def test_frame_id_override_and_back_jump_starts_a_new_epoch():
    router = FrameRouter(NodeSettings(frame_id="base_fused"), None)
    out = []
    for t in (5_000 * MS, 5_100 * MS, 5_200 * MS, 1_000 * MS, 1_100 * MS, 1_200 * MS):  # bag loop after 3
        out += router.add("rgb", frame(t, "cam")) + router.add("thermal", frame(t + DELAY, "flir"))
    assert [j.frame_id for j in out] == ["base_fused"] * len(out)
    assert [j.stamp_ns // MS for j in out] == [5_000, 5_100, 5_200, 1_000, 1_100, 1_200]


def test_settings_defaults_ranges_and_errors():
    s = NodeSettings()
    assert NodeSettings.check(s.as_dict()) == []
    assert all(spec.description for spec in SPECS)
    with pytest.raises(SettingsError) as err:
        NodeSettings.from_mapping({"sync_slop_s": 2.0, "output_geometry": "side", "device": "tpu"})
    text = str(err.value)
    assert "sync_slop_s" in text and "output_geometry" in text
    assert NodeSettings.from_mapping({"sync_slop_s": 0, "use_sim_time": True}).sync_slop_s == 0.0
    assert s.replace(output_geometry="thermal").geometry_source == "thermal"
    assert s.replace(output_geometry="fixed").geometry_source == "rgb"
    from diffmf_core.baselines import CLASSICAL_FUSERS
    assert set(NodeSettings.__dataclass_fields__["fallback_fuser"].metadata["choices"]) == set(CLASSICAL_FUSERS)


def test_node_reference_documents_every_parameter_and_topic():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "node.md").read_text()
    for spec in SPECS:
        assert f"| `{spec.name}` |" in doc, spec.name
    for topic in ("thermal/image_raw", "rgb/image_raw", "thermal/camera_info", "rgb/camera_info", "fused/image",
                  "fused/camera_info", "fused/info", "fused/image/compressed", "/diagnostics"):
        assert f"`{topic}" in doc, topic
