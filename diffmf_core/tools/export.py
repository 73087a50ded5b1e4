"""``diffmf export``: a DIFF-MF network to ONNX through the portable chunked scan, checked in
onnxruntime.

Contract: the graph has inputs ``ir`` and ``vi`` (1, 1, H, W) float32 luminance in [0, 1] and
output ``fused`` (1, 1, H, W) in [0, 1], for the fixed H x W given at export (the chunked scan's
levels are unrolled for that size). Exported with the legacy TorchScript exporter
(``dynamo=False``), opset >= 17 (native LayerNormalization). After export the graph is run in
onnxruntime on CPU on a seeded random pair and compared with PyTorch; the command fails when the
max abs difference of the fused image reaches ``--tolerance`` (default 1e-3). torch and the
network are imported by the functions that use them, not to build the command's parser.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from diffmf_core.common.argtypes import float_range, int_range, path_arg
from diffmf_core.common.outputs import OutputError, check_file_output, file_mode, output_lock, record_file
from diffmf_core.common.paths import default_weights_path
from diffmf_core.config import get_preset

MIN_OPSET = 17


def build_model(weights: str | Path | None = None, preset: str = "live") -> tuple:
    """(the DiffMF network to export, a description of where it came from).

    ``weights`` None: the shipped weights of ``preset`` if present, else a randomly initialised
    ``preset`` network (with a warning). The scan backend is forced to the portable chunked scan.
    ``WeightsError`` when ``weights`` cannot be used.
    """
    import torch

    from diffmf_core.models import DiffMF
    from diffmf_core.weights import load_model

    path = Path(weights) if weights else default_weights_path(preset)
    if weights or path.is_file():
        model = load_model(path, "cpu", expect_preset=None if weights else preset, scan_backend="chunked")
        return model, str(path)
    warnings.warn(f"no shipped weights at {path}; exporting a randomly initialised {preset!r} network",
                  stacklevel=2)
    torch.manual_seed(0)
    return DiffMF(get_preset(preset, scan_backend="chunked")).eval(), f"random {preset} (seed 0)"


def export_onnx(model, path: str | Path, height: int, width: int, opset: int = MIN_OPSET) -> Path:
    """Write ``model`` (a DiffMF) as ONNX for a fixed (1, 1, height, width) pair; returns the path."""
    import torch

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (LayerNormalization)")
    if model.cfg.scan_backend not in ("chunked", "auto"):
        raise ValueError("export needs the portable chunked scan (scan_backend 'chunked' or 'auto')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().float().eval()
    dummy = (torch.rand(1, 1, height, width), torch.rand(1, 1, height, width))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed: never half a file
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the chosen one
            torch.onnx.export(model, dummy, str(tmp), input_names=["ir", "vi"], output_names=["fused"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_onnx(model, path: str | Path, height: int, width: int, seed: int = 0) -> dict:
    """Run the ONNX file in onnxruntime (CPU) and ``model`` (a DiffMF) in PyTorch on one seeded
    random pair.

    Returns max_abs_diff, mean_abs_diff, torch_ms, onnxruntime_ms and the node count.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    gen = torch.Generator().manual_seed(seed)
    ir = torch.rand(1, 1, height, width, generator=gen)
    vi = torch.rand(1, 1, height, width, generator=gen)
    model = model.cpu().float().eval()
    with torch.inference_mode():
        start = time.perf_counter()
        expected = model(ir, vi).numpy()
        torch_ms = 1e3 * (time.perf_counter() - start)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"ir": ir.numpy(), "vi": vi.numpy()}
    session.run(None, feeds)  # first run allocates
    start = time.perf_counter()
    (got,) = session.run(["fused"], feeds)
    ort_ms = 1e3 * (time.perf_counter() - start)
    diff = np.abs(got - expected)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "shape": list(got.shape),
        "torch_ms": torch_ms,
        "onnxruntime_ms": ort_ms,
        "nodes": len(onnx.load(str(path), load_external_data=False).graph.node),
    }


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="DIFF-MF .safetensors file (default: shipped weights of --preset, "
                                     "else a random network with a warning)")
    p.add_argument("--preset", default="live", choices=["live", "paper"], help="preset when no --weights")
    p.add_argument("--height", type=int_range(1, 8192), default=512, help="fixed input height (default 512)")
    p.add_argument("--width", type=int_range(1, 8192), default=640, help="fixed input width (default 640)")
    p.add_argument("--opset", type=int_range(MIN_OPSET), default=MIN_OPSET,
                   help=f"ONNX opset (>= {MIN_OPSET}, default {MIN_OPSET})")
    p.add_argument("--out", type=path_arg, help="output .onnx (default runs/export/diffmf_<name>_<H>x<W>.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .onnx file at --out")
    p.add_argument("--tolerance", type=float_range(0, None, lo_open=True), default=1e-3,
                   help="max abs diff allowed (default 1e-3)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--threads", type=int_range(1, 1024), default=2,
                   help="CPU threads for PyTorch and onnxruntime (default 2)")


def main(args: argparse.Namespace) -> int:
    import torch

    from diffmf_core.weights import WeightsError

    if args.height < 1 or args.width < 1 or args.opset < MIN_OPSET:
        print(f"error: --height/--width must be positive and --opset >= {MIN_OPSET}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            model, source = build_model(args.weights, args.preset)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for warning in caught:  # one line each, not Python's file:line form
        print(f"diffmf export: warning: {warning.message}", file=sys.stderr)
    out = args.out or Path("runs/export") / f"diffmf_{model.cfg.name}_{args.height}x{args.width}.onnx"
    try:
        with output_lock(out):
            check_file_output(out, [args.weights], args.overwrite, suffix=".onnx", command="export")
            return _export(args, model, source, out)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace, model, source: str, out: Path) -> int:
    """Export to the checked, locked ``out`` (listed in the folder's .diffmf-export) and check it."""
    start = time.perf_counter()
    try:
        export_onnx(model, out, args.height, args.width, args.opset)
        record_file(out, "export")
    except OSError as exc:
        print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"exported {source} -> {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"{args.height}x{args.width}, {time.perf_counter() - start:.1f} s)")
    if args.no_check:
        return 0
    try:
        result = check_onnx(model, out, args.height, args.width)
    except ImportError as exc:
        print(f"error: onnx/onnxruntime needed for the check ({exc}); use --no-check to skip", file=sys.stderr)
        return 1
    ok = result["max_abs_diff"] < args.tolerance
    print(f"onnxruntime vs PyTorch: max abs diff {result['max_abs_diff']:.3g}, mean {result['mean_abs_diff']:.3g} "
          f"({'ok' if ok else 'FAIL'}: tolerance {args.tolerance:g}); {result['nodes']} nodes; "
          f"CPU latency torch {result['torch_ms']:.0f} ms, onnxruntime {result['onnxruntime_ms']:.0f} ms")
    return 0 if ok else 1
