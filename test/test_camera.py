"""diffmf_core.live.camera: undistortion with CameraInfo intrinsics on a synthetically distorted image
(known k, d), cached remap tables, and the output camera matrix; and the node using camera_info
(in this process, real rclpy): a distorted thermal image comes out undistorted, fused/camera_info
carries the output geometry camera's intrinsics with the output's stamp and frame_id."""
from __future__ import annotations

import rosutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from diffmf_core.live.camera import CameraModel, Undistorter, output_camera_matrix

W, H = 160, 128
K = (150.0, 0.0, 80.0, 0.0, 150.0, 64.0, 0.0, 0.0, 1.0)
D = (-0.35, 0.12, 0.0, 0.0, 0.0)  # strong barrel distortion, as of a wide thermal lens


def ideal() -> np.ndarray:
    """A grid of bright lines: misplaced by distortion, it no longer matches."""
    img = np.full((H, W), 40, np.uint8)
    img[::16, :] = 220
    img[:, ::16] = 220
    return cv2.GaussianBlur(img, (3, 3), 0)


def distort(img: np.ndarray, model: CameraModel) -> np.ndarray:
    """What the lens makes of ``img``: each distorted pixel samples the ideal image where the
    undistorted ray hits it."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pts = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, model.matrix, np.asarray(model.d), P=model.matrix).reshape(H, W, 2)
    return cv2.remap(img, und[..., 0].astype(np.float32), und[..., 1].astype(np.float32), cv2.INTER_LINEAR)


def info_msg(k=K, d=D, model="plumb_bob", width=W, height=H):
    return SimpleNamespace(k=list(k), d=list(d), distortion_model=model, width=width, height=height)


def central_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a[16:-16, 16:-16].astype(int) - b[16:-16, 16:-16].astype(int)).mean())


def test_undistortion_restores_the_ideal_image_and_caches_its_maps():
    model = CameraModel.from_msg(info_msg())
    truth = ideal()
    raw = distort(truth, model)
    und = Undistorter()
    fixed = und.undistort(raw, model)
    before, after = central_error(raw, truth), central_error(fixed, truth)
    print(f"mean abs error vs the ideal image: distorted {before:.1f}, undistorted {after:.1f}")
    assert after < 0.25 * before and after < 6.0
    und.undistort(raw, model)
    assert und.rebuilds == 1  # same camera_info: cached maps
    und.undistort(raw, model._replace(d=(-0.3, 0.1, 0.0, 0.0, 0.0)))
    assert und.rebuilds == 2  # changed camera_info: rebuilt
    assert und.undistort(raw, None) is raw and und.undistort(raw, model._replace(d=(0.0,) * 5)) is raw
    with pytest.raises(ValueError):
        und.undistort(raw[:64], model)


def test_camera_model_from_msg_and_output_matrix():
    assert CameraModel.from_msg(info_msg(k=(0.0,) * 9)) is None  # uncalibrated
    with pytest.raises(ValueError):
        CameraModel.from_msg(info_msg(model="weird_model"))
    fisheye = CameraModel.from_msg(info_msg(model="equidistant", d=(0.05, 0.0, 0.0, 0.0)))
    assert Undistorter().undistort(ideal(), fisheye).shape == (H, W)
    model = CameraModel.from_msg(info_msg())
    np.testing.assert_allclose(output_camera_matrix(model, (W, H)), model.matrix)
    half = output_camera_matrix(model, (W // 2, H // 2))  # cv2.resize: x' = 0.5 x - 0.25
    np.testing.assert_allclose(half, [[75.0, 0.0, 39.75], [0.0, 75.0, 31.75], [0.0, 0.0, 1.0]])


rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")


def test_node_undistorts_with_camera_info_and_publishes_fused_camera_info():
    fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from diffmf_core.live.sync import split_ns, stamp_to_ns

    model = CameraModel.from_msg(info_msg())
    truth = ideal()
    raw_ir = distort(truth, model)
    black = np.zeros((H, W, 3), np.uint8)
    rgb_k = (200.0, 0.0, 79.5, 0.0, 201.0, 63.5, 0.0, 0.0, 1.0)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = fusion_node.FusionNode(context=context, parameter_overrides=[
        Parameter("fuser", value="classical"), Parameter("fallback_fuser", value="max"),
        Parameter("output_encoding", value="mono8"), Parameter("use_sim_time", value=True)])
    rig = rclpy.create_node("camera_rig", context=context)
    images, infos = {}, {}
    rig.create_subscription(Image, "fused/image", lambda m: images.__setitem__(stamp_to_ns(m.header.stamp), m), 50)
    rig.create_subscription(CameraInfo, "fused/camera_info",
                            lambda m: infos.__setitem__(stamp_to_ns(m.header.stamp), m), 50)
    img_pub = {s: rig.create_publisher(Image, f"{s}/image_raw", qos_profile_sensor_data) for s in ("thermal", "rgb")}
    info_pub = {s: rig.create_publisher(CameraInfo, f"{s}/camera_info", qos_profile_sensor_data)
                for s in ("thermal", "rgb")}
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(rig)

    def spin(seconds, until=lambda: False):
        rosutil.spin_for(executor, seconds, until)

    def msg(array, encoding, stamp, frame_id):
        m = Image(height=H, width=W, encoding=encoding, step=array.strides[0], data=array.tobytes(), check_fields=False)
        m.header.stamp.sec, m.header.stamp.nanosec = split_ns(stamp)
        m.header.frame_id = frame_id
        return m

    def send_pair(stamp):
        img_pub["rgb"].publish(msg(black, "bgr8", stamp, "rgb_optical"))
        img_pub["thermal"].publish(msg(raw_ir, "mono8", stamp + 5_000_000, "flir_optical"))
        spin(3.0, lambda: stamp in images and stamp in infos)
        return images.get(stamp), infos.get(stamp)

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        spin(10.0, lambda: all(p.get_subscription_count() > 0 for p in img_pub.values()))
        spin(0.5)
        stamp = 3_000_000_000_000
        for _ in range(20):  # no camera_info yet: the raw (distorted) thermal image goes through
            stamp += 100_000_000
            plain, plain_info = send_pair(stamp)
            if plain is not None:
                break
        assert plain is not None and plain_info is not None, "no output"
        assert not any(plain_info.k) and (plain_info.width, plain_info.height) == (W, H)
        for s, k, d in (("thermal", K, D), ("rgb", rgb_k, (0.0,) * 5)):
            info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", k=list(k), d=list(d))
            info_pub[s].publish(info)
        spin(10.0, lambda: len(node._cameras) == 2)
        assert len(node._cameras) == 2, "camera_info not received"
        stamp += 100_000_000
        fixed, fixed_info = send_pair(stamp)
        assert fixed is not None and fixed_info is not None
    finally:
        executor.shutdown()
        node.stop()
        node.destroy_node()
        rig.destroy_node()
        context.try_shutdown()
    as_array = lambda m: np.frombuffer(bytes(m.data), np.uint8).reshape(H, W)  # noqa: E731
    before, after = central_error(as_array(plain), truth), central_error(as_array(fixed), truth)
    print(f"node output vs the ideal thermal image: without camera_info {before:.1f}, with {after:.1f}")
    assert after < 0.25 * before
    # fused/camera_info: same stamp and frame_id as the image, the RGB camera's (output geometry) k
    assert fixed_info.header.frame_id == fixed.header.frame_id == "rgb_optical"
    assert (fixed_info.width, fixed_info.height) == (W, H)
    np.testing.assert_allclose(fixed_info.k, rgb_k)
    assert not any(fixed_info.d)
