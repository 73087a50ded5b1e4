"""``diffmf bag fuse``: the node's per-pair path offline (decode, rectify with camera_info, pair,
register, fuse with the node's settings) -> a new bag with every input topic plus ``/fused/image``,
``/fused/camera_info`` and ``/fused/info``."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffmf_core.common.paths import repo_root
from diffmf_core.live.pipeline import build_pipeline, model_fuser
from diffmf_core.live.settings import NodeSettings
from diffmf_core.live.sync import stamp_to_ns
from diffmf_core.tools.bag.common import (BagError, CAMERA_INFO_TYPE, COMPRESSED_TYPE, FUSED_TOPIC,
                                          FUSION_INFO_TYPE, IMAGE_TYPE, INFO_TOPIC, MODE_NAMES, RGB_TOPIC,
                                          THERMAL_TOPIC, atomic_output, camera_info_msg, compressed_msg,
                                          copy_connection, decode_msg, header, image_msg, iter_messages,
                                          make_typestore, ns_to_time, open_reader, open_writer)


def load_node_params(path: Path | None = None) -> dict:
    """The fusion node's ros__parameters from a params YAML (default: config/fuse.yaml)."""
    import yaml

    path = Path(path) if path else repo_root() / "config" / "fuse.yaml"
    expected = "a YAML mapping `<node name>: {ros__parameters: {...}}` such as config/fuse.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BagError(f"{path}: cannot read the parameters file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise BagError(f"{path}: not a node parameters file (not YAML: {str(exc).splitlines()[0]}); "
                       f"expected {expected}") from exc
    node = next(iter(doc.values()), None) if isinstance(doc, dict) else None
    params = node.get("ros__parameters") if isinstance(node, dict) else None
    if not isinstance(params, dict):
        raise BagError(f"{path}: not a node parameters file; expected {expected}")
    return dict(params)


def pick_image_topic(topics: dict, source: str, requested: str | None, params: dict) -> tuple[str, str]:
    """(topic, msgtype) of ``source`` ("thermal"/"rgb"): ``requested`` or the params' topic,
    raw or /compressed, whichever the bag has. Relative parameter names (the node resolves them in
    its namespace) are taken in the root namespace, as bags store absolute names."""
    base = params.get(f"{source}_topic", THERMAL_TOPIC if source == "thermal" else RGB_TOPIC)
    base = base if base.startswith("/") else "/" + base  # the node's relative names, in the root namespace
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


class NothingFused(BagError):
    """Fewer frames than asked could be fused; ``summary`` holds the counts."""

    def __init__(self, summary):
        super().__init__("nothing could be fused")
        self.summary = summary


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
             overwrite: bool = False, progress: bool = True, min_fused: int = 0) -> FuseSummary:
    """Fuse a thermal+RGB bag offline with the node's per-pair path (see module docstring).

    ``params`` are the node's parameters (diffmf_core.live.settings.NodeSettings: same names, defaults
    and checks; SettingsError on invalid values). Each frame goes through the node's per-frame
    routine (diffmf_core.live.frames: FrameRouter pairing, degraded modes, output stamp and frame_id
    rule, then run_job), with bag receive time as the arrival clock. Unlike the live node, no job
    is skipped for lack of time.
    Images may change size mid-stream: registration adapts the homography to each pair's sizes
    (counted in ``size_changes``). With ``use_camera_info`` (default), each camera's CameraInfo next
    to its image topic (``<camera>/camera_info``, as the node subscribes it), when the bag has it,
    rectifies that camera's later frames as in the node (one of another size than the image is
    counted in ``decode_errors["camera_info_size"]`` and the frame used raw); ``/fused/camera_info``
    is written for every fused frame (uncalibrated without camera_info), as the node publishes it.
    Fewer than ``min_fused`` fused frames raise ``NothingFused`` (with the summary) before the
    output is put in place (an existing output is left as it was).
    """
    from tqdm import tqdm

    from diffmf_core.live.agc import ThermalAGC
    from diffmf_core.live.camera import CameraModel, camera_for, camera_info_topic
    from diffmf_core.live.frames import Frame, FrameRouter, Undistortion, run_job
    from diffmf_core.live.imagecodec import ImageDecodeError
    from diffmf_core.live.pipeline import MODE_RGB_ONLY, MODE_THERMAL_ONLY

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
        infos = {}  # camera_info topic -> camera, for the cameras whose camera_info the bag has
        if settings.use_camera_info:
            for topic, source in sources.items():
                info_topic = camera_info_topic(topic[:-len("/compressed")] if topic.endswith("/compressed") else topic)
                if info_topic in topics and topics[info_topic].msgtype == CAMERA_INFO_TYPE:
                    infos[info_topic] = source
        cameras: dict = {}
        undistortion = Undistortion()
        pipeline, warning, cal_frames = build_pipeline(settings.as_dict())
        router = FrameRouter(settings, cal_frames)
        if warning:
            print(f"diffmf bag fuse: warning: {warning}; using the classical fuser {pipeline.fallback.name!r}",
                  file=sys.stderr)
        wanted = (reader.connections if copy_inputs
                  else [c for c in reader.connections if c.topic in sources or c.topic in infos])
        total = sum(c.msgcount for c in wanted)
        with atomic_output(output, overwrite, [input_path], "bag fuse") as tmp_path:
            writer = open_writer(tmp_path, storage)
            try:
                out_conns = {c.id: copy_connection(writer, c, store) for c in wanted} if copy_inputs else {}
                fused_conn = writer.add_connection(FUSED_TOPIC, IMAGE_TYPE, typestore=store)
                info_conn = writer.add_connection(INFO_TOPIC, FUSION_INFO_TYPE, typestore=store)
                camera_conn = writer.add_connection(camera_info_topic(FUSED_TOPIC), CAMERA_INFO_TYPE, typestore=store)
                jpeg_conn = (writer.add_connection(FUSED_TOPIC + "/compressed", COMPRESSED_TYPE, typestore=store)
                             if jpeg else None)
                sizes: dict[str, tuple] = {}
                for conn, bag_ns, raw in tqdm(iter_messages(reader, wanted), total=total, desc="bag fuse",
                                              unit="msg", disable=not progress):
                    summary.messages += 1
                    if copy_inputs:
                        writer.write(out_conns[conn.id], bag_ns, raw)
                    if conn.topic in infos:
                        try:
                            cameras[infos[conn.topic]] = CameraModel.from_msg(store.deserialize_cdr(raw, conn.msgtype))
                        except Exception:  # noqa: BLE001 - unsupported model or bad CDR: counted, raw pixels
                            summary.decode_errors["camera_info"] = summary.decode_errors.get("camera_info", 0) + 1
                        continue
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
                    camera, mismatch = camera_for(img, cameras.get(source))
                    if mismatch:
                        summary.decode_errors["camera_info_size"] = summary.decode_errors.get("camera_info_size", 0) + 1
                    frame = Frame(img, stamp_to_ns(msg.header.stamp), msg.header.frame_id, bag_ns,
                                  decode_ms=(time.perf_counter() - start) * 1e3, camera=camera)
                    for job in router.add(source, frame):
                        th, rgb = job.thermal, job.rgb
                        t0 = time.perf_counter()
                        result = run_job(pipeline, job, undistortion)
                        latency = sum(f.decode_ms for f in job.frames) + (time.perf_counter() - t0) * 1e3
                        stamp, frame_id = result.stamp_ns, result.frame_id
                        fused_img = image_msg(store, result.image, stamp, frame_id, out_encoding)
                        writer.write(fused_conn, bag_ns, store.serialize_cdr(fused_img, IMAGE_TYPE))
                        cam_msg = camera_info_msg(store, result.camera_info, int(fused_img.width),
                                                  int(fused_img.height), stamp, frame_id)
                        writer.write(camera_conn, bag_ns, store.serialize_cdr(cam_msg, CAMERA_INFO_TYPE))
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
            if summary.fused < min_fused:
                raise NothingFused(summary)
    summary.sync = {**router.sync.stats.as_dict(), "stamp_order_drops": router.stamp_order_drops,
                    "frame_id_drops": router.frame_id_drops}
    return summary


def _check_model(params: dict) -> None:
    """An explicit --weights/--device/--fuser diffmf|warm_rule must be usable: BagError instead of the
    classical fallback that the node (and the automatic defaults) use."""
    kind = params.get("fuser", NodeSettings.fuser)
    try:
        model_fuser(params)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's explicit choice failing
        what = "warm_rule fuser" if kind == "warm_rule" else "DIFF-MF model"
        raise BagError(f"the requested {what} cannot be used ({type(exc).__name__}: {exc}); "
                       f"explicit --weights/--device/--fuser {kind} never fall back (use --fuser classical "
                       "to fuse without the model)") from None


def _cmd_fuse(args) -> int:
    from diffmf_core.common.outputs import OutputError, check_bag_output, output_lock

    try:  # the lock is held for the whole run; fuse_bag checks again when it writes
        with output_lock(Path(args.output)):
            check_bag_output(Path(args.output), [args.input], args.overwrite, "bag fuse")
            return _fuse_locked(args)
    except OutputError as exc:
        raise BagError(str(exc)) from None


def _fuse_locked(args) -> int:
    params = load_node_params(args.params_file)
    for key, value in (("fuser", args.fuser), ("device", args.device), ("weights", args.weights)):
        if value is not None:
            params[key] = value
    kind = params.get("fuser", NodeSettings.fuser)
    unused = [f for f, v, applies in (("--weights", args.weights, kind == "diffmf"),
                                      ("--device", args.device, kind != "classical")) if v and not applies]
    if unused:
        given = " and ".join(unused)
        raise BagError(f"{given} cannot apply: the fuser is {kind!r} "
                       f"({'--fuser' if args.fuser else 'the params file'}); drop {given} or use --fuser diffmf")
    if args.slop_ms is not None:
        params["sync_slop_s"] = args.slop_ms / 1000.0
    if args.thermal_delay_ms is not None:
        params["thermal_delay_s"] = args.thermal_delay_ms / 1000.0
    explicit = (args.weights or args.device not in (None, "auto") or args.fuser in ("diffmf", "warm_rule")) \
        and kind != "classical"
    if explicit:
        _check_model(params)
    try:
        summary = fuse_bag(Path(args.input), Path(args.output), params, storage=args.storage,
                           thermal_topic=args.thermal_topic, rgb_topic=args.rgb_topic,
                           copy_inputs=not args.only_fused, overwrite=args.overwrite, progress=not args.quiet,
                           min_fused=1)
    except NothingFused as exc:
        print(exc.summary.text(), file=sys.stderr)
        raise BagError(f"nothing could be fused from {args.input} (see the counts above); no output written") from None
    print(f"wrote {args.output}\n{summary.text()}")
    if explicit and summary.modes.get("classical"):
        what = "DIFF-MF" if kind == "diffmf" else kind
        print(f"diffmf bag: error: {what} failed during the run; {summary.modes['classical']} frame(s) were "
              f"fused with the classical fallback (FusionInfo mode CLASSICAL). The output {args.output} is kept.",
              file=sys.stderr)
        return 1
    return 0
