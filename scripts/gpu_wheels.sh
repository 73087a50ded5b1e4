#!/usr/bin/env bash
# Prepare, on a machine with internet, what scripts/gpu_check.sh installs on a GPU machine that has
# PyTorch and Triton but no internet: a pure-Python wheel of mamba-ssm built without its CUDA
# extensions (MAMBA_SKIP_CUDA_BUILD=TRUE: no nvcc, a few seconds). Its Triton SSD kernel
# (mamba_chunk_scan_combined) is all the fast path needs; diffmf_core.ops.scan loads it even though
# the package's __init__ wants the compiled extension.
#   scripts/gpu_wheels.sh            -> .whl/mamba_ssm-<version>-py3-none-any.whl
# Env: MAMBA_SSM_VERSION (default 2.3.2.post1), PYTHON (default .venv/bin/python: any Python with
# torch and setuptools; the wheel does not depend on its version). .whl/ is git-ignored.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION="${MAMBA_SSM_VERSION:-2.3.2.post1}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p .whl
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE  # metadata and build without nvcc or a GPU
"$PY" -m pip download --quiet --no-deps --no-binary=:all: --no-build-isolation -d "$tmp" "mamba-ssm==$VERSION"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w .whl "$tmp"/mamba_ssm-*.tar.gz
ls -l .whl/mamba_ssm-*.whl
