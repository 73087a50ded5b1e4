#!/usr/bin/env python3
"""What each fuser of the node costs per frame, with and without the video smoothing
(SteadyVideoFuser), on this machine's CPU.

    .venv/bin/python scripts/video_smoothing_cost.py --size 640x512 --threads 2 --rounds 30

One process: the warm rule (WarmRuleFuser, the node's default) and the network with the shipped
weights (Fuser), each frame by frame and with the smoothing, are timed in turn, A B C D A B C D ...,
on a slowly panning textured pair, so that all see the same machine load; prints the median of
each and what the smoothing adds to each fuser.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch

from diffmf_core.fuser import Fuser, SteadyVideoFuser, WarmRuleFuser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="640x512", help="WxH (default 640x512)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=30, help="timed frames of each (default 30)")
    p.add_argument("--fusers", nargs="+", choices=("warm_rule", "diffmf"), default=["warm_rule", "diffmf"],
                   help="fusers to time (default both)")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    scene = [np.clip(128 + 60 * cv2.GaussianBlur(rng.normal(0, 1, (height, width + args.rounds + 3)), (0, 0), 2.0),
                     0, 255).astype(np.uint8) for _ in range(2)]
    runs = {}
    for kind in args.fusers:
        fuser = WarmRuleFuser(device="cpu") if kind == "warm_rule" else Fuser(device="cpu")
        runs[f"{kind}, frame by frame"] = fuser
        runs[f"{kind}, video smoothing"] = SteadyVideoFuser(fuser)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for t in range(args.rounds + 3):
        ir, vi = (s[:, t:t + width] for s in scene)
        for name, f in runs.items():
            start = time.perf_counter()
            f.fuse(ir, cv2.cvtColor(vi, cv2.COLOR_GRAY2BGR))
            if t >= 3:  # warm-up frames not counted
                times[name].append((time.perf_counter() - start) * 1e3)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for k, v in medians.items():
        print(f"{k:28s} median {v:7.1f} ms  ({len(times[k])} frames, {args.size}, {args.threads} threads, CPU)")
    for kind in args.fusers:
        extra = medians[f"{kind}, video smoothing"] - medians[f"{kind}, frame by frame"]
        print(f"{kind}: the smoothing costs {extra:+.1f} ms per frame")


if __name__ == "__main__":
    main()
