#!/usr/bin/env bash
# Prepare, on a machine with internet, what scripts/gpu_check.sh installs on a GPU machine that has
# PyTorch and Triton but no internet (carry the folder along with the checkout):
#   1. a pure-Python wheel of mamba-ssm built without its CUDA extensions (MAMBA_SKIP_CUDA_BUILD=TRUE:
#      no nvcc, seconds). Its Triton SSD kernel (mamba_chunk_scan_combined) is all the fast path
#      needs; diffmf_core.ops.scan loads it although the package's __init__ wants the extension.
#   2. requirements-ros.txt (ROS 2 wheels, msg build tools, diffmf_core's runtime) for the GPU
#      machine's Python, for the node check; packages its image already has are left out.
#   scripts/gpu_wheels.sh        -> .whl/*.whl (about 45 MB; .whl/ is git-ignored)
# Env: WHEEL_DIR (default .whl), GPU_PYTHON_VERSION (default 3.12), SKIP_PACKAGES (wheel names
# left out, default "numpy opencv_python_headless": the GPU image has them), MAMBA_SSM_VERSION
# (default 2.3.2.post1), NO_ROS=1 (only step 1), PYTHON (default .venv/bin/python: any Python
# with torch and setuptools; the wheels do not depend on its version).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="${WHEEL_DIR:-.whl}"
PY="${PYTHON:-.venv/bin/python}"
PYV="${GPU_PYTHON_VERSION:-3.12}"
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip_() { "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

# 1. mamba-ssm without CUDA extensions (metadata and build need no nvcc or GPU with these set)
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
  pip_ download --no-deps --no-binary=:all: --no-build-isolation -d "$tmp" "mamba-ssm==${MAMBA_SSM_VERSION:-2.3.2.post1}"
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
  pip_ wheel --no-deps --no-build-isolation -w "$DIR" "$tmp"/mamba_ssm-*.tar.gz

if [[ "${NO_ROS:-0}" != 1 ]]; then
  # 2. Pure-Python dependencies of the ROS wheels published as source only: build them here.
  pip_ wheel --no-deps -w "$DIR" empy lark-parser
  pip_ download -r requirements-ros.txt -d "$DIR" --find-links "$DIR" --only-binary=:all: \
    --python-version "$PYV" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  for name in ${SKIP_PACKAGES-numpy opencv_python_headless}; do
    rm -f "$DIR/$name"-*.whl
  done
fi
echo "$(find "$DIR" -name '*.whl' | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1))"
