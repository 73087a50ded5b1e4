#!/usr/bin/env python3
"""What the node's video smoothing (SteadyVideoFuser) costs per frame, on this machine's CPU.

    .venv/bin/python scripts/video_smoothing_cost.py --size 640x512 --threads 2 --rounds 30

One process, shipped weights: frame by frame (Fuser.fuse) and with the smoothing
(SteadyVideoFuser.fuse) are timed in turn, A B A B ..., on a slowly panning textured pair, so that
both see the same machine load; prints the median of each and the difference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch

from diffmf_core.fuser import Fuser, SteadyVideoFuser


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="640x512", help="WxH (default 640x512)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=30, help="timed frames of each (default 30)")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    scene = [np.clip(128 + 60 * cv2.GaussianBlur(rng.normal(0, 1, (height, width + args.rounds + 3)), (0, 0), 2.0),
                     0, 255).astype(np.uint8) for _ in range(2)]
    fuser = Fuser(device="cpu")
    steady = SteadyVideoFuser(fuser)
    times: dict[str, list[float]] = {"frame by frame": [], "video smoothing": []}
    for t in range(args.rounds + 3):
        ir, vi = (s[:, t:t + width] for s in scene)
        for name, f in (("frame by frame", fuser), ("video smoothing", steady)):
            start = time.perf_counter()
            f.fuse(ir, cv2.cvtColor(vi, cv2.COLOR_GRAY2BGR))
            if t >= 3:  # warm-up frames not counted
                times[name].append((time.perf_counter() - start) * 1e3)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for k, v in medians.items():
        print(f"{k:16s} median {v:7.1f} ms  ({len(times[k])} frames, {args.size}, {args.threads} threads, CPU)")
    print(f"smoothing costs {medians['video smoothing'] - medians['frame by frame']:+.1f} ms per frame")


if __name__ == "__main__":
    main()
