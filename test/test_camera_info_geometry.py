"""CameraInfo beyond k and d (issue 24): binning and ROI as image_geometry applies them, R and P as
image_proc's rectify uses them, fused/camera_info of each output (scaled projection, uncalibrated
when the image did not fit its camera_info), and `diffmf bag fuse` reading camera_info and
writing /fused/camera_info."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from diffmf_core.live.camera import CameraModel, Undistorter, camera_for, camera_info_topic, output_camera_info
from diffmf_core.live.frames import Frame, FrameRouter, run_job
from diffmf_core.live.pipeline import FusionPipeline
from diffmf_core.live.settings import NodeSettings

K = (400.0, 0.0, 319.5, 0.0, 410.0, 239.5, 0.0, 0.0, 1.0)
D = (-0.2, 0.05, 0.001, -0.001, 0.0)


def info(width=640, height=480, k=K, d=D, r=(0.0,) * 9, p=(0.0,) * 12, binning=(0, 0), roi=(0, 0, 0, 0)):
    return SimpleNamespace(width=width, height=height, k=list(k), d=list(d), distortion_model="plumb_bob",
                           r=list(r), p=list(p), binning_x=binning[0], binning_y=binning[1],
                           roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]))


def test_binning_and_roi_give_the_camera_of_the_image_that_arrives():
    model = CameraModel.from_msg(info(binning=(2, 2), roi=(100, 40, 400, 300),
                                      p=(380.0, 0, 310.0, -38.0, 0, 390.0, 235.0, 0, 0, 0, 1.0, 0)))
    assert (model.width, model.height) == (200, 150)  # the ROI, binned
    np.testing.assert_allclose(model.matrix, [[200.0, 0, (319.5 - 100) / 2], [0, 205.0, (239.5 - 40) / 2], [0, 0, 1]])
    np.testing.assert_allclose(model.projection, [[190.0, 0, 105.0, -19.0], [0, 195.0, 97.5, 0], [0, 0, 1, 0]])
    plain = CameraModel.from_msg(info())
    assert (plain.width, plain.height) == (640, 480) and plain.p == () and np.array_equal(plain.rotation, np.eye(3))


def test_rectification_uses_r_and_p_like_image_proc():
    angle = np.deg2rad(3.0)
    r = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    p = np.array([[350.0, 0, 300.0, 0], [0, 350.0, 230.0, 0], [0, 0, 1, 0]])
    model = CameraModel.from_msg(info(r=r.reshape(9), p=p.reshape(12)))
    assert model.needs_rectification
    raw = np.random.default_rng(3).integers(0, 256, (480, 640), np.uint8)
    maps = cv2.initUndistortRectifyMap(np.reshape(K, (3, 3)), np.asarray(D), r, p[:, :3], (640, 480), cv2.CV_16SC2)
    expected = cv2.remap(raw, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    np.testing.assert_array_equal(Undistorter().undistort(raw, model), expected)
    # no distortion, R = I, P = [K | 0]: nothing to do (the image itself comes back)
    p_of_k = np.hstack([np.reshape(K, (3, 3)), np.zeros((3, 1))]).reshape(12)
    ideal = CameraModel.from_msg(info(d=(0.0,) * 5, r=np.eye(3).reshape(9), p=p_of_k))
    assert not ideal.needs_rectification and Undistorter().undistort(raw, ideal) is raw


def test_output_camera_info_is_rectified_scaled_and_uncalibrated_without_a_fitting_camera():
    p = (380.0, 0, 310.0, -38.0, 0, 390.0, 235.0, 0, 0, 0, 1.0, 0)
    out = output_camera_info(CameraModel.from_msg(info(p=p)), (320, 240))  # half size
    np.testing.assert_allclose(np.reshape(out.p, (3, 4)), [[190.0, 0, 154.75, -19.0], [0, 195.0, 117.25, 0],
                                                          [0, 0, 1, 0]])
    np.testing.assert_allclose(out.k, np.reshape(out.p, (3, 4))[:, :3].reshape(9))
    assert not any(out.d) and out.r == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    none = output_camera_info(None, (320, 240))
    assert not any(none.k) and not any(none.p)
    model = CameraModel.from_msg(info())
    assert camera_for(np.zeros((480, 640), np.uint8), model) == (model, "")
    assert camera_for(np.zeros((240, 320), np.uint8), model) == (None, "image 320x240 but camera_info 640x480")
    assert camera_info_topic("/flir/image_raw") == "/flir/camera_info"
    assert camera_info_topic("thermal/image_raw") == "thermal/camera_info"
    assert camera_info_topic("/image") == "/camera_info"


def test_each_output_carries_its_own_geometry_camera():
    """An RGB frame whose size did not fit its camera_info (camera None) gives an uncalibrated
    fused/camera_info, even right after frames that did."""
    router = FrameRouter(NodeSettings(), {"thermal": "t", "rgb": "r"})
    pipeline = FusionPipeline(None, fallback="mean")
    cam = CameraModel(16, 12, (20.0, 0, 7.5, 0, 20.0, 5.5, 0, 0, 1.0), (0.0,) * 5, "plumb_bob")
    ir, vi = np.zeros((12, 16), np.uint8), np.zeros((12, 16, 3), np.uint8)
    results = []
    for i, camera in enumerate((cam, None)):
        t = (1 + i) * 10**9
        jobs = router.add("rgb", Frame(vi, t, "cam", t, camera=camera)) + router.add("thermal", Frame(ir, t, "ir", t))
        results += [run_job(pipeline, job) for job in jobs]
    assert len(results) == 2
    np.testing.assert_allclose(results[0].camera_info.k, cam.k)
    assert not any(results[1].camera_info.k)


@pytest.fixture
def bag_with_camera_info(tmp_path):
    from diffmf_core.tools import bag as bags
    from test_bags import write_bag

    store = bags.make_typestore()
    types = store.types
    rng = np.random.default_rng(4)

    def cam_msg(k, d, t, width=64, height=48):
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return types["sensor_msgs/msg/CameraInfo"](
            header=bags.header(store, t, "x"), height=height, width=width, distortion_model="plumb_bob",
            d=np.asarray(d, float), k=np.asarray(k, float), r=np.eye(3).reshape(9), p=np.zeros(12),
            binning_x=0, binning_y=0, roi=roi)

    rgb_k = (60.0, 0, 31.5, 0, 60.0, 23.5, 0, 0, 1.0)
    msgs = [("/thermal/camera_info", bags.CAMERA_INFO_TYPE, cam_msg(rgb_k, (-0.3, 0.1, 0, 0, 0), 1), 1),
            ("/rgb/camera_info", bags.CAMERA_INFO_TYPE, cam_msg(rgb_k, (0.0,) * 5, 1), 1)]
    for i in range(4):
        t = 10**9 + i * 10**8
        msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE,
                     bags.image_msg(store, rng.integers(0, 256, (48, 64), np.uint8), t, "thermal_camera"), t))
        msgs.append((bags.RGB_TOPIC, bags.IMAGE_TYPE,
                     bags.image_msg(store, rng.integers(0, 256, (48, 64, 3), np.uint8), t, "rgb_camera"), t))
        if i == 1:  # a camera_info of another size: the next thermal frames are used raw, counted
            msgs.append(("/thermal/camera_info", bags.CAMERA_INFO_TYPE,
                         cam_msg(rgb_k, (-0.3, 0.1, 0, 0, 0), t + 1, 32, 24), t + 1))
    write_bag(tmp_path / "in", msgs)
    return tmp_path / "in", rgb_k


def test_bag_fuse_reads_camera_info_and_writes_fused_camera_info(tmp_path, bag_with_camera_info):
    from diffmf_core.tools import bag as bags

    bag, rgb_k = bag_with_camera_info
    summary = bags.fuse_bag(bag, tmp_path / "out", {"fuser": "classical"}, progress=False)
    assert summary.fused == 4 and summary.decode_errors == {"camera_info_size": 2}
    store = bags.make_typestore()
    with bags.open_reader(tmp_path / "out") as reader:
        conns = [c for c in reader.connections if c.topic == "/fused/camera_info"]
        infos = [store.deserialize_cdr(raw, bags.CAMERA_INFO_TYPE) for _, _, raw in bags.iter_messages(reader, conns)]
        images = [c for c in reader.connections if c.topic == bags.FUSED_TOPIC]
        stamps = [store.deserialize_cdr(raw, bags.IMAGE_TYPE).header.stamp
                  for _, _, raw in bags.iter_messages(reader, images)]
    assert [(i.header.stamp.sec, i.header.stamp.nanosec) for i in infos] == [(s.sec, s.nanosec) for s in stamps]
    for msg in infos:  # the RGB camera (output geometry) always fitted: its k, rectified
        np.testing.assert_allclose(msg.k, rgb_k)
        assert (msg.width, msg.height) == (64, 48) and not msg.d.any()
