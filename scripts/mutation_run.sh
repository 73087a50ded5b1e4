#!/usr/bin/env bash
# Scoped mutation-testing run (mutmut 3, docs/development.md "Mutation testing", record in docs/mutation.md); not part of `make test`.
#
#   scripts/mutation_run.sh [module ...]     modules: sync metrics losses imagecodec registration scan
#                                            agc frames decoder fuser outputs bag (default: all twelve)
#
# Works in a scratch copy of the tracked files (MUTATION_WORKDIR, default a new temp dir) so the
# working tree is never mutated; needs mutmut in the venv (`.venv/bin/pip install -r
# requirements-mutation.txt`). Each module is mutated and run against its own test files only.
# Runs niced on MUTATION_JOBS (default 2) processes; prints the survivors at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
work=${MUTATION_WORKDIR:-$(mktemp -d -t diffmf-mutation.XXXXXX)}
declare -A SRC=([sync]=diffmf_core/live/sync.py [metrics]=diffmf_core/training/metrics.py [losses]=diffmf_core/training/losses.py
                [imagecodec]=diffmf_core/live/imagecodec.py [registration]=diffmf_core/live/registration.py
                [scan]=diffmf_core/ops/scan.py [agc]=diffmf_core/live/agc.py [frames]=diffmf_core/live/frames.py
                [decoder]=diffmf_core/modules/pyramid_decoder.py [fuser]=diffmf_core/fuser.py
                [outputs]=diffmf_core/common/outputs.py [bag]="diffmf_core/tools/bag/*")
declare -A TESTS=([sync]="test/test_sync.py test/test_properties_codec_sync.py" [metrics]=test/test_metrics.py
                  [losses]=test/test_losses.py [imagecodec]="test/test_codec.py test/test_properties_codec_sync.py"
                  [registration]=test/test_registration.py [scan]=test/test_scan.py [agc]=test/test_agc.py
                  [frames]="test/test_frames.py test/test_live_path_pins.py test/test_camera_info_geometry.py"
                  [decoder]="test/test_pyramid.py test/test_live_path_pins.py test/test_steady_video.py"
                  [fuser]="test/test_steady_video.py test/test_live_path_pins.py test/test_weights.py
                           test/test_cuda_graph.py"
                  [outputs]="test/test_output_policy.py test/test_output_pins.py test/test_data_safety.py"
                  [bag]="test/test_bags.py test/test_output_pins.py test/test_camera_info_geometry.py")
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(sync metrics losses imagecodec registration scan agc frames decoder fuser outputs bag)
# the reference-value tests read ../shared/data relative to the repository: point them at it
if [ -z "${DIFFMF_DATA:-}" ] && [ -d "$root/../shared/data" ]; then export DIFFMF_DATA="$root/../shared/data"; fi

# One OpenMP thread: mutmut forks a worker per mutant from a process that has imported torch, and a
# forked child of a process whose OpenMP pool is running can hang (every torch module's mutants then
# "time out"; seen here on losses before this line: 6 of 8 mutants)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$work"
(cd "$root" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$work"
{
    echo "[mutmut]"
    echo "source_paths = diffmf_core/"
    echo "only_mutate ="
    for m in "${modules[@]}"; do echo "    ${SRC[$m]}"; done
    echo "also_copy ="
    echo "    config/"  # test_registration loads the shipped calibration files
    echo "    msg/"  # the bag tools read FusionInfo.msg
    echo "    samples/"  # test_bags checks the sample recording
    echo "    docs/"  # test_frames checks that docs/node.md documents every parameter
    echo "    launch/"  # test_bags reads the demo launch plan
    echo "pytest_add_cli_args = -p no:cacheprovider -q"
    echo "pytest_add_cli_args_test_selection ="
    for m in "${modules[@]}"; do for t in ${TESTS[$m]}; do echo "    $t"; done; done | sort -u
} > "$work/setup.cfg"
# mutmut reads [tool.mutmut] from pyproject.toml before setup.cfg; the project has none
echo "mutation run in $work on: ${modules[*]}"
cd "$work"
nice -n 10 "$py" -m mutmut run --max-children "${MUTATION_JOBS:-2}" || true
"$py" -m mutmut results || true
