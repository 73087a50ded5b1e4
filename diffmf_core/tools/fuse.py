"""``diffmf fuse``: fuse one pair (``--ir A --vi B``) or every pair under ``--data ROOT`` into
colour PNGs (visible chroma kept, see color.py) written atomically to ``--out``.

``--method`` is ``warm_rule`` (``diffmf_core.fuser.WarmRuleFuser``, the node's default fuser),
``diffmf`` (``diffmf_core.fuser.Fuser`` with ``--weights``/``--preset``) or a classical name from
``baselines.CLASSICAL_FUSERS``. Any image size; pairs of different sizes are
handled by ``data.load_pair`` (infrared resized to the visible frame). A folder with unmatched
names is refused before anything is written (exit 2); an unreadable pair is skipped and named, the
others are written (exit 1). Ctrl-C leaves only complete PNGs (exit 130, diffmf_core.cli).
``make_fuser`` is shared with ``diffmf eval``. The image reader (training/data.py) and the network
(which import torch) are imported when the command runs, not to build its parser.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from diffmf_core.baselines import CLASSICAL_FUSERS, ClassicalFuser
from diffmf_core.common.argtypes import path_arg
from diffmf_core.common.imageheader import MAX_PIXELS, format_pixels, size_limit_problem

METHOD_CHOICES = ["warm_rule", "diffmf", *CLASSICAL_FUSERS]


class FuserUnavailable(RuntimeError):
    """The requested fusion method cannot be constructed; the message says why and what to do."""


def make_fuser(method: str, weights: str | None = None, preset: str | None = None):
    """A fuser object with ``.name`` and ``.fuse(ir, vi)``: the warm rule or DIFF-MF (lazy imports),
    or classical."""
    if method in CLASSICAL_FUSERS:
        return ClassicalFuser(method)
    if method not in METHOD_CHOICES:
        raise FuserUnavailable(f"unknown method {method!r}; choose from {', '.join(METHOD_CHOICES)}")
    try:
        torch_fusers = importlib.import_module("diffmf_core.fuser")
    except ImportError as exc:
        raise FuserUnavailable(f"method {method!r} is unavailable: diffmf_core.fuser cannot be imported ({exc}); "
                               f"use a classical method ({', '.join(CLASSICAL_FUSERS)})") from exc
    if method == "warm_rule":
        return torch_fusers.WarmRuleFuser()
    try:
        return torch_fusers.Fuser(weights=weights, preset=preset)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear CLI error
        source = weights or f"the shipped {preset or 'default'} weights"
        raise FuserUnavailable(f"method 'diffmf' could not load {source}: {type(exc).__name__}: {exc}") from exc


# resident memory per input pixel measured on the CPU (docs/performance.md: 447 MB live and
# 19.9 GB paper at 1280x1024), rounded up
BYTES_PER_PIXEL = {"live": 400, "paper": 16_000}


def positive_pixels(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count such as 16777216, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def size_problem(shape, fuser, max_pixels: int) -> str | None:
    """Why a pair of ``shape`` (H, W, ...) is refused up front, or None: above ``max_pixels``, or
    (DIFF-MF on the CPU) an estimated memory need above the memory available now."""
    h, w = shape[:2]
    pixels = h * w
    preset = getattr(getattr(fuser, "config", None), "name", None)
    need = BYTES_PER_PIXEL.get(preset, 0) * pixels
    estimate = f"; DIFF-MF {preset} needs about {need / 2**30:.1f} GB at this size" if need else ""
    if pixels > max_pixels:
        return (f"{w}x{h} = {format_pixels(pixels)} exceeds the input limit of {format_pixels(max_pixels)} "
                f"(--max-pixels raises it{estimate})")
    device = getattr(getattr(fuser, "device", None), "type", "cpu")
    if need and device == "cpu":
        try:
            import psutil

            available = psutil.virtual_memory().available
        except ImportError:
            return None
        if need > available:
            return (f"{w}x{h}: DIFF-MF {preset} needs about {need / 2**30:.1f} GB here, "
                    f"{available / 2**30:.1f} GB are available; use a smaller image or a classical --method")
    return None


def pairs_from_folders(ir_dir: Path, vi_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, ir, vi) for the images of two folders matched by file name stem (extensions may differ)."""
    from diffmf_core.training.data import DataError, match_by_stem

    pairs = match_by_stem(ir_dir, vi_dir, f"--ir {ir_dir} / --vi {vi_dir}")
    if not pairs:
        raise DataError(f"--ir {ir_dir} / --vi {vi_dir}: no images (PNG/JPG/BMP/TIF) in the folders")
    return pairs


def configure_parser(p: argparse.ArgumentParser) -> None:
    from diffmf_core.config import PRESETS

    p.epilog = ("Outputs: OUT/<name>.png per pair, named after the visible image. An existing output is an "
                "error unless --overwrite, which replaces only PNGs that diffmf fuse wrote there earlier "
                "(listed in the folder's .diffmf-fuse manifest); inputs are never written.")
    src = p.add_argument_group("input (either --ir and --vi, or --data)")
    src.add_argument("--ir", type=path_arg, help="infrared image of a single pair, or a folder of infrared images")
    src.add_argument("--vi", type=path_arg, help="visible image of a single pair, or a folder of visible images "
                                             "(matched to --ir by file name)")
    src.add_argument("--data", type=path_arg, help="folder with ir/ + vi/ (or DroneVehicle *imgr/ + *img/)")
    p.add_argument("--method", default="warm_rule", choices=METHOD_CHOICES,
                   help="fuser (default: warm_rule, the node's default; diffmf: the network)")
    p.add_argument("--weights", help="DIFF-MF .safetensors file (default: shipped weights of --preset); "
                                     "a file that cannot be used is an error; only with --method diffmf")
    p.add_argument("--preset", choices=sorted(PRESETS), help="DIFF-MF preset (default: live)")
    p.add_argument("--out", type=path_arg, default=Path("runs/fuse"), help="output folder (default: runs/fuse)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace PNGs an earlier diffmf fuse wrote in --out (never other files)")
    p.add_argument("--max-pixels", type=positive_pixels, default=MAX_PIXELS,
                   help=f"largest input accepted, pixels (default {MAX_PIXELS}, as the node)")
    p.add_argument("--strip", default="auto", choices=["auto", "none"],
                   help="remove a uniform white frame such as DroneVehicle's 100-px border (default: auto)")


def main(args: argparse.Namespace) -> int:
    from diffmf_core.common.outputs import OutputError, results_folder
    from diffmf_core.training.data import DataError, find_pairs

    if args.data is not None and (args.ir or args.vi):
        print("error: give either --ir and --vi, or --data, not both", file=sys.stderr)
        return 2
    if args.method != "diffmf" and (args.weights or args.preset):
        print(f"error: --weights/--preset apply only to --method diffmf, not {args.method!r}", file=sys.stderr)
        return 2
    try:
        if args.data is not None:
            pairs = find_pairs(args.data)
            inputs = [args.data]
        elif args.ir and args.vi:
            if args.ir.is_dir() != args.vi.is_dir():
                raise DataError("--ir and --vi must both be files or both be folders")
            pairs = (pairs_from_folders(args.ir, args.vi) if args.ir.is_dir()
                     else [(args.vi.stem, args.ir, args.vi)])
            inputs = [args.ir, args.vi]
        else:
            print("error: give --ir and --vi, or --data", file=sys.stderr)
            return 2
        names = [f"{name}.png" for name, _, _ in pairs]
        with results_folder(args.out, names, inputs, args.overwrite, "fuse") as results:
            fuser = make_fuser(args.method, args.weights, args.preset)
            return _fuse_pairs(args, pairs, names, fuser, results)
    except (DataError, FuserUnavailable, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _checked_sizes(ir_path: Path, vi_path: Path, fuser, max_pixels: int) -> None:
    """DataError naming the file when an image's header size is above the limit (the visible one
    also with DIFF-MF's memory estimate), before either is decoded."""
    from diffmf_core.training.data import DataError, image_size

    for path, visible in ((ir_path, False), (vi_path, True)):
        size = image_size(path)
        if size is None:
            continue
        problem = (size_problem(size[::-1], fuser, max_pixels) if visible
                   else size_limit_problem(*size, max_pixels))
        if problem:
            raise DataError(f"{path}: {problem}")


def _fuse_pairs(args, pairs, names, fuser, results) -> int:
    """Fuse and write every pair (the output folder is checked and locked); skipped pairs are named."""
    from tqdm import tqdm

    from diffmf_core.training.data import DataError, load_pair, write_image
    try:
        from diffmf_core.fuser import NonFiniteOutput
    except ImportError:  # no network here (make_fuser said so for diffmf): classical fusers never raise it
        NonFiniteOutput = ()  # an empty tuple of exception types catches nothing

    failures, written = [], 0
    for (name, ir_path, vi_path), out_name in zip(tqdm(pairs, desc=f"fuse ({fuser.name})", unit="pair"), names):
        try:
            _checked_sizes(ir_path, vi_path, fuser, args.max_pixels)
            ir, vi = load_pair(ir_path, vi_path, strip=args.strip, max_pixels=args.max_pixels)
            problem = size_problem(vi.shape, fuser, args.max_pixels)
            if problem:
                raise DataError(f"{vi_path}: {problem}")
            fused = fuser.fuse(ir, vi)
        except DataError as exc:
            failures.append(str(exc))
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
            continue
        except NonFiniteOutput as exc:
            print(f"error: {name}: {exc}; nothing more written", file=sys.stderr)
            return 1
        try:
            if not written:
                results.record(names)  # once, before the first PNG: the folder and its manifest
            written += 1
            write_image(args.out / out_name, fused)
        except (OSError, DataError) as exc:
            print(f"error: cannot write {args.out / out_name}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return 1
    print(f"wrote {len(pairs) - len(failures)} fused image(s) to {args.out}")
    return 1 if failures else 0
