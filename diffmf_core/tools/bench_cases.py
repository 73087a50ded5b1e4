"""The measurements of ``diffmf bench`` (the command, its options and result files:
diffmf_core.tools.bench): timing and peak memory of a callable on a torch device, the eager /
compile / CUDA-graph runners, the model and scan cases, and ``run_cases(args, device)``, which runs
the cases the options name into the checked, locked ``--out``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

import numpy as np
import torch

from diffmf_core.config import get_preset
from diffmf_core.fuser import GraphedForward, keep_freed_memory, release_freed_memory
from diffmf_core.models import DiffMF
from diffmf_core.ops.scan import mamba_ssm_scan, selective_scan
from diffmf_core.tools.bench import format_table, write_csv, write_outputs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()} ({os.cpu_count()} cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn, device: torch.device, warmup: int, repeats: int, budget_s: float) -> list[float]:
    """Milliseconds of up to ``repeats`` runs after ``warmup`` runs; stops after ``budget_s`` (>= 1 run)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < budget_s):
        start = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        times.append(1e3 * elapsed)
        spent += elapsed
    return times


def peak_memory_mb(fn, device: torch.device) -> float:
    """Peak memory of one run of ``fn`` in MB (CUDA: allocated; CPU: RSS increase, sampled)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    import psutil

    release_freed_memory()  # blocks kept from earlier runs would hide this run's allocations
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return (peak[0] - before) / 2**20


def measure(fn, device: torch.device, warmup: int, repeats: int, budget_s: float) -> tuple[list[float], float]:
    """(run times in ms, peak memory in MB): the first warm-up run measures the memory, the rest time."""
    mem = peak_memory_mb(fn, device)
    return time_runs(fn, device, max(warmup - 1, 0), repeats, budget_s), mem


def make_runner(fn, args: tuple, runner: str, device: torch.device):
    """A no-grad callable running ``fn(*args)`` and the runner actually used: ``eager``; ``compile``
    (``torch.compile``, kept if a first call works, else eager with a message); ``cuda_graph``
    (``GraphedForward`` replay, CUDA only, else eager with a message)."""
    def runner_for(f):
        def run():
            with torch.no_grad():
                return f(*args)
        return run

    if runner == "cuda_graph":
        if device.type != "cuda":
            print("--cuda-graph ignored: CUDA graphs need a CUDA device", file=sys.stderr)
            return runner_for(fn), "eager"
        return runner_for(GraphedForward(fn)), "cuda_graph"
    if runner != "compile":
        return runner_for(fn), "eager"
    compiled = torch.compile(fn)
    try:
        runner_for(compiled)()
    except Exception as exc:  # no compiler, unsupported op, ...: fall back to eager
        torch._dynamo.reset()
        reason = next((line for line in str(exc).splitlines() if line.strip()), "")[:160]
        print(f"torch.compile unavailable here ({type(exc).__name__}: {reason}); running eager", file=sys.stderr)
        return runner_for(fn), "eager"
    return runner_for(compiled), "compile"


def model_backends(device: torch.device) -> list[str]:
    return ["chunked"] + (["mamba_ssm"] if device.type == "cuda" and mamba_ssm_scan() is not None else [])


def bench_model(preset: str, backend: str, width: int, height: int, device: torch.device, dtype: torch.dtype,
                runner: str, warmup: int, repeats: int, budget_s: float, chunk_size: int | None = None) -> dict:
    """One model case (see module docstring); ``chunk_size`` overrides the preset's; returns a CSV row."""
    torch.manual_seed(0)
    cfg = get_preset(preset, scan_backend=backend, **({"chunk_size": chunk_size} if chunk_size else {}))
    model = DiffMF(cfg).to(device, dtype).eval()
    ir = torch.rand(1, 1, height, width, device=device, dtype=dtype)
    vi = torch.rand(1, 1, height, width, device=device, dtype=dtype)

    fn, used = make_runner(model, (ir, vi), runner, device)
    times, mem = measure(fn, device, warmup, repeats, budget_s)
    return _row("model", preset, backend, cfg.chunk_size, width, height, dtype, used, times, mem, device)


def bench_scan(backend: str, tokens: int, device: torch.device, dtype: torch.dtype, runner: str, warmup: int,
               repeats: int, budget_s: float, chunk_size: int | None = None, channels: int = 64, head_dim: int = 16,
               d_state: int = 16) -> dict:
    """Scan micro-benchmark: (1, tokens, channels/head_dim, head_dim) with one B/C group."""
    gen = torch.Generator().manual_seed(0)
    heads = channels // head_dim
    x = torch.randn(1, tokens, heads, head_dim, generator=gen)
    dt = torch.empty(1, tokens, heads).uniform_(0.001, 0.1, generator=gen)
    A = -torch.empty(heads).uniform_(1, 16, generator=gen)
    B = torch.randn(1, tokens, 1, d_state, generator=gen)
    C = torch.randn(1, tokens, 1, d_state, generator=gen)
    D = torch.ones(heads)
    x, dt, B, C = (t.to(device, dtype) for t in (x, dt, B, C))
    A, D = A.to(device), D.to(device)

    chunk = chunk_size or 64

    def scan(*tensors):
        return selective_scan(*tensors, backend=backend, chunk_size=chunk)

    fn, used = make_runner(scan, (x, dt, A, B, C, D), runner if backend == "chunked" else "eager", device)
    times, mem = measure(fn, device, warmup, repeats, budget_s)
    return _row("scan", f"L={tokens},N={d_state},D={channels}", backend, chunk, tokens, 1, dtype, used, times, mem,
                device)


def _row(kind, preset, backend, chunk, width, height, dtype, runner, times, mem, device) -> dict:
    return {
        "kind": kind, "preset": preset, "backend": backend, "chunk": chunk, "width": width, "height": height,
        "pixels": width * height, "dtype": str(dtype).removeprefix("torch."), "runner": runner,
        "runs": len(times), "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
        "peak_mem_mb": mem, "device": device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_cases(args: argparse.Namespace, device: torch.device) -> int:
    """Run the benchmark cases on ``device`` into the checked, locked ``--out``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory()  # as the Fuser does: reuse large blocks instead of re-faulting them
    dtype = torch.float32
    if args.half:
        if device.type == "cuda":
            dtype = torch.float16
        else:
            print("--half ignored: float16 is only used on CUDA", file=sys.stderr)
    presets = args.presets or (["live", "paper"] if device.type == "cuda" else ["live"])
    available = model_backends(device)
    backends = args.backends or available
    missing = [b for b in backends if b not in available]
    if missing:
        print(f"skipping backend(s) {missing}: mamba_ssm needs CUDA and an importable mamba_ssm", file=sys.stderr)
    backends = [b for b in backends if b in available]
    title = f"{device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, {str(dtype).removeprefix('torch.')}"
    print(f"diffmf bench: {title}", flush=True)
    runner = "compile" if args.compile else "cuda_graph" if args.cuda_graph else "eager"
    common = dict(device=device, dtype=dtype, runner=runner, warmup=args.warmup, repeats=args.repeats,
                  budget_s=args.budget_s, chunk_size=args.chunk_size)
    rows: list[dict] = []

    def add(row: dict) -> None:  # print and save each row as it comes: an interrupted run keeps them
        rows.append(row)
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
        write_csv(rows, args.out / "bench.csv")

    if not args.no_model:
        for preset in presets:
            for backend in backends:
                for width, height in args.sizes:
                    add(bench_model(preset, backend, width, height, **common))
    if args.scan_tokens:
        for backend in ["naive", "chunked"] + [b for b in available if b == "mamba_ssm"]:
            add(bench_scan(backend, args.scan_tokens, **common))
    write_outputs(rows, args.out, title)
    return 0
