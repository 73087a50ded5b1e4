#!/usr/bin/env python3
"""How the node's video path (SteadyVideoFuser) keeps warm targets when the camera pans.

    .venv/bin/python scripts/video_pan_check.py --pan 3 --frames 60

The demo clip (DIFFMF_DATA, default ../shared/data: video/M3SVD_0117_1605, a still camera) is
cropped with a window that moves ``--pan`` px per frame, as a panning UAV camera sees it. For each
fuser and smoothing, every frame is fused on the video path (stamps at 30 fps) and on its own;
prints the mean and 99th percentile of |video - frame by frame| (grey levels) and the mean
warm-target retention of both over the frames after the first ten. ``--no-camera-shift`` runs the
video path without following the camera (the smoothed past stays put), for comparison.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffmf_core import fuser as fusers  # noqa: E402
from diffmf_core.common.color import to_gray  # noqa: E402
from diffmf_core.training.data import find_pairs, load_pair  # noqa: E402
from diffmf_core.training.metrics import target_retention  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get("DIFFMF_DATA", REPO.parent / "shared" / "data"))
    p.add_argument("--clip", type=Path, default=data / "video" / "M3SVD_0117_1605", help="folder of consecutive pairs")
    p.add_argument("--pan", type=int, default=3, help="pixels the crop window moves per frame (default 3)")
    p.add_argument("--frames", type=int, default=60, help="frames used (default 60)")
    p.add_argument("--no-camera-shift", action="store_true", help="do not follow the camera (for comparison)")
    args = p.parse_args()
    if not args.clip.is_dir():
        print(f"video_pan_check: {args.clip} not found (set DIFFMF_DATA or --clip)", file=sys.stderr)
        return 2
    if args.no_camera_shift:
        fusers.camera_shift = lambda *a: (0, 0)
    frames = [load_pair(a, b) for _, a, b in find_pairs(args.clip)[:args.frames]]
    width = frames[0][0].shape[1] - args.pan * len(frames)
    if width < 64:
        print("video_pan_check: --pan x --frames leaves less than 64 px of width", file=sys.stderr)
        return 2
    warm, network = fusers.WarmRuleFuser(device="cpu"), fusers.Fuser(device="cpu")
    for name, fuser, smoothing in (("warm_rule", warm, 0.95), ("warm_rule", warm, 0.7),
                                   ("diffmf", network, 0.95), ("diffmf", network, 0.7)):
        video = fusers.SteadyVideoFuser(fuser, smoothing)
        diffs, kept_video, kept_alone = [], [], []
        for t, (ir, vi) in enumerate(frames):
            ir, vi = ir[:, args.pan * t:args.pan * t + width], vi[:, args.pan * t:args.pan * t + width]
            on_video = to_gray(video.fuse(ir, vi, stamp_s=t / 30)).astype(np.float32)
            alone = to_gray(fuser.fuse(ir, vi)).astype(np.float32)
            if t >= 10:
                diffs.append(np.abs(on_video - alone).ravel())
                kept_video += target_retention(to_gray(ir), on_video)
                kept_alone += target_retention(to_gray(ir), alone)
        d = np.concatenate(diffs)
        print(f"{name:9s} smoothing {smoothing:4.2f}  pan {args.pan} px/frame  |video - frame by frame| mean "
              f"{d.mean():5.2f} p99 {np.percentile(d, 99):5.1f}  TR video {np.mean(kept_video):.3f} "
              f"frame by frame {np.mean(kept_alone):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
