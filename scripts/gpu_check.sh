#!/usr/bin/env bash
# GPU check in under 10 minutes, from the repository root of a checkout on a CUDA machine:
#   1. try to install the mamba_ssm fast path (mamba-ssm + causal-conv1d; at most $INSTALL_TIMEOUT s,
#      skipped when mamba_ssm already imports; failure is reported, not fatal)
#   2. test/test_scan.py: portable scan vs reference, and mamba_ssm vs portable where it imports
#   3. diffmf bench on CUDA for both presets with --half (float16), then live in float32
# Everything goes to $OUT (default runs/gpu): env.txt, install.log, test_scan.txt, bench_half/,
# bench_fp32/ (bench.csv, latency.png, bench.txt). Env: PYTHON (default .venv/bin/python if present,
# else python3), INSTALL_TIMEOUT (default 240), SKIP_INSTALL=1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi not found"
  "$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "CUDA not available to $PY: nothing to check on this machine" | tee -a "$OUT/env.txt"
  exit 1
fi

has_fast_path() { "$PY" -c "from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined" >/dev/null 2>&1; }
if has_fast_path; then
  echo "mamba_ssm already importable" | tee "$OUT/install.log"
elif [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
  echo "SKIP_INSTALL=1: not installing mamba_ssm" | tee "$OUT/install.log"
else
  # Build against the torch already installed (no build isolation); prefer the prebuilt wheels that
  # setup.py downloads; cap compile jobs if it has to build from source.
  echo "installing mamba-ssm / causal-conv1d (at most ${INSTALL_TIMEOUT:-240} s)"
  MAMBA_FORCE_BUILD=FALSE CAUSAL_CONV1D_FORCE_BUILD=FALSE MAX_JOBS="${MAX_JOBS:-8}" \
    timeout "${INSTALL_TIMEOUT:-240}" "$PY" -m pip install --no-build-isolation einops causal-conv1d mamba-ssm \
    > "$OUT/install.log" 2>&1
  echo "pip exit status $? (log: $OUT/install.log)"
  has_fast_path && echo "mamba_ssm fast path: available" || echo "mamba_ssm fast path: NOT available (portable scan only)"
fi

echo "== test/test_scan.py"
timeout 180 "$PY" -m pytest -q -rs -p no:cacheprovider test/test_scan.py 2>&1 | tee "$OUT/test_scan.txt"

echo "== diffmf bench, float16, both presets"
timeout 240 "$PY" -m diffmf_core.cli bench --device cuda --half --presets live paper \
  --sizes 320x256 640x512 1280x1024 --repeats 20 --warmup 3 --budget-s 10 --out "$OUT/bench_half" 2>&1 \
  | tee "$OUT/bench_half.txt"

echo "== diffmf bench, float32, live"
timeout 90 "$PY" -m diffmf_core.cli bench --device cuda --presets live --sizes 320x256 640x512 1280x1024 \
  --repeats 20 --warmup 3 --budget-s 5 --scan-tokens 0 --out "$OUT/bench_fp32" 2>&1 | tee "$OUT/bench_fp32.txt"
echo "results in $OUT"
