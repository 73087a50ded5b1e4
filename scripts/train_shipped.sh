#!/usr/bin/env bash
# Reproduce the shipped weights diffmf_core/weights/live.safetensors: train the `live` preset on
# RoadScene (221 pairs, ../shared/data/train/RoadScene) on the CPU, then copy the result.
# Three stages: 2000 steps from scratch (crop 96, lambda_text 40), then two fine-tuning stages
# from the previous weights (crop 128; 1500 steps at lambda_text 80, 1000 steps at lambda_text 120,
# lower peak learning rates). About 35 min on 2 quiet cores. Same seed and thread count give the same run on the same machine;
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
.venv/bin/diffmf train --data ../shared/data/train/RoadScene --preset live \
    --init runs/train/live_ft/weights.safetensors \
    --iters 1000 --batch-size 4 --crop 128 --lr 3e-4 --lr-min 1e-5 --lambda-text 120 \
    --seed 2 --threads 2 --ckpt-every 100 --log-every 20 --out runs/train/live_ft2
cp runs/train/live_ft2/weights.safetensors diffmf_core/weights/live.safetensors
echo "wrote diffmf_core/weights/live.safetensors"
