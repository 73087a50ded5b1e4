"""``diffmf fuse``: fuse one pair (``--ir A --vi B``) or every pair under ``--data ROOT`` into
colour PNGs (visible chroma kept, see color.py) written atomically to ``--out``.

``--method`` is ``diffmf`` (``diffmf_core.fuser.Fuser`` with ``--weights``/``--preset``) or a
classical name from ``baselines.CLASSICAL_FUSERS``. Any image size; pairs of different sizes are
handled by ``data.load_pair`` (infrared resized to the visible frame). A folder with unmatched
names is refused before anything is written (exit 2); an unreadable pair is skipped and named, the
others are written (exit 1). Ctrl-C leaves only complete PNGs (exit 130, diffmf_core.cli).
``make_fuser`` is shared with ``diffmf eval``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from diffmf_core.baselines import CLASSICAL_FUSERS, ClassicalFuser
from diffmf_core.data import DataError, find_pairs, load_pair, write_image

METHOD_CHOICES = ["diffmf", *CLASSICAL_FUSERS]


class FuserUnavailable(RuntimeError):
    """The requested fusion method cannot be constructed; the message says why and what to do."""


def make_fuser(method: str, weights: str | None = None, preset: str | None = None):
    """A fuser object with ``.name`` and ``.fuse(ir, vi)``: DIFF-MF (lazy import) or classical."""
    if method in CLASSICAL_FUSERS:
        return ClassicalFuser(method)
    if method != "diffmf":
        raise FuserUnavailable(f"unknown method {method!r}; choose from {', '.join(METHOD_CHOICES)}")
    try:
        from diffmf_core.fuser import Fuser
    except ImportError as exc:
        raise FuserUnavailable(f"method 'diffmf' is unavailable: diffmf_core.fuser cannot be imported ({exc}); "
                               f"use a classical method ({', '.join(CLASSICAL_FUSERS)})") from exc
    try:
        return Fuser(weights=weights, preset=preset)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear CLI error
        source = weights or f"the shipped {preset or 'default'} weights"
        raise FuserUnavailable(f"method 'diffmf' could not load {source}: {type(exc).__name__}: {exc}") from exc


def configure_parser(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input (either --ir and --vi, or --data)")
    src.add_argument("--ir", type=Path, help="infrared image of a single pair")
    src.add_argument("--vi", type=Path, help="visible image of a single pair")
    src.add_argument("--data", type=Path, help="folder with ir/ + vi/ (or DroneVehicle *imgr/ + *img/)")
    p.add_argument("--method", default="diffmf", choices=METHOD_CHOICES, help="fuser (default: diffmf)")
    p.add_argument("--weights", help="DIFF-MF .safetensors file (default: shipped weights of --preset)")
    p.add_argument("--preset", help="DIFF-MF preset name (paper or live)")
    p.add_argument("--out", type=Path, default=Path("runs/fuse"), help="output folder (default: runs/fuse)")
    p.add_argument("--strip", default="auto", choices=["auto", "none"],
                   help="remove a uniform white frame such as DroneVehicle's 100-px border (default: auto)")


def main(args: argparse.Namespace) -> int:
    if args.data is not None and (args.ir or args.vi):
        print("error: give either --ir and --vi, or --data, not both", file=sys.stderr)
        return 2
    try:
        if args.data is not None:
            pairs = find_pairs(args.data)
        elif args.ir and args.vi:
            pairs = [(args.vi.stem, args.ir, args.vi)]
        else:
            print("error: give --ir and --vi, or --data", file=sys.stderr)
            return 2
        fuser = make_fuser(args.method, args.weights, args.preset)
    except (DataError, FuserUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = []
    for name, ir_path, vi_path in tqdm(pairs, desc=f"fuse ({fuser.name})", unit="pair"):
        try:
            ir, vi = load_pair(ir_path, vi_path, strip=args.strip)
            write_image(args.out / f"{name}.png", fuser.fuse(ir, vi))
        except DataError as exc:
            failures.append(str(exc))
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
    print(f"wrote {len(pairs) - len(failures)} fused image(s) to {args.out}")
    return 1 if failures else 0
