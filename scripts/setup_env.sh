#!/usr/bin/env bash
# Idempotent development environment for this checkout (no system ROS needed):
#   1. .venv (python3 -m venv)                                   only if missing
#   2. pip install -r requirements.txt                           only when requirements*.txt changed
#   3. msg/ -> rosidl interfaces installed into the venv         only when msg/ or the CMake/package
#      (scripts/build_msgs.sh: plain cmake + wheel repairs)      files (or the requirements) changed
#   4. pip install -e . (editable diffmf_core + diffmf_ros)      only when setup.py/pyproject changed
#   5. ROS 2 launch, launch_testing, the ros2 CLI and             only when ../shared/vendor/ros2
#      composition_interfaces from ../shared/vendor/ros2          exists and changed (or the
#      (scripts/install_ros_tools.sh; dev/CI only)                requirements changed)
#   6. this package in the venv's ament index (share/diffmf_ros/{launch,config,samples} linked to
#      the checkout, lib/diffmf_ros/ executables with the venv's Python): `ros2 launch diffmf_ros
#      fuse.launch.py` / `ros2 run diffmf_ros fusion_node` after `source scripts/ros_env.sh`
# Each step records a content hash in .venv/.diffmf-stamps/; a second run only hashes files and
# runs one import check (a few seconds). Nothing is exported permanently: at run time use
# .venv/bin/python directly and `source scripts/ros_env.sh` for the Fast DDS profile and the
# discovery range (see README).
# Env: DIFFMF_VENV (venv location, default <repo>/.venv), PYTHON (interpreter for a new venv,
# default python3), DIFFMF_FORCE=1 (redo every step), DIFFMF_ROS2_VENDOR (the vendored ROS 2
# tools, default <repo>/../shared/vendor/ros2), DIFFMF_REQUIREMENTS (default
# requirements.txt; requirements-ros.txt in a venv that sees an existing PyTorch, as
# scripts/gpu_check.sh makes). pip's own variables apply, e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=.whl
# to install offline from the wheels of scripts/gpu_wheels.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIFFMF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMPS="$VENV/.diffmf-stamps"
cd "$ROOT"

step() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# pip, minus the noise of this machine's pip config ("Location ... is ignored" for every name).
pip_quiet() {
  local out rc=0
  out="$("$PY" -m pip --disable-pip-version-check -q "$@" 2>&1)" || rc=$?
  out="$(printf '%s\n' "$out" | grep -v -E "^WARNING: Location '.*' is ignored" || true)"
  [ -z "$out" ] || printf '%s\n' "$out" >&2
  return "$rc"
}

# Content hash of the given files (names included, missing files count as empty).
content_hash() {
  local f
  for f in "$@"; do printf '%s\n' "$f"; [ -f "$f" ] && cat "$f"; done | sha256sum | cut -d' ' -f1
}

# stamp_ok NAME HASH: is step NAME already done for this content?
stamp_ok() { [ -z "${DIFFMF_FORCE:-}" ] && [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" >"$STAMPS/$1"; }

# 1. venv
if [ ! -x "$PY" ]; then
  base="${PYTHON:-python3}"
  command -v "$base" >/dev/null || die "$base not found"
  "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "Python >= 3.10 needed (ROS 2 wheels exist for cp310-cp314), got $("$base" -V)"
  step "creating venv $VENV ($("$base" -V 2>&1))"
  "$base" -m venv "$VENV"
fi
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# 2. requirements
REQS="${DIFFMF_REQUIREMENTS:-requirements.txt}"
req_hash="$(content_hash "$REQS" requirements*.txt)-py$PYVER"
if ! stamp_ok requirements "$req_hash"; then
  step "installing $REQS into the venv (first time: several minutes)"
  pip_quiet install -r "$REQS" || die "pip install -r $REQS failed"
  stamp_set requirements "$req_hash"
  rm -f "$STAMPS/msgs"  # reinstalled ROS wheels need the CMake repairs and a rebuild
fi

# 3. messages
mapfile -t msg_files < <(find msg -name '*.msg' | LC_ALL=C sort)
msgs_hash="$(content_hash "${msg_files[@]}" CMakeLists.txt package.xml scripts/build_msgs.sh \
  scripts/repair_ros_wheels.py)-$req_hash"
if ! stamp_ok msgs "$msgs_hash"; then
  step "building msg/ (${#msg_files[@]} interface(s)) into the venv with cmake (about 30-90 s)"
  scripts/build_msgs.sh
  stamp_set msgs "$msgs_hash"
fi

# 4. editable install of this checkout
# editable_mode=compat puts the checkout on sys.path with a .pth file: the checkout's diffmf_ros/
# (a regular package) then wins over the generated, __init__-less site-packages/diffmf_ros
# (setuptools' default finder-based editable mode loses to that folder; see diffmf_ros/__init__.py).
edit_hash="$(content_hash setup.py pyproject.toml)-$req_hash"
if ! stamp_ok editable "$edit_hash"; then
  step "pip install -e . (diffmf_core, diffmf_ros, console scripts)"
  pip_quiet install -e . --no-deps --no-build-isolation --config-settings editable_mode=compat \
    || die "pip install -e . failed"
  stamp_set editable "$edit_hash"
fi

# 5. ROS 2 launch / launch_testing / ros2 CLI from the vendored sources (absent: skipped; the
#    launch tests then skip, naming the folder)
VENDOR="${DIFFMF_ROS2_VENDOR:-$ROOT/../shared/vendor/ros2}"
if [ -d "$VENDOR" ]; then
  VENDOR="$(cd "$VENDOR" && pwd)"
  vendor_hash="$( (cd "$VENDOR" && find . -type f -printf '%p %s\n' | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)"
  vendor_hash="$vendor_hash-$(content_hash scripts/install_ros_tools.sh)-$req_hash"
  if ! stamp_ok ros_tools "$vendor_hash"; then
    step "installing ROS 2 launch, launch_testing and the ros2 CLI from $VENDOR (about a minute)"
    scripts/install_ros_tools.sh "$VENDOR"
    stamp_set ros_tools "$vendor_hash"
  fi
fi

# 6. the package in the venv's ament index (cheap; checked every run). The msg build (step 3)
#    installed the index marker and share/diffmf_ros/{package.xml,msg}; add what `ros2 launch` and
#    `ros2 run` look up: launch files, config, samples, and the executables.
share="$VENV/share/diffmf_ros"
mkdir -p "$share" "$VENV/lib/diffmf_ros" "$VENV/share/ament_index/resource_index/packages"
touch "$VENV/share/ament_index/resource_index/packages/diffmf_ros"
cmp -s package.xml "$share/package.xml" || cp package.xml "$share/package.xml"
for d in config samples; do
  if [ -e "$share/$d" ] && [ ! -L "$share/$d" ]; then
    die "$share/$d is not a link to the checkout (an install from elsewhere?); remove it and rerun"
  fi
  [ "$(readlink "$share/$d" 2>/dev/null)" = "$ROOT/$d" ] || ln -sfn "$ROOT/$d" "$share/$d"
done
# launch/: a folder of links to the files (ros2 launch finds files with os.walk, which does not
# enter a linked folder); links of removed launch files go
[ ! -L "$share/launch" ] || rm -f "$share/launch"
mkdir -p "$share/launch"
for f in "$share"/launch/*; do [ ! -L "$f" ] || [ -e "$f" ] || rm -f "$f"; done
for f in launch/*; do
  [ "$(readlink "$share/$f" 2>/dev/null)" = "$ROOT/$f" ] || ln -sfn "$ROOT/$f" "$share/$f"
done
for exe in scripts/ros/*; do  # the ros2 run scripts, with this venv's Python in the shebang
  target="$VENV/lib/diffmf_ros/$(basename "$exe")"
  if ! { printf '#!%s\n' "$PY"; tail -n +2 "$exe"; } | cmp -s - "$target"; then
    { printf '#!%s\n' "$PY"; tail -n +2 "$exe"; } >"$target"
  fi
  [ -x "$target" ] || chmod +x "$target"
done

# Check (from outside the checkout, so only installed paths count): the sources are the
# checkout's and the generated message imports.
if ! check_out="$(cd / && "$PY" -c '
import sys, diffmf_core, diffmf_ros
from pathlib import Path
from diffmf_ros.msg import FusionInfo
root = Path(sys.argv[1]).resolve()
for mod in (diffmf_core, diffmf_ros):
    assert Path(mod.__file__).resolve().parent.parent == root, f"{mod.__name__} from {mod.__file__}"
FusionInfo(mode=FusionInfo.MODE_CLASSICAL)
' "$ROOT" 2>&1)"; then
  printf '%s\n' "$check_out" >&2
  die "environment check failed; try DIFFMF_FORCE=1 scripts/setup_env.sh"
fi
step "ok: $VENV (python $PYVER); run with .venv/bin/python, ROS env: source scripts/ros_env.sh"
