"""rosbag2 tools (``diffmf bag``): build bags from image pairs, fuse bags offline, inspect bags.

Pure Python over ``rosbags`` (no ROS runtime, no rclpy). Bags are rosbag2 directories (MCAP by
default, sqlite3 selectable) with the ROS 2 kilted typestore (jazzy-compatible message layouts)
plus ``diffmf_ros/msg/FusionInfo`` registered from ``msg/FusionInfo.msg``.

- ``from-pairs``: ir/vi pairs -> ``/thermal/image_raw`` + ``/rgb/image_raw`` (sensor_msgs/Image
  mono8/bgr8, or ``/compressed`` CompressedImage JPEG) with camera-like stamps: nominal
  ``--rate``, independent uniform jitter, a constant thermal delay and random drops. Messages are
  written in stamp order and each message's bag (receive) time equals its header stamp.
- ``fuse``: decode -> the node's per-frame routine (diffmf_core.frames: pairing, degraded modes,
  stamp/frame rule; FusionPipeline) with the node's settings (diffmf_core.settings) -> a new bag
  with every original topic plus ``/fused/image`` and ``/fused/info``. The fused frame carries the
  stamp and frame_id the node gives it (the output geometry camera's, see docs/node.md); its bag
  time is that of the message that completed the pair. ``FusionInfo.latency_ms`` is the offline processing time of the pair
  (decode + registration + fusion), since a recording has no live clock.
- ``info``: topics, types, counts, rates, duration.
- ``report``: for a bag recorded from the node (scripts/demo.sh): fused.mp4, strip.png, summary.md.

Outputs are atomic: written into a hidden temporary folder next to the target and renamed when
complete; on any error or Ctrl-C the partial output is removed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from diffmf_core.argtypes import device as device_arg
from diffmf_core.argtypes import float_range, int_range
from diffmf_core.paths import repo_root
from diffmf_core.pipeline import build_pipeline
from diffmf_core.sync import split_ns, stamp_to_ns

THERMAL_TOPIC = "/thermal/image_raw"
RGB_TOPIC = "/rgb/image_raw"
FUSED_TOPIC = "/fused/image"
INFO_TOPIC = "/fused/info"
THERMAL_FRAME = "thermal_camera"
RGB_FRAME = "rgb_camera"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
FUSION_INFO_TYPE = "diffmf_ros/msg/FusionInfo"
FUSION_INFO_MSG = repo_root() / "msg" / "FusionInfo.msg"
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 9  # rosbag2 metadata version written by jazzy and kilted
MODE_NAMES = {0: "fused", 1: "rgb-only", 2: "thermal-only", 3: "classical"}  # FusionInfo.MODE_*
MAX_DROP = 0.9
MAX_STAMP_S = 2**31 - 1  # builtin_interfaces/Time.sec is an int32


class BagError(Exception):
    """A bag that cannot be read or written as asked; the message says what and where."""


# --------------------------------------------------------------------------------------------
# typestore and message helpers


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
    from diffmf_core.imagecodec import encode_image

    encoding = encoding or ("mono8" if img.ndim == 2 else "bgr8")
    height, width, enc, step, data = encode_image(img, encoding)
    return store.types[IMAGE_TYPE](
        header=header(store, stamp_ns, frame_id), height=height, width=width, encoding=enc,
        is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))


def compressed_msg(store, img: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90):
    """sensor_msgs/CompressedImage."""
    from diffmf_core.imagecodec import encode_compressed

    format_str, data = encode_compressed(img, fmt, quality)
    return store.types[COMPRESSED_TYPE](
        header=header(store, stamp_ns, frame_id), format=format_str, data=np.frombuffer(data, np.uint8))


def decode_msg(msg, msgtype: str, max_pixels: int, agc=None) -> np.ndarray:
    """Pixels of a deserialised Image/CompressedImage; 16-bit thermal goes through ``agc``
    (raises imagecodec.ImageDecodeError)."""
    from diffmf_core.imagecodec import decode_compressed, decode_image

    if msgtype == COMPRESSED_TYPE:
        return decode_compressed(msg.format, msg.data, max_pixels=max_pixels, agc=agc)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                        max_pixels=max_pixels, agc=agc)


# --------------------------------------------------------------------------------------------
# atomic output and reading


@contextmanager
def atomic_output(output: Path, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """Yield a temporary path to write ``output`` into; rename on success, remove on failure.

    The output policy (diffmf_core.outputs) is checked first: never an input (or inside/around
    one), an existing output only with ``overwrite`` and only when it is a bag. Partial folders
    of killed earlier runs are removed.
    """
    from diffmf_core.outputs import OutputError, check_bag_output, clean_partials, partial_dir, replace_dir

    output = Path(output)
    try:
        check_bag_output(output, inputs, overwrite)
    except OutputError as exc:
        raise BagError(str(exc)) from None
    for note in clean_partials(output):
        print(f"diffmf bag: {note}", file=sys.stderr)
    tmp = partial_dir(output)
    try:
        yield tmp / output.name
        replace_dir(tmp / output.name, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so partial outputs are cleaned up."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# from-pairs


@dataclass
class StampPlan:
    """Which pair/camera goes into the bag at which stamp."""
    stamp_ns: int
    pair: int
    camera: str  # "thermal" or "rgb"


def plan_stamps(n_pairs: int, rate_hz: float, jitter_ms: float = 0.0, thermal_delay_ms: float = 0.0,
                drop: float = 0.0, seed: int = 0, start_ns: int = 1_700_000_000_000_000_000) -> list[StampPlan]:
    """Camera-like stamps for ``n_pairs`` frames, sorted by stamp.

    Frame i is nominally at ``start + i / rate``; RGB adds uniform jitter in +-jitter_ms, thermal
    adds ``thermal_delay_ms`` plus its own jitter; each message is dropped with probability ``drop``.
    """
    if rate_hz <= 0:
        raise ValueError("rate must be > 0")
    period_ms = 1000.0 / rate_hz
    if not 0 <= jitter_ms < period_ms / 2:
        raise ValueError(f"jitter must be in [0, {period_ms / 2:.1f}) ms at {rate_hz} Hz to keep frames in order")
    if not 0 <= drop < 1:
        raise ValueError("drop must be in [0, 1)")
    rng = np.random.default_rng(seed)
    plan = []
    for i in range(n_pairs):
        base_ms = i * period_ms
        for camera, offset_ms in (("thermal", thermal_delay_ms), ("rgb", 0.0)):
            jitter = rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
            dropped = rng.random() < drop
            if not dropped:
                plan.append(StampPlan(start_ns + int(round((base_ms + offset_ms + jitter) * 1e6)), i, camera))
    plan.sort(key=lambda p: (p.stamp_ns, p.camera))
    return plan


def write_pairs_bag(pairs, output: Path, *, storage: str = "mcap", compressed: bool = False,
                    quality: int = 90, rate: float = 30.0, jitter_ms: float = 0.0,
                    thermal_delay_ms: float = 0.0, drop: float = 0.0, seed: int = 0,
                    start_ns: int = 1_700_000_000_000_000_000, strip="auto", overwrite: bool = False,
                    progress: bool = True, inputs=(), max_pixels: int = 4096 * 4096) -> dict:
    """Write (name, ir_path, vi_path) pairs as a thermal+RGB bag; returns counts per topic.
    ``inputs``: paths the output must not touch (diffmf_core.outputs). An image above
    ``max_pixels`` (the node's max_image_pixels default) stops the run with BagError (no output)."""
    from tqdm import tqdm

    from diffmf_core.data import load_pair

    plan = plan_stamps(len(pairs), rate, jitter_ms, thermal_delay_ms, drop, seed, start_ns)
    for camera in ("thermal", "rgb"):
        if not any(p.camera == camera for p in plan):
            raise BagError(f"no {camera} message is left ({len(pairs)} pairs, --drop {drop:g}): the bag would be "
                           "useless; lower --drop or use more pairs")
    if plan[0].stamp_ns < 0 or plan[-1].stamp_ns >= MAX_STAMP_S * 10**9:
        raise BagError(f"stamps run from {plan[0].stamp_ns / 1e9:.3f} to {plan[-1].stamp_ns / 1e9:.3f} s; they "
                       f"must stay within [0, {MAX_STAMP_S}] s (ROS Time): change --start-time")
    store = make_typestore()
    suffix = "/compressed" if compressed else ""
    msgtype = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    counts = {THERMAL_TOPIC + suffix: 0, RGB_TOPIC + suffix: 0}
    remaining = {}  # pair index -> messages of it still to write
    for p in plan:
        remaining[p.pair] = remaining.get(p.pair, 0) + 1
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with atomic_output(output, overwrite, inputs) as tmp_path:
        writer = open_writer(tmp_path, storage)
        try:
            conns = {cam: writer.add_connection(topic + suffix, msgtype, typestore=store)
                     for cam, topic in (("thermal", THERMAL_TOPIC), ("rgb", RGB_TOPIC))}
            for p in tqdm(plan, desc="bag from-pairs", unit="msg", disable=not progress):
                if p.pair not in cache:
                    _, ir_path, vi_path = pairs[p.pair]
                    cache[p.pair] = load_pair(ir_path, vi_path, strip)
                    h, w = cache[p.pair][1].shape[:2]
                    if h * w > max_pixels:
                        raise BagError(f"{vi_path}: {w}x{h} = {h * w / 1e6:.1f} MP exceeds the input limit of "
                                       f"{max_pixels / 1e6:.1f} MP, which the node would refuse (--max-pixels "
                                       "raises it)")
                img = cache[p.pair][0 if p.camera == "thermal" else 1]
                frame = THERMAL_FRAME if p.camera == "thermal" else RGB_FRAME
                msg = (compressed_msg(store, img, p.stamp_ns, frame, "jpeg", quality) if compressed
                       else image_msg(store, img, p.stamp_ns, frame))
                writer.write(conns[p.camera], p.stamp_ns, store.serialize_cdr(msg, msgtype))
                counts[conns[p.camera].topic] += 1
                remaining[p.pair] -= 1
                if not remaining[p.pair]:
                    del cache[p.pair]
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return counts


def _cmd_from_pairs(args) -> int:
    from diffmf_core.data import find_pairs

    pairs = find_pairs(args.pairs)
    if args.limit:
        pairs = pairs[: args.limit]
    counts = write_pairs_bag(
        pairs, Path(args.output), storage=args.storage, compressed=args.compressed, quality=args.quality,
        rate=args.rate, jitter_ms=args.jitter_ms, thermal_delay_ms=args.thermal_delay_ms, drop=args.drop,
        seed=args.seed, start_ns=int(round(args.start_time * 1e9)),
        strip="none" if args.keep_border else "auto", overwrite=args.overwrite, progress=not args.quiet,
        inputs=[args.pairs], max_pixels=args.max_pixels)
    print(f"wrote {args.output} ({args.storage}): {len(pairs)} pairs, "
          + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


# --------------------------------------------------------------------------------------------
# fuse


def load_node_params(path: Path | None = None) -> dict:
    """The fusion node's ros__parameters from a params YAML (default: config/fuse.yaml)."""
    import yaml

    path = Path(path) if path else repo_root() / "config" / "fuse.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
        return dict(next(iter(doc.values()))["ros__parameters"])
    except (OSError, yaml.YAMLError, AttributeError, KeyError, StopIteration, TypeError) as exc:
        raise BagError(f"{path}: not a node parameters file ({exc})") from exc


def pick_image_topic(topics: dict, source: str, requested: str | None, params: dict) -> tuple[str, str]:
    """(topic, msgtype) of ``source`` ("thermal"/"rgb"): ``requested`` or the params' topic,
    raw or /compressed, whichever the bag has. Relative parameter names (the node resolves them in
    its namespace) are taken in the root namespace, as bags store absolute names."""
    base = params.get(f"{source}_topic", THERMAL_TOPIC if source == "thermal" else RGB_TOPIC)
    base = base if base.startswith("/") else "/" + base  # the node's relative names, in the root namespace
    base = base if base.startswith("/") else "/" + base
    candidates = [requested] if requested else [base, base.rstrip("/") + "/compressed"]
    for topic in candidates:
        if topic in topics:
            msgtype = topics[topic].msgtype
            if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
                raise BagError(f"topic {topic} has type {msgtype}, expected {IMAGE_TYPE} or {COMPRESSED_TYPE}")
            return topic, msgtype
    have = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(topics.items())) or "no topics"
    raise BagError(f"no {source} image topic ({' or '.join(candidates)}) in the bag; it has {have}. "
                   f"Use --{source}-topic to choose one.")


@dataclass
class FuseSummary:
    """Counts and timings of one offline fusion run."""
    messages: int = 0
    frames: dict = field(default_factory=lambda: {"thermal": 0, "rgb": 0})
    decoded: dict = field(default_factory=lambda: {"thermal": 0, "rgb": 0})
    used: dict = field(default_factory=lambda: {"thermal": 0, "rgb": 0})
    fused: int = 0
    modes: dict = field(default_factory=dict)
    decode_errors: dict = field(default_factory=dict)
    size_changes: int = 0
    sync: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)
    model_name: str = ""

    def latency(self) -> dict:
        lat = np.asarray(self.latencies_ms, float)
        if not lat.size:
            return {}
        return {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)), "max": float(lat.max())}

    def dropped(self) -> dict:
        """Decoded frames that went into no output frame (never paired), per camera."""
        return {s: self.decoded[s] - self.used[s] for s in self.decoded}

    def text(self) -> str:
        lat = self.latency()
        dropped = self.dropped()
        lines = [f"frames in: thermal {self.frames['thermal']}, rgb {self.frames['rgb']}",
                 f"fused: {self.fused} ({', '.join(f'{m} {n}' for m, n in sorted(self.modes.items())) or '-'}) "
                 f"with {self.model_name or '-'}",
                 f"dropped (never paired): {sum(dropped.values())} (thermal {dropped['thermal']}, "
                 f"rgb {dropped['rgb']})",
                 "decode errors: " + (", ".join(f"{k} {n}" for k, n in sorted(self.decode_errors.items())) or "0")]
        if self.size_changes:
            lines.append(f"image size changes: {self.size_changes} (pairing restarted at each)")
        if lat:
            lines.append(f"latency per pair (decode+register+fuse): mean {lat['mean']:.1f} ms, "
                         f"p90 {lat['p90']:.1f} ms, max {lat['max']:.1f} ms")
        return "\n".join(lines)


def fuse_bag(input_path: Path, output: Path, params: dict, *, storage: str = "mcap",
             thermal_topic: str | None = None, rgb_topic: str | None = None, copy_inputs: bool = True,
             overwrite: bool = False, progress: bool = True) -> FuseSummary:
    """Fuse a thermal+RGB bag offline with the node's per-pair path (see module docstring).

    ``params`` are the node's parameters (diffmf_core.settings.NodeSettings: same names, defaults
    and checks; SettingsError on invalid values). Each frame goes through the node's per-frame
    routine (diffmf_core.frames: FrameRouter pairing, degraded modes, output stamp and frame_id
    rule, then run_job), with bag receive time as the arrival clock. Unlike the live node, no job
    is skipped for lack of time.
    Images may change size mid-stream: registration adapts the homography to each pair's sizes
    (counted in ``size_changes``).
    """
    from tqdm import tqdm

    from diffmf_core.agc import ThermalAGC
    from diffmf_core.frames import Frame, FrameRouter, run_job
    from diffmf_core.imagecodec import ImageDecodeError
    from diffmf_core.pipeline import MODE_RGB_ONLY, MODE_THERMAL_ONLY
    from diffmf_core.settings import NodeSettings

    settings = NodeSettings.from_mapping(params)
    store = make_typestore()
    summary = FuseSummary()
    agc = ThermalAGC(settings.thermal_agc_mode, settings.agc_low, settings.agc_high)
    max_pixels = settings.max_image_pixels
    out_encoding = settings.output_encoding
    jpeg = settings.publish_compressed
    Info = store.types[FUSION_INFO_TYPE]

    with open_reader(input_path) as reader:
        topics = reader.topics
        sources = {pick_image_topic(topics, "thermal", thermal_topic, params)[0]: "thermal",
                   pick_image_topic(topics, "rgb", rgb_topic, params)[0]: "rgb"}
        if len(sources) != 2:
            raise BagError("the thermal and RGB topics must differ")
        pipeline, warning, cal_frames = build_pipeline(settings.as_dict())
        router = FrameRouter(settings, cal_frames)
        if warning:
            print(f"diffmf bag fuse: warning: {warning}; using the classical fuser {pipeline.fallback.name!r}",
                  file=sys.stderr)
        wanted = reader.connections if copy_inputs else [c for c in reader.connections if c.topic in sources]
        total = sum(c.msgcount for c in wanted)
        with atomic_output(output, overwrite, [input_path]) as tmp_path:
            writer = open_writer(tmp_path, storage)
            try:
                out_conns = {c.id: copy_connection(writer, c, store) for c in wanted} if copy_inputs else {}
                fused_conn = writer.add_connection(FUSED_TOPIC, IMAGE_TYPE, typestore=store)
                info_conn = writer.add_connection(INFO_TOPIC, FUSION_INFO_TYPE, typestore=store)
                jpeg_conn = (writer.add_connection(FUSED_TOPIC + "/compressed", COMPRESSED_TYPE, typestore=store)
                             if jpeg else None)
                sizes: dict[str, tuple] = {}
                for conn, bag_ns, raw in tqdm(iter_messages(reader, wanted), total=total, desc="bag fuse",
                                              unit="msg", disable=not progress):
                    summary.messages += 1
                    if copy_inputs:
                        writer.write(out_conns[conn.id], bag_ns, raw)
                    source = sources.get(conn.topic)
                    if source is None:
                        continue
                    summary.frames[source] += 1
                    start = time.perf_counter()
                    try:
                        msg = store.deserialize_cdr(raw, conn.msgtype)
                    except Exception:  # noqa: BLE001 - one bad message must not stop the run
                        summary.decode_errors["bad_cdr"] = summary.decode_errors.get("bad_cdr", 0) + 1
                        continue
                    try:
                        img = decode_msg(msg, conn.msgtype, max_pixels, agc if source == "thermal" else None)
                    except ImageDecodeError as exc:
                        summary.decode_errors[exc.kind] = summary.decode_errors.get(exc.kind, 0) + 1
                        continue
                    summary.decoded[source] += 1
                    if sizes.get(source) not in (None, img.shape[:2]):
                        summary.size_changes += 1
                    sizes[source] = img.shape[:2]
                    frame = Frame(img, stamp_to_ns(msg.header.stamp), msg.header.frame_id, bag_ns,
                                  decode_ms=(time.perf_counter() - start) * 1e3)
                    for job in router.add(source, frame):
                        th, rgb = job.thermal, job.rgb
                        t0 = time.perf_counter()
                        result = run_job(pipeline, job)
                        latency = sum(f.decode_ms for f in job.frames) + (time.perf_counter() - t0) * 1e3
                        stamp, frame_id = result.stamp_ns, result.frame_id
                        fused_img = image_msg(store, result.image, stamp, frame_id, out_encoding)
                        writer.write(fused_conn, bag_ns, store.serialize_cdr(fused_img, IMAGE_TYPE))
                        if jpeg_conn is not None:
                            cmsg = compressed_msg(store, result.image, stamp, frame_id, "jpeg", settings.jpeg_quality)
                            writer.write(jpeg_conn, bag_ns, store.serialize_cdr(cmsg, COMPRESSED_TYPE))
                        info = Info(
                            header=header(store, stamp, frame_id),
                            thermal_stamp=ns_to_time(store, result.thermal_stamp_ns),
                            rgb_stamp=ns_to_time(store, result.rgb_stamp_ns),
                            homography=result.homography,
                            registration_quality=np.float32(result.registration_quality), mode=result.mode,
                            inference_ms=np.float32(result.inference_ms), latency_ms=np.float32(latency),
                            model_name=result.model_name)
                        writer.write(info_conn, bag_ns, store.serialize_cdr(info, FUSION_INFO_TYPE))
                        summary.fused += 1
                        summary.used["thermal"] += th is not None
                        summary.used["rgb"] += rgb is not None
                        summary.latencies_ms.append(latency)
                        mode = MODE_NAMES.get(int(result.mode), str(result.mode))
                        summary.modes[mode] = summary.modes.get(mode, 0) + 1
                        if result.mode not in (MODE_RGB_ONLY, MODE_THERMAL_ONLY):
                            summary.model_name = result.model_name
                writer.close()
            except BaseException:
                writer.abort()
                raise
    summary.sync = {**router.sync.stats.as_dict(), "stamp_order_drops": router.stamp_order_drops}
    return summary


def _check_model(params: dict) -> None:
    """An explicit --weights/--device/--fuser diffmf must be usable: BagError instead of the classical
    fallback that the node (and the automatic defaults) use."""
    try:
        from diffmf_core.fuser import Fuser

        Fuser(params.get("weights") or None, preset=params.get("preset") or None,
              device=params.get("device", "auto"), half=bool(params.get("half_precision", True)))
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's explicit choice failing
        raise BagError(f"the requested DIFF-MF model cannot be used ({type(exc).__name__}: {exc}); "
                       "explicit --weights/--device/--fuser diffmf never fall back (use --fuser classical "
                       "to fuse without the model)") from None


def _cmd_fuse(args) -> int:
    from diffmf_core.outputs import OutputError, check_bag_output

    try:  # before the model loads; fuse_bag checks again when it writes
        check_bag_output(Path(args.output), [args.input], args.overwrite)
    except OutputError as exc:
        raise BagError(str(exc)) from None
    params = load_node_params(args.params_file)
    for key, value in (("fuser", args.fuser), ("device", args.device), ("weights", args.weights)):
        if value is not None:
            params[key] = value
    if args.slop_ms is not None:
        params["sync_slop_s"] = args.slop_ms / 1000.0
    if args.thermal_delay_ms is not None:
        params["thermal_delay_s"] = args.thermal_delay_ms / 1000.0
    explicit = args.weights or args.device not in (None, "auto") or args.fuser == "diffmf"
    if explicit and params.get("fuser", "diffmf") == "diffmf":
        _check_model(params)
    summary = fuse_bag(Path(args.input), Path(args.output), params, storage=args.storage,
                       thermal_topic=args.thermal_topic, rgb_topic=args.rgb_topic,
                       copy_inputs=not args.only_fused, overwrite=args.overwrite, progress=not args.quiet)
    if not summary.fused:
        shutil.rmtree(args.output, ignore_errors=True)
        print(summary.text(), file=sys.stderr)
        raise BagError(f"nothing could be fused from {args.input} (see the counts above); no output written")
    print(f"wrote {args.output}\n{summary.text()}")
    if explicit and params.get("fuser", "diffmf") == "diffmf" and summary.modes.get("classical"):
        print(f"diffmf bag: error: DIFF-MF failed during the run; {summary.modes['classical']} frame(s) were fused "
              f"with the classical fallback (FusionInfo mode CLASSICAL). The output {args.output} is kept.",
              file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# info


def bag_info(path: Path) -> dict:
    """Topics (type, count, rate), message count, start/end/duration of a bag.

    Counts and times come from the messages in the storage, not from metadata.yaml (which a tool
    may have written wrong); ``metadata_mismatch`` lists the topics whose metadata count differs."""
    with open_reader(path) as reader:
        counts = {name: 0 for name in reader.topics}
        start = end = None
        for conn, bag_ns, _ in iter_messages(reader):
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            start = bag_ns if start is None else min(start, bag_ns)
            end = bag_ns if end is None else max(end, bag_ns)
        duration_s = (end - start) / 1e9 if start is not None else 0.0
        types = {name: t.msgtype for name, t in reader.topics.items()}
        mismatch = {name: {"metadata": t.msgcount, "storage": counts.get(name, 0)}
                    for name, t in reader.topics.items() if t.msgcount != counts.get(name, 0)}
    topics = {
        name: {"type": types.get(name, "?"), "count": n,
               "rate_hz": round((n - 1) / duration_s, 3) if duration_s > 0 and n > 1 else None}
        for name, n in counts.items()}
    return {"path": str(path), "messages": sum(counts.values()), "duration_s": duration_s,
            "start_ns": start, "end_ns": end, "topics": topics, "metadata_mismatch": mismatch}


def _cmd_info(args) -> int:
    info = bag_info(Path(args.bag))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bag:       {info['path']}")
    print(f"messages:  {info['messages']}")
    print(f"duration:  {info['duration_s']:.3f} s")
    if info["start_ns"] is not None:
        print(f"start/end: {info['start_ns'] / 1e9:.6f} / {info['end_ns'] / 1e9:.6f} s")
    width = max([len(t) for t in info["topics"]] + [5])
    for name, t in sorted(info["topics"].items()):
        rate = f"{t['rate_hz']:.2f} Hz" if t["rate_hz"] else "-"
        print(f"  {name:<{width}}  {t['count']:>6}  {rate:>10}  {t['type']}")
    for name, m in sorted(info["metadata_mismatch"].items()):
        print(f"warning: metadata.yaml says {m['metadata']} message(s) on {name}, the storage holds "
              f"{m['storage']} (counts above are from the storage)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------
# report (demo outputs)


def sync_pairs(bag: Path, params: dict, thermal_topic: str | None = None, rgb_topic: str | None = None):
    """(thermal stamps, rgb stamps, [(thermal_stamp, rgb_stamp)] the PairSynchronizer forms) for a bag,
    from header stamps only (no image decoding)."""
    from diffmf_core.frames import make_synchronizer
    from diffmf_core.settings import NodeSettings

    store = make_typestore()
    sync = make_synchronizer(NodeSettings.from_mapping(params))
    stamps: dict[str, list[int]] = {"thermal": [], "rgb": []}
    pairs = []
    with open_reader(bag) as reader:
        topics = {pick_image_topic(reader.topics, s, t, params)[0]: s
                  for s, t in (("thermal", thermal_topic), ("rgb", rgb_topic))}
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _, raw in iter_messages(reader, conns):
            source = topics[conn.topic]
            stamp = stamp_to_ns(store.deserialize_cdr(raw, conn.msgtype).header.stamp)
            stamps[source].append(stamp)
            add = sync.add_thermal if source == "thermal" else sync.add_rgb
            pairs += [(p.thermal_stamp_ns, p.rgb_stamp_ns) for p in add(stamp, None)]
    return stamps, pairs


def _percentiles(values, qs=(50, 90, 99)) -> str:
    v = np.asarray(values, float)
    if not v.size:
        return "-"
    return " / ".join(f"{np.percentile(v, q):.1f}" for q in qs) + f" / {v.max():.1f}"


REPORT_FILES = ("fused.mp4", "strip.png", "summary.md")


def write_report(recorded: Path, input_bag: Path, outdir: Path, params: dict, device: str = "",
                 strip_frames: int = 4, overwrite: bool = False) -> dict:
    """From a recorded fusion bag: ``fused.mp4`` (mp4v, at the input's frame rate), ``strip.png``
    (thermal / RGB / fused rows at ``strip_frames`` times) and ``summary.md`` (frames in/out, pairs,
    drops, modes, FusionInfo latency percentiles, device) in ``outdir``; returns the numbers.

    Output policy as every command (diffmf_core.outputs): the three files are written into a hidden
    folder inside ``outdir`` and moved in when all are complete, so an error or Ctrl-C leaves no
    partial file. Fused frames of another size than the first are resized for the video (counted in
    ``frames_resized``). The input bag must be the one that was fused: every input stamp a
    FusionInfo names must be in it, else BagError.
    """
    from diffmf_core.outputs import OutputError, check_results, mark_results

    recorded, input_bag, outdir = Path(recorded), Path(input_bag), Path(outdir)
    try:
        check_results(outdir, REPORT_FILES, [recorded, input_bag], overwrite, "bag report")
    except OutputError as exc:
        raise BagError(str(exc)) from None
    created = not outdir.exists()
    tmp = None
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".diffmf-report.", suffix=".partial", dir=outdir))
        numbers = _write_report_files(recorded, input_bag, tmp, params, device, strip_frames)
        mark_results(outdir, "bag report")
        for name in REPORT_FILES:
            os.replace(tmp / name, outdir / name)
    except BaseException:
        if created:
            shutil.rmtree(outdir, ignore_errors=True)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return numbers


def _write_report_files(recorded: Path, input_bag: Path, outdir: Path, params: dict, device: str,
                        strip_frames: int) -> dict:
    import cv2

    store = make_typestore()
    in_stamps, expected = sync_pairs(input_bag, params)
    rgb_in = sorted(in_stamps["rgb"])
    fps = (len(rgb_in) - 1) / ((rgb_in[-1] - rgb_in[0]) / 1e9) if len(rgb_in) > 1 and rgb_in[-1] > rgb_in[0] else 30.0
    infos, delivered, samples = [], {}, []
    video, size, resized = None, None, 0
    try:
        with open_reader(recorded) as reader:
            n_fused = reader.topics[FUSED_TOPIC].msgcount if FUSED_TOPIC in reader.topics else 0
            if not n_fused:
                raise BagError(f"{recorded}: no {FUSED_TOPIC} messages were recorded")
            picks = set(np.linspace(0, n_fused - 1, min(strip_frames, n_fused)).round().astype(int).tolist())
            index = 0
            for conn, _, raw in iter_messages(reader):
                if conn.topic == INFO_TOPIC:
                    infos.append(store.deserialize_cdr(raw, FUSION_INFO_TYPE))
                elif conn.topic == FUSED_TOPIC:
                    msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                    img = decode_msg(msg, IMAGE_TYPE, 1 << 26)
                    img = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                    if video is None:
                        size = (img.shape[1], img.shape[0])
                        video = cv2.VideoWriter(str(outdir / "fused.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                    if (img.shape[1], img.shape[0]) != size:
                        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                        resized += 1
                    video.write(img)
                    if index in picks:
                        samples.append((stamp_to_ns(msg.header.stamp), img))
                    index += 1
                else:
                    delivered[conn.topic] = delivered.get(conn.topic, 0) + 1
    finally:
        if video is not None:
            video.release()
    known = {"thermal": set(in_stamps["thermal"]), "rgb": set(in_stamps["rgb"])}
    foreign = sum(1 for i in infos
                  if any(stamp_to_ns(getattr(i, f"{s}_stamp")) not in known[s] | {0} for s in known))
    if foreign:
        raise BagError(f"{input_bag} is not the bag that was fused into {recorded}: {foreign} of {len(infos)} "
                       "fused frames name input stamps that it does not contain (give the played bag as --input)")
    by_stamp = {stamp_to_ns(i.header.stamp): i for i in infos}
    _write_strip(outdir / "strip.png", input_bag, samples, by_stamp, params)

    modes: dict[str, int] = {}
    for info in infos:
        name = MODE_NAMES.get(int(info.mode), str(info.mode))
        modes[name] = modes.get(name, 0) + 1
    got = {(stamp_to_ns(i.thermal_stamp), stamp_to_ns(i.rgb_stamp)) for i in infos}
    fused_pairs = [i for i in infos if int(i.mode) in (0, 3)]
    numbers = {
        "frames_in": {k: len(v) for k, v in in_stamps.items()},
        "frames_delivered": delivered,
        "pairs_expected": len(expected),
        "frames_out": n_fused,
        "frames_resized": resized,
        "video_size": f"{size[0]}x{size[1]}",
        "infos_out": len(infos),
        "pairs_fused": len(fused_pairs),
        "pairs_lost": sum(1 for p in expected if p not in got),
        "unpaired_frames": sum(len(v) for v in in_stamps.values()) - 2 * len(expected),
        "modes": modes,
        "models": sorted({i.model_name for i in fused_pairs}),
        "device": device,
        "latency_ms": [float(i.latency_ms) for i in infos],
        "inference_ms": [float(i.inference_ms) for i in fused_pairs],
    }
    (outdir / "summary.md").write_text(_summary_markdown(numbers, recorded, input_bag))
    return numbers


def _write_strip(path: Path, input_bag: Path, samples, infos_by_stamp: dict, params: dict) -> None:
    """PNG grid: one column per sample, rows thermal / RGB / fused (inputs looked up by stamp)."""
    import cv2

    store = make_typestore()
    wanted = {}
    for stamp, _ in samples:
        info = infos_by_stamp.get(stamp)
        if info is not None:
            wanted[("thermal", stamp_to_ns(info.thermal_stamp))] = None
            wanted[("rgb", stamp_to_ns(info.rgb_stamp))] = None
    with open_reader(input_bag) as reader:
        topics = {pick_image_topic(reader.topics, s, None, params)[0]: s for s in ("thermal", "rgb")}
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _, raw in iter_messages(reader, conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            key = (topics[conn.topic], stamp_to_ns(msg.header.stamp))
            if key in wanted:
                wanted[key] = decode_msg(msg, conn.msgtype, 1 << 26)
    columns = []
    for stamp, fused in samples:
        h, w = fused.shape[:2]
        info = infos_by_stamp.get(stamp)
        cells = []
        for source in ("thermal", "rgb"):
            img = wanted.get((source, stamp_to_ns(getattr(info, f"{source}_stamp")))) if info else None
            img = np.zeros((h, w, 3), np.uint8) if img is None else img
            img = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            cells.append(cv2.resize(img, (w, h)))
        cells.append(fused)
        columns.append(np.vstack(cells))
    strip = np.hstack(columns)
    scale = min(1.0, 1600 / strip.shape[1])
    if scale < 1.0:
        strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), strip):
        raise BagError(f"{path}: cannot write the strip image")


def _summary_markdown(n: dict, recorded: Path, input_bag: Path) -> str:
    fin = n["frames_in"]
    delivered = ", ".join(f"`{t}` {c}" for t, c in sorted(n["frames_delivered"].items())) or "not recorded"
    rows = [
        ("input bag", f"`{input_bag}`: thermal {fin['thermal']}, RGB {fin['rgb']} frames"),
        ("frames seen on the input topics (recorder)", delivered),
        ("pairs the synchronizer can form (offline, node parameters)", n["pairs_expected"]),
        ("unpaired input frames (no partner within the slop)", n["unpaired_frames"]),
        ("fused frames out (`/fused/image`)", f"{n['frames_out']} (`/fused/info` {n['infos_out']})"),
        ("fused frames resized to the video size", f"{n['frames_resized']} (video {n['video_size']}; "
         "the image size changed during the recording)" if n["frames_resized"] else "0"),
        ("pairs fused", n["pairs_fused"]),
        ("pairs not fused live (node busy: newer pair replaced a waiting one, or lost)", n["pairs_lost"]),
        ("modes", ", ".join(f"{m} {c}" for m, c in sorted(n["modes"].items()))),
        ("model", ", ".join(n["models"]) or "-"),
        ("device", n["device"] or "-"),
        ("latency_ms p50 / p90 / p99 / max (FusionInfo)", _percentiles(n["latency_ms"])),
        ("inference_ms p50 / p90 / p99 / max (FusionInfo)", _percentiles(n["inference_ms"])),
    ]
    lines = ["# diffmf demo summary", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", f"Recorded bag: `{recorded}`. Files: `fused.mp4` (fused frames, mp4v), `strip.png` "
              "(rows: thermal, RGB, fused).", "",
              "latency_ms under use_sim_time is the node's own time from the newer input's arrival "
              "to publication (see diffmf_ros/fusion_node.py).", ""]
    return "\n".join(lines)


def _cmd_report(args) -> int:
    params = load_node_params(args.params_file)
    numbers = write_report(Path(args.recorded), Path(args.input), Path(args.outdir), params, args.device,
                           overwrite=args.overwrite)
    print((Path(args.outdir) / "summary.md").read_text())
    if args.min_frames and numbers["frames_out"] < args.min_frames:
        raise BagError(f"only {numbers['frames_out']} fused frames (expected at least {args.min_frames})")
    return 0


# --------------------------------------------------------------------------------------------
# CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    from diffmf_core.argtypes import examples_epilog

    raw = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    policy = ("Output policy: the output is never an input (nor inside or around one); an existing output "
              "is an error unless --overwrite, which replaces only a bag (a folder with metadata.yaml).")

    fp = sub.add_parser("from-pairs", help="write a thermal+RGB bag from a folder of ir/vi pairs",
                        description="Write a thermal+RGB rosbag2 from ir/+vi/ (or DroneVehicle "
                                    "trainimgr/+trainimg/) pairs with camera-like stamps.", formatter_class=raw,
                        epilog=examples_epilog(["diffmf bag from-pairs DATA runs/bags/pairs --compressed",
                                                "diffmf bag from-pairs DATA runs/bags/jitter --jitter-ms 3 "
                                                "--drop 0.05 --limit 50"], policy))
    fp.add_argument("pairs", help="folder with ir/+vi/ or DroneVehicle trainimgr/+trainimg/")
    fp.add_argument("output", help="output bag folder (must not exist, see --overwrite)")
    fp.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")
    fp.add_argument("--compressed", action="store_true",
                    help="CompressedImage JPEG on <topic>/compressed instead of raw Image")
    fp.add_argument("--quality", type=int_range(1, 100), default=90, help="JPEG quality 1-100 (default 90)")
    fp.add_argument("--rate", type=float_range(0, 1000, lo_open=True), default=30.0,
                    help="frame rate, Hz, in (0, 1000] (default 30)")
    fp.add_argument("--jitter-ms", type=float_range(0, None), default=0.0,
                    help="uniform stamp jitter per message, +- ms (below half a frame period)")
    fp.add_argument("--thermal-delay-ms", type=float_range(-10_000, 10_000), default=0.0,
                    help="constant thermal stamp delay, ms")
    fp.add_argument("--drop", type=float_range(0, MAX_DROP), default=0.0,
                    help=f"probability of dropping each message, 0-{MAX_DROP:g} (default 0)")
    fp.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="random seed for jitter and drops")
    fp.add_argument("--start-time", type=float_range(0, MAX_STAMP_S), default=1_700_000_000.0,
                    help="first stamp, s since epoch (default 1700000000; stamps must stay below 2^31 s)")
    fp.add_argument("--limit", type=int_range(0), default=0, help="use only the first N pairs (0: all)")
    fp.add_argument("--max-pixels", type=int_range(1), default=4096 * 4096,
                    help="largest image accepted, pixels (default 16777216, the node's max_image_pixels)")
    fp.add_argument("--keep-border", action="store_true", help="do not strip a DroneVehicle-style white border")
    fp.add_argument("--overwrite", action="store_true", help="replace an existing output bag (only a bag)")
    fp.add_argument("--quiet", action="store_true", help="no progress bar")
    fp.set_defaults(_bag_func=_cmd_from_pairs)

    fu = sub.add_parser("fuse", help="fuse a thermal+RGB bag offline into a new bag",
                        description="Decode, pair, register and fuse a bag with the node's code; "
                                    "write the original topics plus /fused/image and /fused/info.",
                        formatter_class=raw,
                        epilog=examples_epilog(["diffmf bag fuse samples/m3svd_0117_1605 runs/bags/fused",
                                                "diffmf bag fuse IN OUT --fuser classical --only-fused --overwrite"],
                                               policy + " Exits non-zero when no frame could be fused."))
    fu.add_argument("input", help="input bag (folder, .mcap or .db3)")
    fu.add_argument("output", help="output bag folder (must not exist, see --overwrite)")
    fu.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")
    fu.add_argument("--thermal-topic", help="default: /thermal/image_raw or its /compressed")
    fu.add_argument("--rgb-topic", help="default: /rgb/image_raw or its /compressed")
    fu.add_argument("--params-file", help="node parameters YAML (default: config/fuse.yaml)")
    fu.add_argument("--fuser", choices=("diffmf", "classical"), help="override the fuser parameter")
    fu.add_argument("--device", type=device_arg,
                    help="override the device parameter (auto, cpu, cuda, cuda:N); an explicit device "
                         "that cannot be used is an error")
    fu.add_argument("--weights", help="override the weights parameter (.safetensors); a file that cannot "
                                      "be used is an error, not a classical fallback")
    fu.add_argument("--slop-ms", type=float_range(0, 10_000), help="override sync_slop_s (milliseconds)")
    fu.add_argument("--thermal-delay-ms", type=float_range(-10_000, 10_000),
                    help="override thermal_delay_s (milliseconds)")
    fu.add_argument("--only-fused", action="store_true", help="do not copy the input topics")
    fu.add_argument("--overwrite", action="store_true", help="replace an existing output bag (only a bag)")
    fu.add_argument("--quiet", action="store_true", help="no progress bar")
    fu.set_defaults(_bag_func=_cmd_fuse)

    rp = sub.add_parser("report", help="video, image strip and summary.md from a recorded fusion run",
                        description="Write fused.mp4, strip.png and summary.md for a bag recorded from "
                                    "the fusion node (scripts/demo.sh).", formatter_class=raw,
                        epilog=examples_epilog(["diffmf bag report runs/demo/fused_bag --input "
                                                "samples/m3svd_0117_1605 --outdir runs/demo"],
                                               "The --input bag must be the one played into the node (its stamps "
                                               "are checked). Files are complete or absent (Ctrl-C included); "
                                               "--overwrite replaces only an earlier report's files."))
    rp.add_argument("recorded", help="bag with /fused/image and /fused/info (optionally the inputs)")
    rp.add_argument("--input", required=True, help="the bag that was played into the node")
    rp.add_argument("--outdir", required=True, help="folder for fused.mp4, strip.png, summary.md")
    rp.add_argument("--params-file", help="node parameters YAML used (default: config/fuse.yaml)")
    rp.add_argument("--device", default="", help="device the node ran on, for the summary")
    rp.add_argument("--min-frames", type=int_range(0), default=1, help="fail with fewer fused frames (default 1)")
    rp.add_argument("--overwrite", action="store_true",
                    help="replace fused.mp4/strip.png/summary.md of an earlier report in --outdir")
    rp.set_defaults(_bag_func=_cmd_report)

    inf = sub.add_parser("info", help="topics, counts and duration of a bag",
                         description="Topics, types, message counts (counted in the storage, compared with "
                                     "metadata.yaml), rates and duration of a bag.", formatter_class=raw,
                         epilog=examples_epilog(["diffmf bag info samples/m3svd_0117_1605",
                                                 "diffmf bag info runs/bags/fused --json"]))
    inf.add_argument("bag", help="bag folder, .mcap or .db3 file")
    inf.add_argument("--json", action="store_true", help="machine-readable output")
    inf.set_defaults(_bag_func=_cmd_info)


def main(args) -> int:
    """Run one ``diffmf bag`` action; errors print one clear line and return non-zero."""
    from diffmf_core.data import DataError

    try:
        with sigterm_as_interrupt():
            return args._bag_func(args)
    except KeyboardInterrupt:
        print("diffmf bag: interrupted; partial output removed", file=sys.stderr)
        return 130
    except (BagError, DataError, ValueError) as exc:
        print(f"diffmf bag: error: {exc}", file=sys.stderr)
        return 2
