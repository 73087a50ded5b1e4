#!/usr/bin/env bash
# GPU check, about 6 minutes (each step time-boxed, at most 15), from the repository root of a
# checkout on a CUDA machine:
#   1. make the mamba_ssm fast path importable: a wheel in .whl/ (scripts/gpu_wheels.sh, for machines
#      without internet), else pip (at most $INSTALL_TIMEOUT s); failure is reported, not fatal
#   2. CUDA tests: test/test_scan.py (mamba_ssm vs portable scan) and test/test_cuda_graph.py
#      (graph replay == eager network)
#   3. diffmf bench, float16: both presets, both scan backends, eager and CUDA graphs, 3 sizes;
#      the paper preset at 640x512 with SSD chunks of 256
#   4. the node fed at 30 Hz with 640x512 pairs (live, live with CUDA graphs, paper), when rclpy is
#      there or the ROS wheels are in .whl/
# Steps 1-3 need PyTorch with CUDA, numpy, opencv, safetensors, PyYAML, psutil, matplotlib, pytest.
# On the workplace's offline GPU machines: run scripts/gpu_wheels.sh here first and carry .whl/.
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
timeout 120 "$PY" -m pytest -q -rs -p no:cacheprovider test/test_scan.py test/test_cuda_graph.py 2>&1 | tee "$OUT/tests.txt"

bench() {  # bench NAME TIMEOUT ARGS...
  local name="$1" limit="$2"
  shift 2
  echo "== diffmf bench $*"
  timeout "$limit" "$PY" -m diffmf_core.cli bench --device cuda --repeats 50 --warmup 3 --budget-s 3 \
    --out "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.txt"
}
SIZES=(320x256 640x512 1280x1024)
# One bench per preset and runner: a case that runs out of time loses only its own bench (bench.csv
# is rewritten after every case).
bench live_fp16 90 --half --presets live --sizes "${SIZES[@]}"
bench paper_fp16 150 --half --presets paper --sizes "${SIZES[@]}" --scan-tokens 0
bench live_fp16_graph 60 --half --cuda-graph --presets live --sizes "${SIZES[@]}" --scan-tokens 0
bench paper_fp16_graph 90 --half --cuda-graph --presets paper --sizes "${SIZES[@]}" --scan-tokens 0
bench paper_fp16_q256 40 --half --presets paper --sizes 640x512 --chunk-size 256 --scan-tokens 0
# 4. The node at 30 Hz on the GPU (publisher and node in separate processes, diffmf_ros.bench_node).
# Needs rclpy and the built messages: a ROS 2 system that has them, else a venv made here from the
# wheels in .whl/ (scripts/gpu_wheels.sh) that also sees this Python's PyTorch (a .pth file).
echo "== node at 30 Hz"
NODE_PY=""
if "$PY" -c "import rclpy, diffmf_ros.msg" >/dev/null 2>&1; then
  NODE_PY="$PY"
elif ls .whl/ros_rclpy-*.whl >/dev/null 2>&1; then
  VENV=/tmp/diffmf-node-venv
  "$PY" -m venv "$VENV"
  "$PY" -c "import site; print('\n'.join(site.getsitepackages()))" \
    > "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/gpu_image.pth"
  if PIP_NO_INDEX=1 PIP_FIND_LINKS="$ROOT/.whl" DIFFMF_VENV="$VENV" DIFFMF_REQUIREMENTS=requirements-ros.txt \
      timeout 150 scripts/setup_env.sh > "$OUT/node_setup.log" 2>&1; then
    NODE_PY="$VENV/bin/python"
  fi
  tail -n 3 "$OUT/node_setup.log"
fi
if [[ -z "$NODE_PY" ]]; then
  echo "node check skipped: no rclpy with diffmf_ros messages, and no ROS wheels in .whl/" | tee "$OUT/node.txt"
else
  for args in "--preset live" "--preset live --cuda-graph" "--preset paper"; do
    # shellcheck disable=SC2086  # $args is a list of options
    timeout 75 "$NODE_PY" -m diffmf_ros.bench_node --device cuda --rate 30 --frames 300 --size 640x512 $args \
      --start-timeout 45 --out "$OUT/node" 2>&1 | tee -a "$OUT/node.txt"
  done
fi

tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
echo "results in $OUT and $OUT.tar.gz"
