"""Shared by the ``diffmf bag`` actions: topic and type names, the typestore with FusionInfo,
message builders and decoding, atomic bag output, reading and writing bags."""
from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from diffmf_core.common.outputs import sigterm_as_interrupt  # noqa: F401 - the bag tools' name for it
from diffmf_core.common.paths import repo_root
from diffmf_core.live.sync import split_ns


THERMAL_TOPIC = "/thermal/image_raw"
RGB_TOPIC = "/rgb/image_raw"
FUSED_TOPIC = "/fused/image"
INFO_TOPIC = "/fused/info"
THERMAL_FRAME = "thermal_camera"
RGB_FRAME = "rgb_camera"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
FUSION_INFO_TYPE = "diffmf_ros/msg/FusionInfo"
FUSION_INFO_MSG = repo_root() / "msg" / "FusionInfo.msg"
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 9  # rosbag2 metadata version written by jazzy and kilted
MODE_NAMES = {0: "fused", 1: "rgb-only", 2: "thermal-only", 3: "classical"}  # FusionInfo.MODE_*
MAX_DROP = 0.9
MAX_STAMP_S = 2**31 - 1  # builtin_interfaces/Time.sec is an int32


class BagError(Exception):
    """A bag that cannot be read or written as asked; the message says what and where."""


def make_typestore():
    """ROS 2 kilted typestore with ``diffmf_ros/msg/FusionInfo`` registered from its .msg file."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    if not FUSION_INFO_MSG.is_file():
        raise BagError(f"{FUSION_INFO_MSG}: FusionInfo definition not found (source checkout expected)")
    store.register(get_types_from_msg(FUSION_INFO_MSG.read_text(), FUSION_INFO_TYPE))
    return store


def ns_to_time(store, ns: int):
    """builtin_interfaces/Time for a stamp in nanoseconds."""
    sec, nanosec = split_ns(ns)
    return store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def header(store, stamp_ns: int, frame_id: str):
    """std_msgs/Header."""
    return store.types["std_msgs/msg/Header"](stamp=ns_to_time(store, stamp_ns), frame_id=frame_id)


def image_msg(store, img: np.ndarray, stamp_ns: int, frame_id: str, encoding: str | None = None):
    """sensor_msgs/Image (mono8 for HxW, bgr8 for HxWx3 unless ``encoding`` says otherwise)."""
    from diffmf_core.live.imagecodec import encode_image

    encoding = encoding or ("mono8" if img.ndim == 2 else "bgr8")
    height, width, enc, step, data = encode_image(img, encoding)
    return store.types[IMAGE_TYPE](
        header=header(store, stamp_ns, frame_id), height=height, width=width, encoding=enc,
        is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))


def compressed_msg(store, img: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90):
    """sensor_msgs/CompressedImage."""
    from diffmf_core.live.imagecodec import encode_compressed

    format_str, data = encode_compressed(img, fmt, quality)
    return store.types[COMPRESSED_TYPE](
        header=header(store, stamp_ns, frame_id), format=format_str, data=np.frombuffer(data, np.uint8))


def camera_info_msg(store, camera, width: int, height: int, stamp_ns: int, frame_id: str):
    """sensor_msgs/CameraInfo of an output image from ``camera`` (diffmf_core.live.camera.OutputCamera)."""
    types = store.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO_TYPE](
        header=header(store, stamp_ns, frame_id), height=height, width=width,
        distortion_model=camera.distortion_model, d=np.asarray(camera.d, np.float64),
        k=np.asarray(camera.k, np.float64), r=np.asarray(camera.r, np.float64), p=np.asarray(camera.p, np.float64),
        binning_x=0, binning_y=0, roi=roi)


def decode_msg(msg, msgtype: str, max_pixels: int, agc=None) -> np.ndarray:
    """Pixels of a deserialised Image/CompressedImage; 16-bit thermal goes through ``agc``
    (raises imagecodec.ImageDecodeError)."""
    from diffmf_core.live.imagecodec import decode_compressed, decode_image

    if msgtype == COMPRESSED_TYPE:
        return decode_compressed(msg.format, msg.data, max_pixels=max_pixels, agc=agc)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                        max_pixels=max_pixels, agc=agc)


@contextmanager
def atomic_output(output: Path, overwrite: bool = False, inputs=(), command: str = "bag") -> Iterator[Path]:
    """Yield a temporary path to write ``output`` into; rename on success, remove on failure.

    The output policy (diffmf_core.common.outputs) is checked first, under the output's lock: never
    an input (or inside/around one), an existing output only with ``overwrite`` and only when it is
    a bag that ``diffmf <command>`` wrote, holding nothing else. The finished bag gets the
    command's manifest. Partial folders of killed earlier runs are removed.
    """
    from diffmf_core.common.outputs import (OutputError, check_bag_output, clean_partials, output_lock,
                                            partial_dir, replace_dir, seal_bag)

    output = Path(output)

    def still_ours(path: Path) -> bool:  # re-checked when the new bag is moved in
        try:
            check_bag_output(path, (), True, command)
        except OutputError:
            return False
        return True

    try:
        with output_lock(output):
            check_bag_output(output, inputs, overwrite, command)
            for note in clean_partials(output):
                print(f"diffmf bag: {note}", file=sys.stderr)
            tmp = partial_dir(output)
            try:
                yield tmp / output.name
                seal_bag(tmp / output.name, command)
                replace_dir(tmp / output.name, output, is_ours=still_ours)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OutputError as exc:
        raise BagError(str(exc)) from None


def open_writer(path: Path, storage: str):
    """An opened rosbags Writer (rosbag2 version 9) for ``storage`` "mcap" or "sqlite3"."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    writer = Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin[storage.upper()])
    writer.open()
    return writer


@contextmanager
def open_reader(path: Path):
    """An opened rosbags Reader; unreadable bags raise BagError."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path}: not a rosbag2 bag folder (no metadata.yaml); give a bag folder, .mcap or .db3 file")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, OSError, YAML and storage errors
        raise BagError(f"{path}: cannot open bag ({type(exc).__name__}: {exc}); "
                       "the bag is truncated or corrupt, or not a rosbag2 folder / .mcap / .db3 file") from exc
    try:
        yield reader
    finally:
        try:
            reader.close()
        except Exception:  # closing a corrupt bag must not hide the original error
            pass


def iter_messages(reader, connections=()) -> Iterator[tuple]:
    """reader.messages() with storage errors (truncated/corrupt bags) raised as BagError."""
    messages = reader.messages(connections)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as exc:
            raise BagError(f"{reader.path}: bag is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
        yield item


def copy_connection(writer, conn, store):
    """Add ``conn`` (from a reader) to ``writer`` with its definition and QoS."""
    kwargs = {"typestore": store} if not conn.digest or not conn.msgdef.data else {
        "msgdef": conn.msgdef.data, "rihs01": conn.digest}
    ext = conn.ext
    return writer.add_connection(conn.topic, conn.msgtype, serialization_format=ext.serialization_format,
                                 offered_qos_profiles=ext.offered_qos_profiles, **kwargs)
