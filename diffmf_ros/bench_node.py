"""End-to-end benchmark of the fusion node: camera publisher (this process) -> diffmf_fusion (its own
process) -> /fused/info back here.

    diffmf bench-node --rate 30 --frames 300 --size 640x512 --preset live --device cpu
    (the same: python -m diffmf_ros.bench_node ...)

Both cameras publish a pair with one wall-clock stamp at ``--rate``; end-to-end latency of a
fused frame = its arrival here - that stamp (transport in, waiting, registration, inference,
transport out). Reports frames in/out, drops (pairs with no output; the node's mailbox and
synchronizer counts from /diagnostics), output rate, latency p50/p90/p99/max, the node's own
FusionInfo latency and inference time, and the node's resident memory before and after the run.
Prints a table and writes one CSV row to ``--out`` (default runs/bench). Weights: ``--weights``,
else the preset's shipped file, else a randomly initialised network of the preset (same compute;
said in the output). Uses config/fastdds_profile.xml (large frames over shared memory) unless
FASTDDS_DEFAULT_PROFILES_FILE is set; ROS_DOMAIN_ID from the environment.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from diffmf_core.common.argtypes import device as device_arg
from diffmf_core.common.argtypes import float_range, int_range
from diffmf_core.common.argtypes import parse_size
from diffmf_core.common.outputs import write_bytes
from diffmf_core.live.sync import split_ns, stamp_to_ns


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``diffmf bench-node`` / ``python -m diffmf_ros.bench_node``."""
    p.add_argument("--rate", type=float_range(0, 10_000, lo_open=True), default=30.0,
                   help="input pairs per second (default 30)")
    p.add_argument("--frames", type=int_range(1), default=300, help="pairs to publish (default 300)")
    p.add_argument("--size", type=parse_size, default=(640, 512), help="WIDTHxHEIGHT (default 640x512)")
    p.add_argument("--preset", default="live", choices=("live", "paper"), help="model preset (default live)")
    p.add_argument("--device", default="cpu", type=device_arg,
                   help="node device parameter (auto, cpu, cuda, cuda:N; default cpu); an explicit device "
                        "that is unavailable is an error")
    p.add_argument("--fuser", default="diffmf", choices=("diffmf", "warm_rule", "classical"),
                   help="node fuser parameter (default diffmf, the network; warm_rule = the node's default "
                        "fuser, no network; classical = the GFF fallback)")
    p.add_argument("--weights", help="weights .safetensors (default: shipped weights of --preset); a file "
                                     "that cannot be used is an error")
    p.add_argument("--cuda-graph", action="store_true", help="node parameter cuda_graph:=true (CUDA only)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="CSV folder (default runs/bench)")
    p.add_argument("--start-timeout", type=float_range(0, None, lo_open=True), default=180.0,
                   help="seconds to wait for the first output (default 180)")


def check_choices(args) -> str | None:
    """Why the explicit --device/--weights cannot be used (the node would fall back), or None."""
    if args.weights and args.fuser != "diffmf":
        return f"--weights applies to --fuser diffmf, not {args.fuser}"
    if args.fuser == "classical":
        return None
    from diffmf_core.fuser import resolve_device
    from diffmf_core.weights import WeightsError, load_model

    try:
        resolve_device(args.device)
    except RuntimeError as exc:
        return str(exc)
    if args.weights and args.fuser == "diffmf":
        try:
            load_model(args.weights, "cpu", expect_preset=args.preset)
        except WeightsError as exc:
            return str(exc)
    return None


def resolve_weights(args, tmp: Path) -> tuple[str, str]:
    """(weights path or "", description) for the node."""
    from diffmf_core.common.paths import default_weights_path

    if args.fuser != "diffmf":
        return "", f"{args.fuser} (no network)"
    if args.weights:
        return args.weights, args.weights
    if default_weights_path(args.preset).is_file():
        return "", f"shipped {args.preset}"
    import torch

    from diffmf_core.config import get_preset
    from diffmf_core.models.diffmf import DiffMF
    from diffmf_core.weights import save_weights

    torch.manual_seed(0)
    path = save_weights(DiffMF(get_preset(args.preset)), tmp / f"{args.preset}_random.safetensors")
    return str(path), f"random-initialised {args.preset} (shipped weights absent; same compute)"


def test_frames(width: int, height: int, n: int = 4) -> list[tuple[bytes, bytes]]:
    """(thermal mono8 bytes, rgb bgr8 bytes) pairs: generated smooth scenes with noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        base = (127 + 100 * np.sin(xx / (23 + i) + yy / 31)).astype(np.float32)
        ir = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        vi = np.clip(np.stack([255 - base, base, np.roll(base, 40, 1)], -1) + rng.normal(0, 8, (*base.shape, 3)),
                     0, 255).astype(np.uint8)
        frames.append((ir.tobytes(), vi.tobytes()))
    return frames


class Bench:
    """Publishers, collectors and a background executor in this process."""

    def __init__(self, width: int, height: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from diffmf_ros.msg import FusionInfo

        self.Image, self.width, self.height = Image, width, height
        self.node = rclpy.create_node("diffmf_bench_node")
        self.thermal = self.node.create_publisher(Image, "/thermal/image_raw", qos_profile_sensor_data)
        self.rgb = self.node.create_publisher(Image, "/rgb/image_raw", qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.outs: list[tuple[int, int, float, float, int, str]] = []  # rx ns, pair stamp, latency, inference, mode, model
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.node.create_subscription(FusionInfo, "/fused/info", self._on_info, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_info(self, msg) -> None:
        rx = time.time_ns()
        stamp = max(stamp_to_ns(s) for s in (msg.thermal_stamp, msg.rgb_stamp))
        with self.lock:
            self.outs.append((rx, stamp, msg.latency_ms, msg.inference_ms, msg.mode, msg.model_name))

    def _on_diag(self, msg) -> None:
        with self.lock:
            self.diag = {kv.key: kv.value for status in msg.status for kv in status.values}
            self.diag_count += 1

    def send(self, frame: tuple[bytes, bytes]) -> int:
        stamp = time.time_ns()
        for pub, data, encoding, channels in ((self.thermal, frame[0], "mono8", 1), (self.rgb, frame[1], "bgr8", 3)):
            msg = self.Image(height=self.height, width=self.width, encoding=encoding, step=self.width * channels,
                             data=data, check_fields=False)
            msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(stamp)
            pub.publish(msg)
        return stamp

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def percentiles(values) -> dict[str, float]:
    v = np.asarray(values, float)
    if not v.size:
        return {q: float("nan") for q in ("p50", "p90", "p99", "max")}
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def run(args, node_log: Path, tmp: Path) -> dict:
    """Start the node, publish, collect; returns the result row."""
    import psutil
    import rclpy

    from diffmf_ros.fusion_node import MODE_NAMES, package_config_file

    width, height = args.size
    weights, weights_note = resolve_weights(args, tmp)
    params = {"device": args.device, "preset": args.preset, "fuser": args.fuser, "weights": weights,
              "diagnostics_period_s": 0.5, "cuda_graph": str(args.cuda_graph).lower()}
    cmd = [sys.executable, "-m", "diffmf_ros.fusion_node", "--ros-args", "--params-file",
           str(package_config_file("fuse.yaml"))]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"] if value != "" else []
    rclpy.init()
    with open(node_log, "wb") as log:
        node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    bench = Bench(width, height)
    try:
        frames = test_frames(width, height)
        if not bench.wait(lambda: bench.thermal.get_subscription_count() > 0 and bench.rgb.get_subscription_count() > 0
                          and bench.node.count_publishers("/fused/info") > 0 and node.poll() is None,
                          args.start_timeout):
            raise RuntimeError(f"the node did not come up (log: {node_log})")
        deadline = time.monotonic() + args.start_timeout
        # at the run's rate (a pause would let the node time a camera out): the first frames may
        # meet readers that have not matched yet
        while not bench.wait(lambda: bool(bench.outs), 1.0 / args.rate):
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError(f"no output from the node (log: {node_log})")
            bench.send(frames[0])
        proc = psutil.Process(node.pid)
        rss_start = proc.memory_info().rss
        seen = bench.diag_count
        bench.wait(lambda: bench.diag_count > seen, 2.0)
        with bench.lock:
            diag_start = dict(bench.diag)
        sent: set[int] = set()
        start = time.monotonic()
        for i in range(args.frames):
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            sent.add(bench.send(frames[i % len(frames)]))
        send_s = time.monotonic() - start

        def all_back() -> bool:  # under the lock: every sent pair has its output (nothing more can come)
            return sent <= {o[1] for o in bench.outs}

        last_count = -1
        # drain: until every sent pair is back, else until 3 s without output (the rest was dropped)
        while bench.wait(lambda: len(bench.outs) != last_count or all_back(), 3.0):
            with bench.lock:
                if all_back():
                    break
                last_count = len(bench.outs)
        time.sleep(1.0)  # two diagnostics periods: the node's counters include the last frames
        rss_end = proc.memory_info().rss
        with bench.lock:
            outs = [o for o in bench.outs if o[1] in sent]
            diag = dict(bench.diag)
    finally:
        bench.close()
        rclpy.try_shutdown()
        node.send_signal(2)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()

    def counter(key: str) -> int:
        return int(diag.get(key, 0)) - int(diag_start.get(key, 0))

    e2e = percentiles([(rx - stamp) / 1e6 for rx, stamp, *_ in outs])
    span_s = (max(o[0] for o in outs) / 1e9 - min(o[0] for o in outs) / 1e9) if len(outs) > 1 else 0.0
    return {
        "preset": args.preset, "fuser": args.fuser, "weights": weights_note, "device": diag.get("device", args.device),
        "cuda_graph": args.cuda_graph,
        "size": f"{width}x{height}", "rate_in_hz": round((args.frames - 1) / send_s, 2) if args.frames > 1 else 0.0, "frames_in": args.frames,
        "frames_out": len(outs), "drops": args.frames - len(outs),
        "drops_mailbox": counter("drops_mailbox"),
        "drops_sync": counter("sync_dropped_thermal") + counter("sync_dropped_rgb"),
        "output_rate_hz": round((len(outs) - 1) / span_s, 2) if span_s > 0 else 0.0,
        **{f"e2e_{k}_ms": round(v, 1) for k, v in e2e.items()},
        "node_latency_p50_ms": round(percentiles([o[2] for o in outs])["p50"], 1),
        "inference_p50_ms": round(percentiles([o[3] for o in outs])["p50"], 1),
        "modes": " ".join(f"{MODE_NAMES[m]}:{n}" for m, n in sorted(Counter(o[4] for o in outs).items())),
        "model": " ".join(sorted({o[5] for o in outs})),
        "node_rss_start_mb": round(rss_start / 2**20, 1), "node_rss_end_mb": round(rss_end / 2**20, 1),
    }


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run the benchmark; ``args`` from ``diffmf bench-node``, or a command line (default sys.argv)."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="python -m diffmf_ros.bench_node", description=__doc__.split("\n\n")[0])
        configure_parser(parser)
        args = parser.parse_args(args)
    if args.rate <= 0 or args.frames < 1:
        print("bench_node: error: --rate must be > 0 and --frames >= 1", file=sys.stderr)
        return 2
    problem = check_choices(args)
    if problem:
        print(f"bench_node: error: {problem}", file=sys.stderr)
        return 2
    from diffmf_ros.fusion_node import package_config_file

    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(package_config_file("fastdds_profile.xml")))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"node_{args.preset if args.fuser == 'diffmf' else args.fuser}_{args.size[0]}x{args.size[1]}_" \
           f"{args.rate:g}hz_{args.device.replace(':', '')}{'_graph' if args.cuda_graph else ''}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            row = run(args, args.out / f"{stem}.log", Path(tmp))
    except (RuntimeError, OSError) as exc:
        print(f"bench_node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_node: interrupted", file=sys.stderr)
        return 130
    width = max(len(k) for k in row)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in row.items()))
    if args.fuser != "classical" and "CLASSICAL" in row["modes"]:
        print(f"bench_node: error: the node fell back to its classical fuser (modes {row['modes']}); "
              f"see {args.out / (stem + '.log')}. No CSV written.", file=sys.stderr)
        return 1
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    path = write_bytes(args.out / f"{stem}.csv", text.getvalue().encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
