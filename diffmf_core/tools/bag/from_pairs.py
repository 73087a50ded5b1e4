"""``diffmf bag from-pairs``: ir/vi pairs -> a thermal + RGB bag with camera-like stamps
(nominal rate, uniform jitter, a constant thermal delay, random drops); bag time = header stamp."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffmf_core.common.imageheader import MAX_PIXELS, size_limit_problem
from diffmf_core.tools.bag.common import (BagError, COMPRESSED_TYPE, IMAGE_TYPE, MAX_STAMP_S, RGB_FRAME,
                                          RGB_TOPIC, THERMAL_FRAME, THERMAL_TOPIC, atomic_output,
                                          compressed_msg, image_msg, make_typestore, open_writer)


@dataclass
class StampPlan:
    """Which pair/camera goes into the bag at which stamp."""
    stamp_ns: int
    pair: int
    camera: str  # "thermal" or "rgb"


def plan_stamps(n_pairs: int, rate_hz: float, jitter_ms: float = 0.0, thermal_delay_ms: float = 0.0,
                drop: float = 0.0, seed: int = 0, start_ns: int = 1_700_000_000_000_000_000) -> list[StampPlan]:
    """Camera-like stamps for ``n_pairs`` frames, sorted by stamp.

    Frame i is nominally at ``start + i / rate``; RGB adds uniform jitter in +-jitter_ms, thermal
    adds ``thermal_delay_ms`` plus its own jitter; each message is dropped with probability ``drop``.
    """
    if rate_hz <= 0:
        raise ValueError("rate must be > 0")
    period_ms = 1000.0 / rate_hz
    if not 0 <= jitter_ms < period_ms / 2:
        raise ValueError(f"jitter must be in [0, {period_ms / 2:.1f}) ms at {rate_hz} Hz to keep frames in order")
    if not 0 <= drop < 1:
        raise ValueError("drop must be in [0, 1)")
    rng = np.random.default_rng(seed)
    plan = []
    for i in range(n_pairs):
        base_ms = i * period_ms
        for camera, offset_ms in (("thermal", thermal_delay_ms), ("rgb", 0.0)):
            jitter = rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
            dropped = rng.random() < drop
            if not dropped:
                plan.append(StampPlan(start_ns + int(round((base_ms + offset_ms + jitter) * 1e6)), i, camera))
    plan.sort(key=lambda p: (p.stamp_ns, p.camera))
    return plan


def write_pairs_bag(pairs, output: Path, *, storage: str = "mcap", compressed: bool = False,
                    quality: int = 90, rate: float = 30.0, jitter_ms: float = 0.0,
                    thermal_delay_ms: float = 0.0, drop: float = 0.0, seed: int = 0,
                    start_ns: int = 1_700_000_000_000_000_000, strip="auto", overwrite: bool = False,
                    progress: bool = True, inputs=(), max_pixels: int = MAX_PIXELS) -> dict:
    """Write (name, ir_path, vi_path) pairs as a thermal+RGB bag; returns counts per topic.
    ``inputs``: paths the output must not touch (diffmf_core.common.outputs). An image above
    ``max_pixels`` (the node's max_image_pixels default, read from the file headers before any
    output is made) stops the run with BagError (no output)."""
    from tqdm import tqdm

    from diffmf_core.training.data import DataError, image_size, load_pair

    for _, ir_path, vi_path in pairs:
        for path in (ir_path, vi_path):
            try:
                size = image_size(path)
            except DataError as exc:
                raise BagError(str(exc)) from None
            problem = size and size_limit_problem(*size, max_pixels)
            if problem:
                raise BagError(f"{path}: {problem}; the node would refuse it")
    plan = plan_stamps(len(pairs), rate, jitter_ms, thermal_delay_ms, drop, seed, start_ns)
    for camera in ("thermal", "rgb"):
        if not any(p.camera == camera for p in plan):
            raise BagError(f"no {camera} message is left ({len(pairs)} pairs, --drop {drop:g}): the bag would be "
                           "useless; lower --drop or use more pairs")
    if plan[0].stamp_ns < 0 or plan[-1].stamp_ns >= MAX_STAMP_S * 10**9:
        raise BagError(f"stamps run from {plan[0].stamp_ns / 1e9:.3f} to {plan[-1].stamp_ns / 1e9:.3f} s; they "
                       f"must stay within [0, {MAX_STAMP_S}] s (ROS Time): change --start-time")
    store = make_typestore()
    suffix = "/compressed" if compressed else ""
    msgtype = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    counts = {THERMAL_TOPIC + suffix: 0, RGB_TOPIC + suffix: 0}
    remaining = {}  # pair index -> messages of it still to write
    for p in plan:
        remaining[p.pair] = remaining.get(p.pair, 0) + 1
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with atomic_output(output, overwrite, inputs, "bag from-pairs") as tmp_path:
        writer = open_writer(tmp_path, storage)
        try:
            conns = {cam: writer.add_connection(topic + suffix, msgtype, typestore=store)
                     for cam, topic in (("thermal", THERMAL_TOPIC), ("rgb", RGB_TOPIC))}
            for p in tqdm(plan, desc="bag from-pairs", unit="msg", disable=not progress):
                if p.pair not in cache:
                    _, ir_path, vi_path = pairs[p.pair]
                    cache[p.pair] = load_pair(ir_path, vi_path, strip, max_pixels)
                img = cache[p.pair][0 if p.camera == "thermal" else 1]
                frame = THERMAL_FRAME if p.camera == "thermal" else RGB_FRAME
                msg = (compressed_msg(store, img, p.stamp_ns, frame, "jpeg", quality) if compressed
                       else image_msg(store, img, p.stamp_ns, frame))
                writer.write(conns[p.camera], p.stamp_ns, store.serialize_cdr(msg, msgtype))
                counts[conns[p.camera].topic] += 1
                remaining[p.pair] -= 1
                if not remaining[p.pair]:
                    del cache[p.pair]
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return counts


def _cmd_from_pairs(args) -> int:
    from diffmf_core.training.data import find_pairs

    pairs = find_pairs(args.pairs)
    if args.limit:
        pairs = pairs[: args.limit]
    counts = write_pairs_bag(
        pairs, Path(args.output), storage=args.storage, compressed=args.compressed, quality=args.quality,
        rate=args.rate, jitter_ms=args.jitter_ms, thermal_delay_ms=args.thermal_delay_ms, drop=args.drop,
        seed=args.seed, start_ns=int(round(args.start_time * 1e9)),
        strip="none" if args.keep_border else "auto", overwrite=args.overwrite, progress=not args.quiet,
        inputs=[args.pairs], max_pixels=args.max_pixels)
    print(f"wrote {args.output} ({args.storage}): {len(pairs)} pairs, "
          + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0
