"""The ``diffmf`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs, so ``diffmf --help``
stays fast and a missing optional dependency only affects the subcommand that needs it; a module
imports torch, the network, training/, rclpy and rosbags only in the functions that run the
command, so ``diffmf COMMAND --help`` and argument errors are fast too (test_cli_inputs checks it).
Each subcommand's help ends with examples (``EXAMPLES``). An exception that a subcommand does not turn
into its own error message becomes one line and exit code 1 (``DIFFMF_TRACEBACK=1`` re-raises it).
Ctrl-C and SIGTERM end every subcommand with one line and exit code 130.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from diffmf_core.common.argtypes import examples_epilog
from diffmf_core.common.outputs import sigterm_as_interrupt

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fuse": ("diffmf_core.tools.fuse",
             "fuse one pair or folders of ir/vi pairs into colour PNGs (warm rule, network or classical)"),
    "train": ("diffmf_core.tools.train", "train DIFF-MF (single process or torchrun)"),
    "eval": ("diffmf_core.tools.eval", "paper metrics for the warm rule, DIFF-MF and classical baselines"),
    "bench": ("diffmf_core.tools.bench", "latency / memory / scan benchmarks on this device"),
    # The one subcommand outside the core: it drives the ROS node, and imports rclpy only when run.
    "bench-node": ("diffmf_ros.bench_node", "node end-to-end latency at an input rate (needs rclpy)"),
    "flops": ("diffmf_core.tools.flops", "FLOPs and parameters (paper Table VII)"),
    "export": ("diffmf_core.tools.export", "export a preset to ONNX through the portable scan"),
    "bag": ("diffmf_core.tools.bag", "rosbag2 tools: from-pairs, fuse, report, info"),
    "calib": ("diffmf_core.tools.calib", "homography from picked point correspondences"),
}

# subcommand -> examples shown at the end of its --help
EXAMPLES: dict[str, list[str]] = {
    "fuse": ["diffmf fuse --ir ir/0001.png --vi vi/0001.png --out runs/fuse",
             "diffmf fuse --ir DATA/ir --vi DATA/vi --method diffmf --out runs/diffmf",
             "diffmf fuse --ir DATA/ir --vi DATA/vi --method gff --out runs/gff --overwrite"],
    "train": ["diffmf train --data DATA --preset live --iters 2000 --out runs/train/live",
              "diffmf train --data DATA/RoadScene DATA/M3SVD --holdout '1230_1202_*' --val-every 200 --crop 192"],
    "eval": ["diffmf eval --data DATA/TNO --methods diffmf,gff --limit 10 --out runs/eval",
             "diffmf eval --clip DATA/video/M3SVD_0117_1605 --out runs/eval"],
    "bench": ["diffmf bench --device cpu --presets live --sizes 320x256 640x512 --threads 2"],
    "bench-node": ["diffmf bench-node --rate 30 --frames 300 --size 640x512 --device cpu"],
    "flops": ["diffmf flops --height 512 --width 512 --presets live"],
    "export": ["diffmf export --preset live --height 512 --width 640 --out runs/export/live.onnx"],
    "bag": ["diffmf bag from-pairs DATA runs/bags/pairs --compressed --rate 30",
            "diffmf bag fuse runs/bags/pairs runs/bags/fused --fuser classical"],
    "calib": ["diffmf calib --points picks.csv --thermal-size 640x512 --rgb-size 1280x1024 -o cal.yaml"],
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Parser with every subcommand listed; only ``command``'s module is imported for its options."""
    parser = argparse.ArgumentParser(prog="diffmf", description="DIFF-MF infrared-visible fusion tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).configure_parser(p)
            p.epilog = examples_epilog(EXAMPLES.get(name, []), p.epilog)
    parser.epilog = "Run `diffmf COMMAND --help` for a command's options and examples."
    return parser


def _release_quietly(exc: BaseException) -> None:
    """Free what an interrupt left behind in ``exc``'s frames, with destructor errors silenced: an
    object interrupted in its constructor (a progress bar) fails in ``__del__``, and that error's
    traceback would follow the one-line message."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        exc.__traceback__ = None
        gc.collect()
    finally:
        sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line printed by argparse)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    try:
        with sigterm_as_interrupt():
            return int(importlib.import_module(args._module).main(args) or 0)
    except KeyboardInterrupt as exc:
        print(f"diffmf {args.command}: interrupted (outputs are written atomically: no partial files)",
              file=sys.stderr)
        _release_quietly(exc)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if os.environ.get("DIFFMF_TRACEBACK"):
            raise
        kind = type(exc).__name__
        kind = f"{type(exc).__module__}.{kind}" if kind == "error" else kind  # cv2.error, not "error: error:"
        print(f"diffmf {args.command}: error: {kind}: {exc} "
              "(unexpected; DIFFMF_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
