"""``diffmf flops``: FLOPs and parameters of DIFF-MF, in the spirit of the paper's Table VII.

``flops_report(cfg, height, width)`` builds the network on the ``meta`` device (no memory, so
full-resolution attention maps cost nothing) and counts one forward pass of a (1, 1, H, W) pair
with ``torch.utils.flop_counter.FlopCounterMode``. That counter counts matrix products and
convolutions only (element-wise ops, norms and softmax are free) and counts a multiply-add as 2
FLOPs; the report gives GFLOPs and GMACs = GFLOPs / 2. The SSM is counted through the portable
chunked SSD scan (its matrix products: intra-chunk C B^T, decay-weighted sums, chunk-state
carries), never through mamba_ssm. ``mixer="attention"`` swaps every VSS mixer for full spatial
attention over all H*W tokens (Table VII's "pure transformer"; the cross-modal SSD exchange stays).

The paper's attention formula 4 B (HW)^2 D counts a multiply-add as 2 FLOPs, i.e. the GFLOPs
column; its totals (393.871 G SSM, 336852.764 G transformer) come from its own block layout.
torch and the network are imported by ``flops_report``, not to build the command's parser.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from diffmf_core.config import DiffMFConfig, get_preset

PAPER_TABLE_VII_GFLOPS = {"ssm": 393.871, "attention": 336852.764}


def _mixer_names(model) -> list[str]:
    """Fully qualified names (as FlopCounterMode reports them) of the outermost token mixers of
    ``model`` (a DiffMF network)."""
    from diffmf_core.modules.attention import SpatialAttention
    from diffmf_core.modules.exchange import CrossModalSSDExchange
    from diffmf_core.modules.vss import SSDMixer2D

    root = type(model).__name__
    mixer_types = (SSDMixer2D, SpatialAttention, CrossModalSSDExchange)
    names = [name for name, m in model.named_modules() if isinstance(m, mixer_types)]
    outer = [n for n in names if not any(n.startswith(o + ".") for o in names)]
    return [f"{root}.{n}" for n in outer]


def flops_report(cfg: DiffMFConfig, height: int = 512, width: int = 512) -> dict:
    """FLOPs/MACs/parameters of one forward pass of ``cfg`` on a (1, 1, height, width) pair.

    Keys: name, mixer, input, params, gflops, gmacs, mixer_gflops (token mixers: VSS mixers or
    attention, plus the cross-modal SSD exchange), mixer_share, by_op (GFLOPs per aten op),
    scan_path. Runs on the meta device: no weights, no memory, a few seconds.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffmf_core.models import DiffMF

    cfg = cfg.replace(scan_backend="chunked")
    with torch.device("meta"):
        model = DiffMF(cfg).eval()
        ir = torch.empty(1, 1, height, width)
        vi = torch.empty(1, 1, height, width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(ir, vi)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    mixer = sum(sum(counts.get(name, {}).values()) for name in _mixer_names(model))
    by_op: dict[str, float] = defaultdict(float)
    for op, n in counts.get("Global", {}).items():
        by_op[str(op).removeprefix("aten.")] += n / 1e9
    return {
        "name": cfg.name,
        "mixer": cfg.mixer,
        "input": [1, 1, height, width],
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": total / 1e9,
        "gmacs": total / 2e9,
        "mixer_gflops": mixer / 1e9,
        "mixer_share": mixer / total if total else 0.0,
        "by_op": dict(by_op),
        "scan_path": "chunked (portable SSD scan, counted via its matmuls)",
    }


def table_vii(height: int = 512, width: int = 512, presets: tuple[str, ...] = ("paper", "live")) -> dict:
    """Reports for the paper preset with SSM and attention mixers, the live preset, and the ratio."""
    rows = []
    if "paper" in presets:
        rows.append(flops_report(get_preset("paper"), height, width))
        rows.append(flops_report(get_preset("paper", mixer="attention", attention_heads=16), height, width))
    rows += [flops_report(get_preset(p), height, width) for p in presets if p != "paper"]
    result = {"height": height, "width": width, "rows": rows, "paper_table_vii_gflops": PAPER_TABLE_VII_GFLOPS}
    if "paper" in presets:
        result["attention_over_ssm"] = rows[1]["gflops"] / rows[0]["gflops"]
        result["paper_attention_over_ssm"] = PAPER_TABLE_VII_GFLOPS["attention"] / PAPER_TABLE_VII_GFLOPS["ssm"]
    return result


def format_table(result: dict) -> str:
    head = (f"{'network':<18} {'input':<16} {'params':>9} {'GFLOPs':>12} {'GMACs':>12} {'mixers':>7} "
            f"{'paper GFLOPs':>13}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        label = f"{r['name']} ({r['mixer']})"
        paper = PAPER_TABLE_VII_GFLOPS.get(r["mixer"]) if r["name"] == "paper" else None
        lines.append(f"{label:<18} {str(tuple(r['input'])):<16} {r['params']:>9,} {r['gflops']:>12.3f} "
                     f"{r['gmacs']:>12.3f} {100 * r['mixer_share']:>6.2f}% "
                     f"{'' if paper is None else f'{paper:.3f}':>13}")
    if "attention_over_ssm" in result:
        lines.append(f"attention / SSM FLOPs: {result['attention_over_ssm']:.1f}x "
                     f"(paper: {result['paper_attention_over_ssm']:.1f}x)")
    lines.append("FlopCounterMode: matmuls and convolutions only, 1 multiply-add = 2 FLOPs; GMACs = GFLOPs / 2. "
                 "'mixers': share in the token mixers (VSS mixers or attention + cross-modal SSD exchange). "
                 "SSM counted through the portable chunked scan. The paper's 4B(HW)^2D attention formula "
                 "uses the 2-FLOPs-per-MAC convention (GFLOPs column).")
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=512, help="input height (default 512, as Table VII)")
    p.add_argument("--width", type=int, default=512, help="input width (default 512)")
    p.add_argument("--presets", nargs="+", default=["paper", "live"], choices=["paper", "live"],
                   help="presets to count (paper also counts its attention variant)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    if args.height < 1 or args.width < 1:
        print("error: --height and --width must be positive", file=sys.stderr)
        return 2
    result = table_vii(args.height, args.width, tuple(dict.fromkeys(args.presets)))
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
