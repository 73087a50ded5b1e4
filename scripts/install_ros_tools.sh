#!/usr/bin/env bash
# Install the ROS 2 launch system, launch_testing and the `ros2` command line into the venv from
# their upstream sources in ../shared/vendor/ros2 (development and CI only: no package registry
# serves them as wheels; on a ROS 2 system they come from apt and this script is not used).
#
#   scripts/install_ros_tools.sh [VENDOR_DIR]   (default: $DIFFMF_ROS2_VENDOR or ../shared/vendor/ros2)
#
# 1. pip install --no-deps of launch, launch_xml, launch_yaml, launch_testing, launch_ros,
#    launch_testing_ros, ros2launch, ros2cli (+ pkg, node, topic, param, lifecycle, service, run),
#    rosidl_runtime_py, plus osrf-pycommon from PyPI (lark is already there for rosidl);
# 2. composition_interfaces (imported by launch_ros) built with cmake against the venv's rosidl
#    and installed into the venv, as scripts/build_msgs.sh does for msg/.
# The vendor folder may be read-only (CI): it is copied to a temporary folder first (pip builds
# local folders in place). Called by scripts/setup_env.sh when the folder exists; log:
# $VENV/ros_tools_build.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFMF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
VENDOR="${1:-${DIFFMF_ROS2_VENDOR:-$ROOT/../shared/vendor/ros2}}"
LOG="$VENV/ros_tools_build.log"

[ -x "$PY" ] || { echo "install_ros_tools: no venv at $VENV (run scripts/setup_env.sh)" >&2; exit 1; }
[ -d "$VENDOR" ] || { echo "install_ros_tools: no vendor folder $VENDOR" >&2; exit 1; }
command -v cmake >/dev/null || { echo "install_ros_tools: cmake not found (apt-get install cmake g++)" >&2; exit 1; }

run() {  # one step, quietly; on failure the end of the log
  if ! "$@" >>"$LOG" 2>&1; then
    echo "install_ros_tools: failed: $*" >&2
    tail -n 40 "$LOG" >&2
    echo "install_ros_tools: full log: $LOG" >&2
    exit 1
  fi
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/diffmf-ros-tools-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
cp -r "$VENDOR/." "$TMP/"
chmod -R u+w "$TMP"
: >"$LOG"

packages=(launch/launch launch/launch_xml launch/launch_yaml launch/launch_testing
  launch_ros/launch_ros launch_ros/launch_testing_ros launch_ros/ros2launch
  ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2node ros2cli/ros2topic ros2cli/ros2param
  ros2cli/ros2lifecycle ros2cli/ros2service ros2cli/ros2run rosidl_runtime_py)
for pkg in "${packages[@]}"; do
  [ -f "$TMP/$pkg/setup.py" ] || { echo "install_ros_tools: $VENDOR/$pkg/setup.py missing" >&2; exit 1; }
done
extra=(osrf-pycommon)
"$PY" -c 'import lark' 2>/dev/null || extra+=(lark)  # rosidl's lark-parser already provides it
(cd "$TMP" && run "$PY" -m pip --disable-pip-version-check install --no-deps --no-build-isolation \
  "${packages[@]/#/./}" "${extra[@]}")

export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
run cmake -S "$TMP/rcl_interfaces/composition_interfaces" -B "$TMP/build" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
run cmake --build "$TMP/build" -j "$(nproc 2>/dev/null || echo 2)"
run cmake --install "$TMP/build"

if ! (cd / && "$PY" -c 'import launch, launch_ros, launch_testing, ros2cli
from composition_interfaces.srv import LoadNode; LoadNode.Request()') >>"$LOG" 2>&1; then
  echo "install_ros_tools: installed, but the imports fail:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
