#!/usr/bin/env bash
# Build msg/ (FusionInfo) with plain cmake against the ROS 2 PyPI wheels in the venv and install
# the generated interfaces into the venv itself (no colcon, no system ROS).
#
#   scripts/build_msgs.sh              repair the wheels' CMake exports, configure, build, install
#   scripts/build_msgs.sh --repair-only  only the (idempotent) CMake-export repair
#
# Details (see the README, "Environment here"):
# * the wheels' export_*__rosidl_generator_pyExport.cmake name the wheel builder's Python/numpy
#   include dirs: scripts/repair_ros_wheels.py rewrites them to this venv's (idempotent);
# * typesupports are found through the ament index, hence AMENT_PREFIX_PATH=$VENV for cmake;
# * DIFFMF_MSGS_ONLY=ON installs only the interfaces; the generated (empty) diffmf_ros/__init__.py
#   is then removed from site-packages so the checkout's diffmf_ros/ (pip-editable) is the package
#   and extends its __path__ to the generated half (see diffmf_ros/__init__.py).
# Build tree: $VENV/diffmf_msgs_build (goes away with the venv); log: $VENV/diffmf_msgs_build.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFMF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
BUILD="$VENV/diffmf_msgs_build"
LOG="$VENV/diffmf_msgs_build.log"

[ -x "$PY" ] || { echo "build_msgs: no venv at $VENV (run scripts/setup_env.sh)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "build_msgs: cmake not found (apt-get install cmake g++)" >&2; exit 1; }

changed=$("$PY" "$ROOT/scripts/repair_ros_wheels.py" "$VENV")
[ "$changed" = 0 ] || echo "  repaired $changed CMake export files of the ROS wheels"
[ "${1:-}" = "--repair-only" ] && exit 0

run() {  # run a build step quietly; on failure show the end of the log
  if ! "$@" >>"$LOG" 2>&1; then
    echo "build_msgs: failed: $*" >&2
    tail -n 40 "$LOG" >&2
    echo "build_msgs: full log: $LOG" >&2
    exit 1
  fi
}

: >"$LOG"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
run cmake -S "$ROOT" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DDIFFMF_MSGS_ONLY=ON \
  -DBUILD_TESTING=OFF
run cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)"
run cmake --install "$BUILD"

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$SITE/diffmf_ros/__init__.py" "$SITE"/diffmf_ros/__pycache__/__init__.*.pyc

# The generated half must import on its own (outside the checkout, without the sources).
if ! (cd / && "$PY" -c 'from diffmf_ros.msg import FusionInfo; FusionInfo()') >>"$LOG" 2>&1; then
  echo "build_msgs: built, but 'from diffmf_ros.msg import FusionInfo' fails:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
