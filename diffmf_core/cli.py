"""The ``diffmf`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs, so ``diffmf --help``
stays fast and a missing optional dependency only affects the subcommand that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fuse": ("diffmf_core.fuse_cmd", "fuse one pair or a folder of ir/vi pairs into colour PNGs"),
    "train": ("diffmf_core.train", "train DIFF-MF (single process or torchrun)"),
    "eval": ("diffmf_core.evaluate", "paper metrics for DIFF-MF and classical baselines"),
    "bench": ("diffmf_core.bench", "latency / memory / scan benchmarks on this device"),
    # The one subcommand outside the core: it drives the ROS node, and imports rclpy only when run.
    "bench-node": ("diffmf_ros.bench_node", "node end-to-end latency at an input rate (needs rclpy)"),
    "flops": ("diffmf_core.flops", "FLOPs and parameters (paper Table VII)"),
    "export": ("diffmf_core.export", "export a preset to ONNX through the portable scan"),
    "bag": ("diffmf_core.bags", "rosbag2 tools: from-pairs, fuse, info"),
    "calib": ("diffmf_core.registration", "homography from picked point correspondences"),
}


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' -> (width 640, height 512)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x512, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Parser with every subcommand listed; only ``command``'s module is imported for its options."""
    parser = argparse.ArgumentParser(prog="diffmf", description="DIFF-MF infrared-visible fusion tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except KeyboardInterrupt:
        print(f"diffmf {args.command}: interrupted (outputs are written atomically: no partial files)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
