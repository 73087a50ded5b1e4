#!/usr/bin/env bash
# Reproduce the shipped weights diffmf_core/weights/live.safetensors: the `live` preset on the CPU
# on RoadScene (221 pairs) and the M3SVD training clips, holding out two whole M3SVD clips
# (0113_1714, 1230_1202) for validation.
#  The trunk (embedding, extraction, exchange) starts from the weights shipped at git revision
#  eaa4d62, made by that revision's copy of this script: 2000 steps from scratch (batch 4, 192 px
#  crops, lr 1e-3 cosine to 1e-5, the paper's loss with lambda_text 40, text_overshoot 0.3,
#  lambda_int 20) and 800 steps of lambda_text 80 / text_overshoot 0; 44 CPU minutes.
#  (`git checkout eaa4d62 && scripts/train_shipped.sh` remakes that file.)
#  Its decoder head is re-drawn (--reset-head: small random weights), then the whole network, trunk
#  included, trains to stay its own rule except on warm targets (--loss rule: intensity and detail
#  of the rule, a quarter of the weight on warm pixels) while keeping every warm target's thermal
#  contrast (--lambda-target). Validation every 100 steps on 8 held-out frames scores the six paper
#  metrics and warm-target retention; a network is kept only if it beats both its own rule (the
#  decoder without the network) and a constant-head copy of itself (val.csv has all three).
# One thread (the machine has two cores). The exact command is in the shipped file's metadata.
# Interrupt it at any time: rerunning continues from runs/train/live_decide/checkpoint.safetensors.
# Data: DIFFMF_DATA (default ../shared/data) must hold train/RoadScene and train/M3SVD.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
DATA="${DIFFMF_DATA:-../shared/data}"
mkdir -p runs/train
[ -f runs/train/trunk_eaa4d62.safetensors ] || git show eaa4d62:diffmf_core/weights/live.safetensors > runs/train/trunk_eaa4d62.safetensors
.venv/bin/diffmf train --data "$DATA/train/RoadScene" "$DATA/train/M3SVD" --holdout '1230_1202_*' --holdout '0113_1714_*' \
    --val-max 8 --val-every 100 --preset live --batch-size 4 --crop 192 --lr 2e-4 --lr-min 1e-5 --threads 1 \
    --ckpt-every 50 --log-every 10 --iters 1000 --loss rule --lambda-target 0.2 --seed 3 \
    --init runs/train/trunk_eaa4d62.safetensors --reset-head --out runs/train/live_decide
cp runs/train/live_decide/weights.safetensors diffmf_core/weights/live.safetensors
echo "wrote diffmf_core/weights/live.safetensors"
