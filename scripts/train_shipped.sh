#!/usr/bin/env bash
# Reproduce the shipped weights diffmf_core/weights/live.safetensors: train the `live` preset on
# RoadScene (221 pairs, ../shared/data/train/RoadScene) on the CPU, then copy the result.
# About 15-30 min on 2 cores. Same seed and thread count give the same run on the same machine;
# other CPUs/BLAS builds can differ in the last bits, so weights then differ slightly.
# Interrupt it at any time: rerunning continues from runs/train/live/checkpoint.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/diffmf train --data ../shared/data/train/RoadScene --preset live \
    --iters 2000 --batch-size 4 --crop 96 --lr 1e-3 --lr-min 1e-5 --lambda-text 40 \
    --seed 0 --threads 2 --ckpt-every 100 --log-every 20 --out runs/train/live
cp runs/train/live/weights.safetensors diffmf_core/weights/live.safetensors
echo "wrote diffmf_core/weights/live.safetensors"
