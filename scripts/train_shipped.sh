#!/usr/bin/env bash
# Reproduce the shipped weights diffmf_core/weights/live.safetensors: train the `live` preset on
# RoadScene (221 pairs, ../shared/data/train/RoadScene) on the CPU, then copy the result.
# Two stages: 2000 steps from scratch (crop 96, lambda_text 40), then 1500 fine-tuning steps from
# those weights (crop 128, lambda_text 80, a lower peak lr). About 25-40 min on 2 cores. Same seed and thread count give the same run on the same machine;
# other CPUs/BLAS builds can differ in the last bits, so weights then differ slightly.
# Interrupt it at any time: rerunning continues from runs/train/live/checkpoint.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/diffmf train --data ../shared/data/train/RoadScene --preset live \
    --iters 2000 --batch-size 4 --crop 96 --lr 1e-3 --lr-min 1e-5 --lambda-text 40 \
    --seed 0 --threads 2 --ckpt-every 100 --log-every 20 --out runs/train/live
.venv/bin/diffmf train --data ../shared/data/train/RoadScene --preset live \
    --init runs/train/live/weights.safetensors \
    --iters 1500 --batch-size 4 --crop 128 --lr 5e-4 --lr-min 1e-5 --lambda-text 80 \
    --seed 1 --threads 2 --ckpt-every 100 --log-every 20 --out runs/train/live_ft
cp runs/train/live_ft/weights.safetensors diffmf_core/weights/live.safetensors
echo "wrote diffmf_core/weights/live.safetensors"
