"""``diffmf train``: the command's options and their checks; the training loop itself, its outputs
and validation are diffmf_core.training.train (``run``).

Output policy (diffmf_core.common.outputs), checked before training starts: ``--out`` is never an
input, inside one or around one (``--data`` roots, ``--init``); it is locked for the run (a second
run to it is refused); train writes only ``TRAIN_FILES`` there, listed in its ``.diffmf-train``
manifest, and continues or replaces (``--fresh``) only files that manifest lists: a file of one of
those names that it does not list is in the way (refused, named). A run folder of an older diffmf
without a manifest is adopted when its checkpoint is a diffmf train checkpoint. An explicit
``--device`` must exist. Refusals are one line and exit code 2; a refused run leaves nothing.

    diffmf train --data DATA/RoadScene DATA/M3SVD --holdout '1230_1202_*' --val-every 250 --out runs/train/live
    torchrun --nproc_per_node 2 -m diffmf_core.cli train ...      # DistributedDataParallel
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from diffmf_core.common.argtypes import device as device_arg
from diffmf_core.common.argtypes import float_range, int_range, path_arg
from diffmf_core.common.paths import shared_data_dir
from diffmf_core.config import HEAD_MAPS, HEAD_REGIONS, PRESETS

# every file `diffmf train` writes into --out (checkpoint.tmp: the checkpoint before its atomic rename)
TRAIN_FILES = ("checkpoint.safetensors", "checkpoint.tmp", "weights.safetensors", "best.safetensors",
               "log.csv", "val.csv")


def configure_parser(p: argparse.ArgumentParser) -> None:
    default_data = [shared_data_dir() / "train" / "RoadScene"] if shared_data_dir() else None
    p.add_argument("--data", type=path_arg, nargs="+", default=default_data,
                   help="one or more roots with ir/ and vi/ (default: shared RoadScene)")
    p.add_argument("--holdout", action="append", default=[], metavar="PATTERN",
                   help="pairs whose name matches this glob (e.g. a clip '1230_1202_*') are kept out of "
                        "training and used for validation; repeatable")
    p.add_argument("--val-every", type=int_range(0), default=0, help="validate every K steps (0: never)")
    p.add_argument("--val-max", type=int_range(1), default=12, help="validate on at most N held-out pairs")
    p.add_argument("--preset", default="live", choices=sorted(PRESETS), help="network to train (default: live)")
    p.add_argument("--out", type=path_arg, default=None,
                   help="run folder (default runs/train/<preset>); holds only train's own files, see above")
    p.add_argument("--iters", type=int_range(1), default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=int_range(1), default=46, help="epochs over the data set (paper: 46)")
    p.add_argument("--batch-size", type=int_range(1), default=4, help="per process (paper: 4)")
    p.add_argument("--crop", type=int_range(32), default=128, help="random square crop side in pixels")
    p.add_argument("--lr", type=float_range(0, lo_open=True), default=2e-5,
                   help="Adam learning rate (paper: 2e-5)")
    p.add_argument("--lr-min", type=float_range(0), default=None,
                   help="cosine-decay the lr to this value (default: constant)")
    p.add_argument("--loss", default="paper", choices=("paper", "score", "rule"),
                   help="paper: Eq. 14 (the --lambda-* weights); score: one minus the validation score on "
                        "each training crop, with differentiable metrics (losses.ScoreLoss); rule: stay the "
                        "decoder's rule away from warm targets (losses.RuleLoss; use with --lambda-target)")
    p.add_argument("--lambda-target", type=float_range(0), default=0.0,
                   help="weight of the warm-target loss (losses.TargetLoss), added to --loss (0: off)")
    p.add_argument("--target-radius", type=int_range(1), default=16,
                   help="radius in pixels of the warm-target loss's top-hat and surround box (losses.TargetLoss; "
                        "also where --loss rule relieves warm pixels)")
    p.add_argument("--target-share", type=float_range(0, 1, lo_open=True), default=1.0,
                   help="share of its thermal contrast a warm target must keep before the warm-target loss "
                        "stops pushing (losses.TargetLoss; 1: all of it)")
    p.add_argument("--target-norm", default="targets", choices=("targets", "pixels"),  # losses.TargetLoss.NORMS
                   help="warm-target loss divided by the targets' thermal contrast (targets: 0..1 per crop) "
                        "or by the pixel count (pixels: lost contrast priced per pixel, as --loss rule)")
    p.add_argument("--detail-overshoot", type=float_range(0), default=0.0,
                   help="--loss rule: weight of fused detail stronger than the rule's (0: free; 1: held at "
                        "the rule's away from warm targets)")
    p.add_argument("--lambda-ssim", type=float_range(0), default=10.0, help="weight of the SSIM loss (Eq. 11)")
    p.add_argument("--lambda-text", type=float_range(0), default=20.0, help="weight of the texture loss (Eq. 12)")
    p.add_argument("--lambda-int", type=float_range(0), default=20.0, help="weight of the intensity loss (Eq. 13)")
    p.add_argument("--text-overshoot", type=float_range(0), default=1.0,
                   help="weight of fused gradients stronger than both sources' in the texture loss "
                        "(1: the paper's symmetric L1; smaller lets the output be sharper)")
    p.add_argument("--aggregation", default="max", choices=("max", "mean"), help="M of Eq. 13")
    p.add_argument("--seed", type=int, default=0, help="random seed (initial weights, crops, order)")
    p.add_argument("--ckpt-every", type=int_range(1), default=100, help="checkpoint every K steps")
    p.add_argument("--log-every", type=int_range(1), default=10, help="write log.csv every K steps")
    p.add_argument("--workers", type=int_range(0), default=0, help="DataLoader workers")
    p.add_argument("--threads", type=int_range(1), default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", type=device_arg,
                   help="auto, cpu, cuda or cuda:N; an explicit device that is unavailable is an error")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--init", type=path_arg, default=None,
                   help="start from this weights file (fine-tuning; its preset must match --preset)")
    p.add_argument("--reset-head", action="store_true",
                   help="with --init: the decoder head starts as a new network's (small random weights); only the trunk is loaded")
    p.add_argument("--stretch", type=float_range(1, 2), default=1.0,
                   help="output stretch s of the decoder, f' = m + s (f - m), the rule's too (default 1: none)")
    p.add_argument("--head-region", default="everywhere", choices=HEAD_REGIONS,
                   help="warm: the head departs from the rule only near warm structures of the thermal image")
    p.add_argument("--warm-margin", type=int_range(0, 64), default=8,
                   help="with --head-region warm: pixels around a warm structure that count as near it (multiple of 4)")
    p.add_argument("--head-maps", default="all", choices=HEAD_MAPS,
                   help="selection: the head sets only the selections; gains and contrast stay the rule's")


def _refuse(message: str) -> int:
    print(f"diffmf train: {message}", file=sys.stderr)
    return 2


def _adopt_legacy(out: Path) -> None:
    """A run folder of a diffmf from before manifests: when its checkpoint is a diffmf train
    checkpoint, its train files are listed in a new manifest (so that it can resume)."""
    from diffmf_core.common.outputs import read_manifest, record

    ckpt = out / "checkpoint.safetensors"
    if read_manifest(out, "train") or not ckpt.is_file():
        return
    try:
        from safetensors import safe_open

        with safe_open(str(ckpt), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file: not ours, check_results names it
        return
    if "step" in meta and "meta" in meta:
        record(out, "train", [n for n in TRAIN_FILES if (out / n).is_file()])


def main(args: argparse.Namespace) -> int:
    """Check the options, inputs and output (exit 2 on a refusal), then train (``run``)."""
    from diffmf_core.common.outputs import OutputError, output_lock, results_folder

    if args.data is None:
        return _refuse("--data is required (no shared data folder found)")
    if args.val_every and not args.holdout:
        return _refuse("--val-every needs --holdout (validation uses held-out pairs only)")
    from diffmf_core.fuser import resolve_device
    from diffmf_core.training.data import DataError
    from diffmf_core.training.train import run, split_pairs  # torch and the model load only when training runs
    from diffmf_core.weights import WeightsError, read_metadata

    try:
        split_pairs(args.data, args.holdout)
        if args.device != "auto":
            resolve_device(args.device)
        if args.init is not None:
            read_metadata(args.init)
    except DataError as exc:
        return _refuse(str(exc))
    except WeightsError as exc:
        return _refuse(f"--init: {exc}")
    except RuntimeError as exc:
        return _refuse(str(exc))
    args.out = args.out or Path("runs/train") / args.preset
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the output
        return run(args)
    try:
        with output_lock(args.out):
            if args.out.is_dir():
                _adopt_legacy(args.out)
            with results_folder(args.out, TRAIN_FILES, [*args.data, args.init], False, "train", own_ok=True) as out:
                out.record(TRAIN_FILES)
                return run(args)
    except OutputError as exc:
        return _refuse(str(exc))
