"""rosbag2 tools (``diffmf bag``), one module per action: from_pairs, fuse, info, report (common:
shared helpers). This module holds the command line and re-exports the public functions.

Pure Python over ``rosbags`` (no ROS runtime, no rclpy). Bags are rosbag2 directories (MCAP by
default, sqlite3 selectable) with the ROS 2 kilted typestore (jazzy-compatible message layouts)
plus ``diffmf_ros/msg/FusionInfo`` registered from ``msg/FusionInfo.msg``.

- ``from-pairs``: ir/vi pairs -> ``/thermal/image_raw`` + ``/rgb/image_raw`` (sensor_msgs/Image
  mono8/bgr8, or ``/compressed`` CompressedImage JPEG) with camera-like stamps: nominal
  ``--rate``, independent uniform jitter, a constant thermal delay and random drops. Messages are
  written in stamp order and each message's bag (receive) time equals its header stamp.
- ``fuse``: decode -> the node's per-frame routine (diffmf_core.live.frames: pairing, degraded modes,
  stamp/frame rule; FusionPipeline) with the node's settings (diffmf_core.live.settings) -> a new bag
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
import sys

from diffmf_core.common.argtypes import device as device_arg
from diffmf_core.common.argtypes import float_range, int_range, path_arg
from diffmf_core.common.imageheader import MAX_PIXELS
# The public functions of the actions, importable as diffmf_core.tools.bag.<name>.
from diffmf_core.tools.bag.common import (  # noqa: F401
    CAMERA_INFO_TYPE, COMPRESSED_TYPE, FUSED_TOPIC, FUSION_INFO_TYPE, IMAGE_TYPE, INFO_TOPIC, MAX_DROP, MAX_STAMP_S,
    RGB_TOPIC, STORAGES, THERMAL_TOPIC, BagError, camera_info_msg, decode_msg, header, image_msg, iter_messages,
    make_typestore, open_reader, open_writer, sigterm_as_interrupt)
from diffmf_core.tools.bag.from_pairs import _cmd_from_pairs, plan_stamps, write_pairs_bag  # noqa: F401
from diffmf_core.tools.bag.fuse import _cmd_fuse, fuse_bag, load_node_params  # noqa: F401
from diffmf_core.tools.bag.info import _cmd_info, bag_info  # noqa: F401
from diffmf_core.tools.bag.report import _cmd_report, write_report  # noqa: F401


def configure_parser(p: argparse.ArgumentParser) -> None:
    from diffmf_core.common.argtypes import examples_epilog

    raw = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    policy = ("Output policy: the output is never an input (nor inside or around one); an existing output "
              "is an error unless --overwrite, which replaces only a bag that the same command wrote (its "
              ".diffmf-bag-* manifest lists every file in it; anything else in the folder is named and the run "
              "refused). One run per output at a time.")

    fp = sub.add_parser("from-pairs", help="write a thermal+RGB bag from a folder of ir/vi pairs",
                        description="Write a thermal+RGB rosbag2 from ir/+vi/ (or DroneVehicle "
                                    "trainimgr/+trainimg/) pairs with camera-like stamps.", formatter_class=raw,
                        epilog=examples_epilog(["diffmf bag from-pairs DATA runs/bags/pairs --compressed",
                                                "diffmf bag from-pairs DATA runs/bags/jitter --jitter-ms 3 "
                                                "--drop 0.05 --limit 50"], policy))
    fp.add_argument("pairs", type=path_arg, help="folder with ir/+vi/ or DroneVehicle trainimgr/+trainimg/")
    fp.add_argument("output", type=path_arg, help="output bag folder (must not exist, see --overwrite)")
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
    fp.add_argument("--max-pixels", type=int_range(1), default=MAX_PIXELS,
                    help=f"largest image accepted, pixels (default {MAX_PIXELS}, the node's max_image_pixels)")
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
    fu.add_argument("input", type=path_arg, help="input bag (folder, .mcap or .db3)")
    fu.add_argument("output", type=path_arg, help="output bag folder (must not exist, see --overwrite)")
    fu.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")
    fu.add_argument("--thermal-topic", help="default: /thermal/image_raw or its /compressed")
    fu.add_argument("--rgb-topic", help="default: /rgb/image_raw or its /compressed")
    fu.add_argument("--params-file", type=path_arg, help="node parameters YAML (default: config/fuse.yaml)")
    fu.add_argument("--fuser", choices=("warm_rule", "diffmf", "classical"),
                    help="override the fuser parameter (default: the params file's, warm_rule)")
    fu.add_argument("--device", type=device_arg,
                    help="override the device parameter (auto, cpu, cuda, cuda:N); an explicit device "
                         "that cannot be used is an error (with the classical fuser: refused)")
    fu.add_argument("--weights", help="override the weights parameter (.safetensors) of --fuser diffmf; a "
                                      "file that cannot be used is an error, not a classical fallback "
                                      "(with another fuser: refused)")
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
    rp.add_argument("recorded", type=path_arg, help="bag with /fused/image and /fused/info (optionally the inputs)")
    rp.add_argument("--input", required=True, type=path_arg, help="the bag that was played into the node")
    rp.add_argument("--outdir", required=True, type=path_arg, help="folder for fused.mp4, strip.png, summary.md")
    rp.add_argument("--params-file", type=path_arg, help="node parameters YAML used (default: config/fuse.yaml)")
    rp.add_argument("--device", default="", help="device the node ran on, for the summary")
    rp.add_argument("--min-frames", type=int_range(0), default=1,
                    help="refuse (exit 2, nothing written) a recording with fewer fused frames (default 1)")
    rp.add_argument("--overwrite", action="store_true",
                    help="replace fused.mp4/strip.png/summary.md of an earlier report in --outdir")
    rp.set_defaults(_bag_func=_cmd_report)

    inf = sub.add_parser("info", help="topics, counts and duration of a bag",
                         description="Topics, types, message counts (counted in the storage, compared with "
                                     "metadata.yaml), rates and duration of a bag.", formatter_class=raw,
                         epilog=examples_epilog(["diffmf bag info samples/m3svd_0117_1605",
                                                 "diffmf bag info runs/bags/fused --json"]))
    inf.add_argument("bag", type=path_arg, help="bag folder, .mcap or .db3 file")
    inf.add_argument("--json", action="store_true", help="machine-readable output")
    inf.set_defaults(_bag_func=_cmd_info)


def main(args) -> int:
    """Run one ``diffmf bag`` action; errors print one clear line and return non-zero."""
    from diffmf_core.training.data import DataError

    try:
        with sigterm_as_interrupt():
            return args._bag_func(args)
    except KeyboardInterrupt:
        print("diffmf bag: interrupted; partial output removed", file=sys.stderr)
        return 130
    except (BagError, DataError, ValueError) as exc:
        print(f"diffmf bag: error: {exc}", file=sys.stderr)
        return 2
