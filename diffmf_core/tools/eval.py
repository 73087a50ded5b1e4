"""``diffmf eval``: the command's options, output checks and report files; the metrics, per-dataset
tables, contact sheets and flicker are diffmf_core.training.evaluation.

For every dataset root it writes under ``--out/<dataset>/`` the files of ``evaluate_methods`` (the
metrics and warm-target retention of each method);
``--out/results.md`` collects all tables, which are also printed. ``--clip DIR`` adds each method's
temporal flicker (``clip_flicker``) to ``--out/flicker.md``. training/ (and torch with it) is
imported when the command runs, not to build its parser.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffmf_core.baselines import ClassicalFuser
from diffmf_core.common.argtypes import float_range, int_range, path_arg
from diffmf_core.common.outputs import OutputError, results_folder, write_bytes
from diffmf_core.config import PRESETS
from diffmf_core.live.settings import NodeSettings
from diffmf_core.tools.fuse import FuserUnavailable, make_fuser

DEFAULT_METHODS = "warm_rule,diffmf,rule,mean,max,laplacian,gff,laplacian_max"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=path_arg, nargs="+",
                   help="dataset roots with ir/ + vi/ (default: shared test/TNO and test/DroneVehicle)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated: warm_rule, diffmf and/or rule,mean,max,laplacian,gff,laplacian_max "
                        f"(warm_rule: the node's default fuser, the decoder's warm rule; rule: the network's decoder "
                        f"rule without the network; default: {DEFAULT_METHODS})")
    p.add_argument("--weights", help="DIFF-MF .safetensors file (default: shipped weights of --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="DIFF-MF preset (default: live)")
    p.add_argument("--out", type=path_arg, default=Path("runs/eval"), help="output folder (default: runs/eval)")
    p.add_argument("--limit", type=int_range(1), help="evaluate only the first N pairs of each dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier `diffmf eval` in --out (never other files)")
    p.add_argument("--sheet", action="append", metavar="GLOB",
                   help="pairs whose name matches this glob make a set's contact sheet (a set where none "
                        "matches: 4 spread over it); repeatable, e.g. --sheet '0117_1620_0100'")
    p.add_argument("--clip", type=path_arg, help="folder of consecutive pairs (a video): also measure each "
                                              "method's temporal flicker (grey levels beyond the sources' change)")
    p.add_argument("--video-smoothing", type=float_range(0, 0.95), default=NodeSettings.video_smoothing,
                   help="with --clip: warm_rule's and DIFF-MF's video path as the node runs it with this video_smoothing "
                        f"(default {NodeSettings.video_smoothing}, the node's default)")


def main(args: argparse.Namespace) -> int:
    from diffmf_core.training.data import DataError, find_pairs
    from diffmf_core.training.evaluation import default_datasets

    datasets = args.data or default_datasets()
    if not datasets:
        print("error: no --data given and the shared test sets were not found "
              "(set DIFFMF_DATA or place them in ../shared/data)", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        print("error: --methods is empty", file=sys.stderr)
        return 2
    folders, used = [], set()
    for root in datasets:
        name = root.name
        while name in used:
            name += "_"
        used.add(name)
        folders.append(name)
    outputs = ["results.md"] + (["flicker.md"] if args.clip is not None else [])
    outputs += [f"{name}/{file}" for name in folders
                for file in ("results.md", "contact_sheet.png", *(f"{m}.csv" for m in methods))]
    if "diffmf" not in methods and (args.weights or args.preset):
        print("error: --weights/--preset apply only to the diffmf method, which --methods does not name",
              file=sys.stderr)
        return 2
    try:  # every input is checked before anything is written
        for root in datasets:
            find_pairs(root)
        if args.clip is not None and len(find_pairs(args.clip)[:args.limit]) < 2:
            raise DataError(f"--clip {args.clip}: a clip needs at least two frames")
        with results_folder(args.out, outputs, [*datasets, *([args.clip] if args.clip else [])], args.overwrite,
                            "eval") as results:
            fusers = {m: make_fuser(m, args.weights, args.preset) for m in methods}
            if "rule" in fusers and "diffmf" in fusers:  # the rule of the network evaluated
                cfg = fusers["diffmf"].config
                fusers["rule"] = ClassicalFuser("rule", levels=cfg.pyramid_levels, stretch=cfg.output_stretch)
            return _evaluate(args, datasets, folders, fusers, results, outputs)
    except (DataError, FuserUnavailable, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _evaluate(args, datasets, folders, fusers, results, outputs) -> int:
    """Evaluate into the checked, locked ``--out`` (``results``: the command's manifest)."""
    from diffmf_core.training.data import DataError
    from diffmf_core.training.evaluation import clip_flicker, evaluate_methods

    results.record(outputs)
    tables = []
    for root, name in zip(datasets, folders):
        try:
            evaluate_methods(root, fusers, args.out / name, args.limit, sheet=args.sheet)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        tables.append((args.out / name / "results.md").read_text())
    if args.clip is not None:
        try:
            flicker = clip_flicker(args.clip, fusers, args.limit, args.video_smoothing)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        smoothing = ("" if args.video_smoothing == NodeSettings.video_smoothing
                     else f"; warm_rule and DIFF-MF with video_smoothing {args.video_smoothing}")
        lines = [f"### Temporal flicker on {args.clip.name} (grey levels of frame-to-frame change beyond "
                 f"the larger source change; lower is steadier{smoothing})", "", "| Method | flicker |", "|---|---:|"]
        lines += [f"| {m} | {v:.3f} |" for m, v in flicker.items()]
        table = "\n".join(lines) + "\n"
        write_bytes(args.out / "flicker.md", table.encode())
        tables.append(table)
    report = "\n".join(tables)
    write_bytes(args.out / "results.md", report.encode())
    print(report)
    return 0
