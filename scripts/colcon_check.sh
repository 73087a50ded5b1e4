#!/usr/bin/env bash
# Build this package with colcon in a scratch workspace, against the ROS 2 wheels in the venv
# (on a ROS 2 system just use colcon directly, see README).
#
#   scripts/colcon_check.sh [WORKSPACE]     (default: a new temporary folder; kept, path printed)
#
# The working tree (tracked + untracked, not ignored files: no .venv/) is copied to
# WORKSPACE/src/diffmf_ros. Why a copy and not a symlink of the checkout: the venv lives inside
# the checkout, and CMake refuses exported include dirs "prefixed in the source directory" (the
# venv's numpy include used by rosidl_generator_py); a symlinked source dir resolves to the
# checkout again.
# Output: colcon's log in WORKSPACE/colcon-build.log; on success the last line is
# "install: WORKSPACE/install".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFMF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
WS="${1:-$(mktemp -d "${TMPDIR:-/tmp}/diffmf-colcon-XXXXXX")}"
[ -x "$VENV/bin/colcon" ] || { echo "colcon_check: no colcon in $VENV (run scripts/setup_env.sh)" >&2; exit 1; }

"$PY" "$ROOT/scripts/repair_ros_wheels.py" "$VENV" >/dev/null

SRC="$WS/src/diffmf_ros"
rm -rf "$SRC"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | tar -C "$ROOT" --null -T - -cf - | tar -C "$SRC" -xf -
else
  tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./install --exclude=./log \
    --exclude=__pycache__ -cf - . | tar -C "$SRC" -xf -
fi

cd "$WS"
if ! AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" \
     CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" \
     "$VENV/bin/colcon" build --packages-select diffmf_ros \
       --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
       >"$WS/colcon-build.log" 2>&1; then
  tail -n 40 "$WS/colcon-build.log" >&2
  echo "colcon_check: colcon build failed (log: $WS/colcon-build.log)" >&2
  exit 1
fi
echo "install: $WS/install"
