#!/usr/bin/env python3
"""A network that decides nothing: a weights file with its decoder head made constant, for the
no-network measurements of docs/training.md (items 10 and 11).

    .venv/bin/python scripts/constant_head.py --out runs/const/warm12.safetensors \
        --stretch 1.15 --head-region warm --warm-margin 12 --select 3
    .venv/bin/diffmf eval --weights runs/const/warm12.safetensors --methods diffmf --out runs/const/eval

The head's weights become zero and its bias the given logits: ``--select`` for the selection of
every detail band, ``--base-select`` for the base (default: ``--select``), every gain, contrast and
offset logit 0 (the rule's). With ``--head-region warm`` the selections act only on the warm
envelope (``pyramid_decoder.warm_envelope``): ``--select 3`` takes the thermal image there
(logit +16 tanh 3), ``--select 0`` is the rule. The trunk is the input file's and has no influence.
Writes only ``--out``, which must not exist.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffmf_core.common.paths import default_weights_path  # noqa: E402
from diffmf_core.config import HEAD_REGIONS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=default_weights_path("live"),
                   help="network whose trunk and config are used (default: the shipped live weights)")
    p.add_argument("--out", type=Path, required=True, help="weights file to write (must not exist)")
    p.add_argument("--stretch", type=float, default=1.0, help="output stretch s (config output_stretch)")
    p.add_argument("--head-region", default="everywhere", choices=HEAD_REGIONS)
    p.add_argument("--warm-margin", type=int, default=8, help="pixels around a warm structure (multiple of 4)")
    p.add_argument("--select", type=float, default=0.0, help="selection logit of every detail band (+: thermal)")
    p.add_argument("--base-select", type=float, default=None, help="selection logit of the base (default: --select)")
    args = p.parse_args()
    if args.out.exists():
        print(f"constant_head: {args.out} exists; choose another --out", file=sys.stderr)
        return 2

    import torch

    from diffmf_core.weights import WeightsError, load_model, save_weights
    try:
        model = load_model(args.weights, output_stretch=args.stretch, head_region=args.head_region,
                           warm_margin=args.warm_margin, head_maps="selection")
    except (WeightsError, ValueError) as exc:
        print(f"constant_head: {exc}", file=sys.stderr)
        return 2
    levels = model.cfg.pyramid_levels
    base = args.select if args.base_select is None else args.base_select
    with torch.no_grad():
        head = model.decoder.head
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0:2 * levels - 2:2] = args.select  # a_k of the detail bands (their gain logits stay 0)
        head.bias[2 * levels - 2] = base              # a_B
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out, constant_head=f"select {args.select} base {base}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
