"""``diffmf train``: the command's options and their checks; the training loop itself, its outputs
and validation are diffmf_core.training.train (``run``).

    diffmf train --data DATA/RoadScene DATA/M3SVD --holdout '1230_1202_*' --val-every 250 --out runs/train/live
    torchrun --nproc_per_node 2 -m diffmf_core.cli train ...      # DistributedDataParallel
"""
from __future__ import annotations

import argparse
from pathlib import Path

from diffmf_core.common.argtypes import float_range, int_range
from diffmf_core.common.paths import shared_data_dir
from diffmf_core.config import PRESETS


def configure_parser(p: argparse.ArgumentParser) -> None:
    default_data = [shared_data_dir() / "train" / "RoadScene"] if shared_data_dir() else None
    p.add_argument("--data", type=Path, nargs="+", default=default_data,
                   help="one or more roots with ir/ and vi/ (default: shared RoadScene)")
    p.add_argument("--holdout", action="append", default=[], metavar="PATTERN",
                   help="pairs whose name matches this glob (e.g. a clip '1230_1202_*') are kept out of "
                        "training and used for validation; repeatable")
    p.add_argument("--val-every", type=int_range(0), default=0, help="validate every K steps (0: never)")
    p.add_argument("--val-max", type=int_range(1), default=12, help="validate on at most N held-out pairs")
    p.add_argument("--preset", default="live", choices=sorted(PRESETS), help="network to train (default: live)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/train/<preset>)")
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
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this weights file (fine-tuning; its preset must match --preset)")
    p.add_argument("--reset-head", action="store_true",
                   help="with --init: the decoder head starts as a new network's (small random weights); only the trunk is loaded")


def main(args: argparse.Namespace) -> int:
    if args.data is None:
        raise SystemExit("diffmf train: --data is required (no shared data folder found)")
    if args.val_every and not args.holdout:
        raise SystemExit("diffmf train: --val-every needs --holdout (validation uses held-out pairs only)")
    from diffmf_core.training.train import run  # torch and the model load only when training runs

    return run(args)
