#!/usr/bin/env bash
# diffmf demo without a system ROS 2: replay the sample bag through real ROS 2 topics.
#
#   scripts/demo.sh            (make demo runs setup first)
#
# Starts, as separate processes on a private ROS domain: the fusion node (config/fuse.yaml,
# its default fuser, the warm rule; use_sim_time), the recorder (fused outputs + inputs), then the player
# (sample bag with /clock). When the recorder has seen no message for DEMO_IDLE_S seconds
# everything is stopped with SIGINT and runs/demo/ gets: fused_bag/ (rosbag2, MCAP), report/
# (fused.mp4, strip.png, summary.md), logs/. A DEMO_OUT that an earlier demo did not make is
# refused. Exit status non-zero, with the reason, on any failure.
#
# Environment: DEMO_BAG (default samples/m3svd_0117_1605), DEMO_OUT (runs/demo), DEMO_RATE
# (playback speed factor, default 1.0; lower it if the CPU cannot keep up), DEMO_DEVICE
# (auto|cpu|cuda, default auto), DEMO_PARAMS (default config/fuse.yaml), ROS_DOMAIN_ID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${DIFFMF_PYTHON:-$ROOT/.venv/bin/python}"
BAG="${DEMO_BAG:-samples/m3svd_0117_1605}"
OUT="${DEMO_OUT:-runs/demo}"
RATE="${DEMO_RATE:-1.0}"
DEVICE="${DEMO_DEVICE:-auto}"
PARAMS="${DEMO_PARAMS:-config/fuse.yaml}"
IDLE_S="${DEMO_IDLE_S:-10}"
READY_TIMEOUT_S="${DEMO_READY_TIMEOUT_S:-300}"

fail() { echo "demo: FAILED: $*" >&2; exit 1; }
[ -x "$PY" ] || fail "$PY not found: run 'make setup' (scripts/setup_env.sh) first"
[ -e "$BAG" ] || fail "sample bag $BAG not found"

# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( $$ % 100 + 101 ))}"
export PYTHONUNBUFFERED=1

# Only a folder an earlier demo made is reused (its marker; an older demo's, without the marker,
# holds nothing but the demo's parts), and only the demo's own parts of it are replaced; anything
# else at $OUT is left alone.
MARKER="$OUT/.diffmf-demo"
OWN=(fused_bag report logs)
LEGACY=(fused.mp4 strip.png summary.md .diffmf-bag-report)  # an older demo wrote its report here
if [ -e "$OUT" ] && [ ! -e "$MARKER" ]; then
  [ -d "$OUT" ] || fail "$OUT exists and was not written by the demo; move it or set DEMO_OUT"
  for entry in "$OUT"/* "$OUT"/.[!.]*; do
    [ -e "$entry" ] || continue
    name="$(basename "$entry")"
    [[ " ${OWN[*]} ${LEGACY[*]} " == *" $name "* ]] || \
      fail "$OUT exists and was not written by the demo ($name); move it or set DEMO_OUT"
  done
  for name in "${LEGACY[@]}"; do rm -f "${OUT:?}/$name"; done
fi
mkdir -p "$OUT"
touch "$MARKER"
for name in "${OWN[@]}"; do rm -rf "${OUT:?}/$name"; done
mkdir -p "$OUT/logs"
LOGS="$OUT/logs"
READY="$LOGS/recorder.ready"
PIDS=()

stop_pid() {  # SIGINT, then SIGTERM after 10 s, then SIGKILL: only the processes started here
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null; }
show_log() { echo "--- $1 (last lines) ---" >&2; tail -n 20 "$1" >&2 || true; }

echo "demo: ROS_DOMAIN_ID=$ROS_DOMAIN_ID, bag $BAG, rate $RATE, device $DEVICE, output $OUT"
"$PY" -m diffmf_core.cli bag info "$BAG"

# The sample is JPEG-compressed: the node subscribes to <topic>/compressed.
"$PY" -m diffmf_ros.fusion_node --ros-args --params-file "$PARAMS" \
  -p use_sim_time:=true -p device:="$DEVICE" \
  -p thermal_transport:=compressed -p rgb_transport:=compressed \
  -p qos_reliability:=reliable -p qos_depth:=100 >"$LOGS/node.log" 2>&1 &
NODE=$!; PIDS+=("$NODE")

"$PY" -m diffmf_ros.recorder "$OUT/fused_bag" --inputs --ready-file "$READY" \
  --idle-timeout "$IDLE_S" --require-messages >"$LOGS/recorder.log" 2>&1 &
RECORDER=$!; PIDS+=("$RECORDER")

echo "demo: waiting for the node (model load + warm-up) and the recorder..."
waited=0
until [ -e "$READY" ]; do
  alive "$NODE" || { show_log "$LOGS/node.log"; fail "the fusion node exited during start-up"; }
  alive "$RECORDER" || { show_log "$LOGS/recorder.log"; fail "the recorder exited during start-up"; }
  [ "$waited" -lt $(( READY_TIMEOUT_S * 10 )) ] || { show_log "$LOGS/node.log"; fail "not ready after ${READY_TIMEOUT_S} s"; }
  sleep 0.1; waited=$(( waited + 1 ))
done
grep -h -E "loaded|fusing|not loaded" "$LOGS/node.log" || true

echo "demo: playing $BAG"
# 2 subscribers per input topic: the node and the recorder (--inputs).
if ! "$PY" -m diffmf_ros.player "$BAG" --clock --rate "$RATE" --wait-for-subscribers 2 \
    --wait-timeout 60 2>&1 | tee "$LOGS/player.log"; then
  fail "the player failed (see $LOGS/player.log)"
fi
grep -q "^player: done" "$LOGS/player.log" || fail "the player did not finish (see $LOGS/player.log)"

echo "demo: waiting for the last fused frames (recorder stops ${IDLE_S} s after the last message)..."
wait "$RECORDER" || { show_log "$LOGS/recorder.log"; fail "the recorder failed"; }
cat "$LOGS/recorder.log" | grep "^recorder:" || true
stop_pid "$NODE"
wait "$NODE" 2>/dev/null || true

RESOLVED_DEVICE="$("$PY" -c "
import sys
try:
    from diffmf_core.fuser import resolve_device
    print(resolve_device(sys.argv[1]))
except Exception:
    print(sys.argv[1])" "$DEVICE")"
"$PY" -m diffmf_core.cli bag report "$OUT/fused_bag" --input "$BAG" --outdir "$OUT/report" \
  --params-file "$PARAMS" --device "$RESOLVED_DEVICE" || fail "no usable fused output (see $LOGS/)"
echo "demo: done: $OUT/report/summary.md, $OUT/report/fused.mp4, $OUT/report/strip.png, $OUT/fused_bag/"
