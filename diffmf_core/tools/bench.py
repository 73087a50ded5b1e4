"""``diffmf bench``: latency and peak memory of DIFF-MF on this device, and a scan micro-benchmark.

Model cases: every preset x scan backend (chunked; mamba_ssm where CUDA and mamba_ssm exist) x
size (default 320x256, 640x512, 1280x1024), randomly initialised weights (latency does not depend
on them), batch 1, no grad. Latency: median and p90 of ``--repeats`` timed runs after
``--warmup`` runs (CUDA synchronised); a case stops early once ``--budget-s`` seconds of timed runs
are spent (the row records how many ran). Peak memory of the first run (untimed, one of the
warm-up runs): CUDA ``torch.cuda.max_memory_allocated``; CPU the peak RSS increase over the RSS
before the run, after freed blocks are returned to the OS (psutil, sampled every 2 ms).
Scan micro-benchmark: naive loop vs portable chunked (vs mamba_ssm) on (1, L, heads, head_dim)
inputs, L = ``--scan-tokens`` (default 20480), state 16, 64 channels.

``--replot CSV ...`` measures nothing and merges earlier runs into one table, CSV and plot.

Writes ``bench.csv`` (after every case, so an interrupted run keeps what it measured) and
``latency.png`` (median latency vs pixels, log-log, one line per preset and backend) under ``--out``
(default runs/bench) and prints a table headed by the device, the torch version and the thread count.

This module is the command and its result files (no torch: building the parser and ``--replot``
never import it); the measurements are ``diffmf_core.tools.bench_cases``.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from diffmf_core.common.argtypes import device as device_arg
from diffmf_core.common.argtypes import float_range, int_range
from diffmf_core.common.argtypes import parse_size, path_arg
from diffmf_core.common.outputs import OutputError, results_folder

DEFAULT_SIZES = ("320x256", "640x512", "1280x1024")
CSV_FIELDS = ("kind", "preset", "backend", "chunk", "width", "height", "pixels", "dtype", "runner", "runs",
              "median_ms", "p90_ms", "peak_mem_mb", "device", "torch", "threads")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Median latency vs pixels, log-log, one line per (preset, backend, chunk, dtype, runner)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["kind"] == "model":
            label = f"{r['preset']} / {r['backend']} Q{r['chunk']} / {r['dtype']}" + (
                f" / {r['runner']}" if r["runner"] != "eager" else "")
            series.setdefault(label, []).append((r["pixels"], r["median_ms"]))
    for label, points in series.items():
        px, ms = zip(*sorted(points))
        ax.plot(px, ms, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixels per image (W x H)")
    ax.set_ylabel("median latency per pair [ms]")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    head = (f"{'kind':<6} {'preset':<20} {'backend':<10} {'Q':>3} {'size':>10} {'dtype':<8} {'runner':<10} {'runs':>4} "
            f"{'median ms':>10} {'p90 ms':>10} {'peak MB':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r['width']}x{r['height']}" if r["kind"] == "model" else str(r["width"])
        lines.append(f"{r['kind']:<6} {r['preset']:<20} {r['backend']:<10} {r['chunk']:>3} {size:>10} {r['dtype']:<8} "
                     f"{r['runner']:<10} {r['runs']:>4} {r['median_ms']:>10.1f} "
                     f"{r['p90_ms']:>10.1f} {r['peak_mem_mb']:>9.1f}")
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", type=device_arg,
                   help="auto (CUDA if present), cpu, cuda, cuda:N; an explicit device that is unavailable is an error")
    p.add_argument("--presets", nargs="+", choices=["live", "paper"],
                   help="presets to time (default: live and paper on CUDA; live on CPU, where paper takes "
                        "minutes per frame)")
    p.add_argument("--backends", nargs="+", choices=["chunked", "mamba_ssm"],
                   help="model scan backends (default: chunked, plus mamba_ssm where available)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                   metavar="WxH", help=f"input sizes (default: {' '.join(DEFAULT_SIZES)})")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed runs per case (default 10)")
    p.add_argument("--warmup", type=int_range(0), default=2,
                   help="untimed runs first; the first measures peak memory and always runs (default 2)")
    p.add_argument("--budget-s", type=float_range(0, None, lo_open=True), default=30.0,
                   help="stop a case's timed runs after this (default 30)")
    p.add_argument("--scan-tokens", type=int_range(0), default=20480, help="scan micro-benchmark length (0 skips it)")
    p.add_argument("--no-model", action="store_true", help="only the scan micro-benchmark")
    p.add_argument("--half", action="store_true",
                   help="float16 model and scans (CUDA only; ignored with a message on the CPU)")
    runner = p.add_mutually_exclusive_group()
    runner.add_argument("--compile", action="store_true", help="torch.compile the model and the chunked scan")
    runner.add_argument("--cuda-graph", action="store_true",
                        help="replay the model and the chunked scan from CUDA graphs (CUDA only)")
    p.add_argument("--chunk-size", type=int_range(8), help="SSD chunk length Q for every case (default: the preset's; "
                                                  "64 for the scan micro-benchmark)")
    p.add_argument("--threads", type=int_range(1, 1024), help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--out", type=path_arg, default=Path("runs/bench"), help="folder for bench.csv and latency.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the bench.csv and latency.png of an earlier `diffmf bench` in --out")
    p.add_argument("--replot", nargs="+", type=path_arg, metavar="CSV",
                   help="measure nothing: merge these bench.csv files into --out (table, CSV, plot)")


def read_csv(path: Path) -> list[dict]:
    """Rows of a bench.csv, numbers parsed back; ValueError when the file is not one (other
    columns, no rows, values that are not numbers)."""
    numeric = {"chunk": int, "width": int, "height": int, "pixels": int, "runs": int, "median_ms": float,
               "p90_ms": float, "peak_mem_mb": float, "threads": int}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in CSV_FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a bench.csv of `diffmf bench` (no column {', '.join(missing[:3])})")
        try:
            rows = [{k: numeric[k](row[k]) if k in numeric else row[k] for k in CSV_FIELDS} for row in reader]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def write_outputs(rows: list[dict], out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "bench.csv")
    if any(r["kind"] == "model" for r in rows):
        plot(rows, out / "latency.png", title)
    print(f"\n{title}\n{format_table(rows)}\nwrote {out / 'bench.csv'}"
          + (f" and {out / 'latency.png'}" if any(r['kind'] == 'model' for r in rows) else ""))


def main(args: argparse.Namespace) -> int:
    rows: list[dict] = []
    try:  # every input and the device are checked before anything is written
        if args.replot:
            rows = [row for path in args.replot for row in read_csv(path)]
        else:
            from diffmf_core.fuser import resolve_device

            device = resolve_device(args.device)
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with results_folder(args.out, ["bench.csv", "latency.png"], args.replot or [], args.overwrite,
                            "bench") as results:
            results.record(["bench.csv", "latency.png"])
            if args.replot:
                devices = sorted({f"{r['device']}, torch {r['torch']}, {r['threads']} threads" for r in rows})
                write_outputs(rows, args.out, "; ".join(devices))
                return 0
            from diffmf_core.tools.bench_cases import run_cases

            return run_cases(args, device)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
