#!/usr/bin/env bash
# GPU check in under 10 minutes, from the repository root of a checkout on a CUDA machine:
#   1. make the mamba_ssm fast path importable: a wheel in .whl/ (scripts/gpu_wheels.sh, for machines
#      without internet), else pip (at most $INSTALL_TIMEOUT s); failure is reported, not fatal
#   2. CUDA tests: test/test_scan.py (mamba_ssm vs portable scan) and test/test_cuda_graph.py
#      (graph replay == eager network)
#   3. diffmf bench, float16: both presets, both scan backends, eager and CUDA graphs, 3 sizes;
#      the paper preset at 640x512 with SSD chunks of 128 and 256
# Needs PyTorch with CUDA, numpy, opencv, safetensors, PyYAML, psutil, matplotlib, pytest (no ROS).
# Everything goes to $RESULTS (default runs/gpu): env.txt, install.log, tests.txt, one folder per
# bench (bench.csv, latency.png) with its printed table in <name>.txt; and all of it packed in
# $RESULTS.tar.gz. Env: PYTHON (default .venv/bin/python if present, else python3),
# INSTALL_TIMEOUT (default 240), SKIP_INSTALL=1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${RESULTS:-runs/gpu}"
mkdir -p "$OUT"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi not found"
  "$PY" - <<'PYEOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "CUDA not available to $PY: nothing to check on this machine" | tee -a "$OUT/env.txt"
  exit 1
fi

has_fast_path() { "$PY" -c "from diffmf_core.ops.scan import mamba_ssm_scan as f; import sys; sys.exit(f() is None)"; }
if has_fast_path; then
  echo "mamba_ssm fast path already importable" | tee "$OUT/install.log"
elif [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
  echo "SKIP_INSTALL=1: not installing mamba_ssm" | tee "$OUT/install.log"
elif ls .whl/mamba_ssm-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --no-index --no-deps --no-compile --target /tmp/diffmf-site .whl/mamba_ssm-*.whl \
    > "$OUT/install.log" 2>&1
  export PYTHONPATH="$PYTHONPATH:/tmp/diffmf-site"
else
  # Online: build against the torch already installed; setup.py prefers prebuilt wheels.
  MAMBA_FORCE_BUILD=FALSE CAUSAL_CONV1D_FORCE_BUILD=FALSE MAX_JOBS="${MAX_JOBS:-8}" \
    timeout "${INSTALL_TIMEOUT:-240}" "$PY" -m pip install --no-build-isolation einops mamba-ssm \
    > "$OUT/install.log" 2>&1
fi
if has_fast_path; then echo "mamba_ssm fast path: available"; else echo "mamba_ssm fast path: NOT available (portable scan only)"; fi \
  | tee -a "$OUT/install.log"

echo "== CUDA tests"
timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider test/test_scan.py test/test_cuda_graph.py 2>&1 | tee "$OUT/tests.txt"

bench() {  # bench NAME TIMEOUT ARGS...
  local name="$1" limit="$2"
  shift 2
  echo "== diffmf bench $*"
  timeout "$limit" "$PY" -m diffmf_core.cli bench --device cuda --repeats 50 --warmup 3 --budget-s 3 \
    --out "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.txt"
}
SIZES=(320x256 640x512 1280x1024)
bench fp16_eager 200 --half --presets live paper --sizes "${SIZES[@]}"
bench fp16_graph 120 --half --cuda-graph --presets live paper --sizes "${SIZES[@]}" --scan-tokens 0
for q in 128 256; do
  bench "fp16_paper_q$q" 40 --half --presets paper --sizes 640x512 --chunk-size "$q" --scan-tokens 0
done
tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
echo "results in $OUT and $OUT.tar.gz"
