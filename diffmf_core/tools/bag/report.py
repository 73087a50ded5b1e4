"""``diffmf bag report``: for a bag recorded from the node (the demo): fused.mp4, strip.png
(thermal / RGB / fused) and summary.md."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from diffmf_core.live.sync import stamp_to_ns
from diffmf_core.tools.bag.common import (BagError, FUSED_TOPIC, FUSION_INFO_TYPE, IMAGE_TYPE, INFO_TOPIC,
                                          MODE_NAMES, decode_msg, iter_messages, make_typestore, open_reader)
from diffmf_core.tools.bag.fuse import load_node_params, pick_image_topic


def sync_pairs(bag: Path, params: dict, thermal_topic: str | None = None, rgb_topic: str | None = None):
    """(thermal stamps, rgb stamps, [(thermal_stamp, rgb_stamp)] the PairSynchronizer forms) for a bag,
    from header stamps only (no image decoding)."""
    from diffmf_core.live.frames import make_synchronizer
    from diffmf_core.live.settings import NodeSettings

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
                 strip_frames: int = 4, overwrite: bool = False, min_frames: int = 0) -> dict:
    """From a recorded fusion bag: ``fused.mp4`` (mp4v, at the input's frame rate), ``strip.png``
    (thermal / RGB / fused rows at ``strip_frames`` times) and ``summary.md`` (frames in/out, pairs,
    drops, modes, FusionInfo latency percentiles, device) in ``outdir``; returns the numbers.

    Output policy as every command (diffmf_core.common.outputs): the three files are written into a hidden
    folder inside ``outdir`` and moved in when all are complete, so an error or Ctrl-C leaves no
    partial file. Fused frames of another size than the first are resized for the video (counted in
    ``frames_resized``). The input bag must be the one that was fused: every input stamp a
    FusionInfo names must be in it, else BagError. Fewer than ``min_frames`` fused frames: BagError
    before anything is written.
    """
    from diffmf_core.common.outputs import OutputError, results_folder

    recorded, input_bag, outdir = Path(recorded), Path(input_bag), Path(outdir)
    try:
        with results_folder(outdir, REPORT_FILES, [recorded, input_bag], overwrite, "bag report") as results:
            with open_reader(recorded) as reader:
                n_fused = reader.topics[FUSED_TOPIC].msgcount if FUSED_TOPIC in reader.topics else 0
            if n_fused < min_frames:
                raise BagError(f"{recorded}: only {n_fused} fused frame(s) (expected at least {min_frames}); "
                               "no report written")
            created = not outdir.exists()
            tmp = None
            try:
                outdir.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".diffmf-report.", suffix=".partial", dir=outdir))
                numbers = _write_report_files(recorded, input_bag, tmp, params, device, strip_frames)
                results.record(REPORT_FILES)
                for name in REPORT_FILES:
                    os.replace(tmp / name, outdir / name)
            except BaseException:
                if created:
                    shutil.rmtree(outdir, ignore_errors=True)
                raise
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
    except OutputError as exc:
        raise BagError(str(exc)) from None
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
    write_report(Path(args.recorded), Path(args.input), Path(args.outdir), params, args.device,
                 overwrite=args.overwrite, min_frames=args.min_frames)
    print((Path(args.outdir) / "summary.md").read_text())
    return 0
