#!/usr/bin/env python3
"""Interleaved A/B latency of the network at two git revisions, on this machine's CPU.

    .venv/bin/python scripts/ab_speed.py --base 2999d44 --preset live --size 640x512 --threads 2

The base revision is unpacked into a temporary folder (``git archive``); two worker processes, one
per tree, each build ``DiffMF(get_preset(preset))`` (random weights: the time does not depend on
them) and run one forward pass whenever asked. The coordinator asks them in turn, A B A B ..., so
both see the same machine load; it prints the median and minimum of each and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import sys, time, torch
from diffmf_core.config import get_preset
from diffmf_core.models import DiffMF
preset, width, height, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = DiffMF(get_preset(preset)).eval()
ir, vi = torch.rand(1, 1, height, width), torch.rand(1, 1, height, width)
print("ready", flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(ir, vi)
    print(f"{(time.perf_counter() - t0) * 1000:.3f}", flush=True)
"""


def start_worker(tree: Path, args) -> subprocess.Popen:
    width, height = args.size.lower().split("x")
    proc = subprocess.Popen([sys.executable, "-c", WORKER, args.preset, width, height, str(args.threads)],
                            cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"worker in {tree} failed to start")
    return proc


def ask(proc: subprocess.Popen) -> float:
    proc.stdin.write("run\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against (A); B is the working tree")
    p.add_argument("--preset", default="live")
    p.add_argument("--size", default="640x512", help="WxH")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20, help="timed runs of each, interleaved")
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.base], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        workers = {"A": start_worker(Path(tmp), args), "B": start_worker(REPO, args)}
        times: dict[str, list[float]] = {"A": [], "B": []}
        for i in range(args.warmup + args.rounds):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                t = ask(workers[name])
                if i >= args.warmup:
                    times[name].append(t)
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    label = {"A": f"base {args.base}", "B": "working tree"}
    print(f"{args.preset} {args.size}, {args.threads} threads, {args.rounds} interleaved runs each (ms)")
    for name in ("A", "B"):
        print(f"  {label[name]:<24} median {statistics.median(times[name]):8.1f}   min {min(times[name]):8.1f}")
    ratio = statistics.median(times["B"]) / statistics.median(times["A"])
    print(f"  working tree / base (median): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
