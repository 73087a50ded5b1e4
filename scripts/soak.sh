#!/usr/bin/env bash
# Long reliability runs (pytest marker "slow"): node overload at 60 Hz for 60 s and a 20,000-pair soak
# (test/test_node_overload.py), plus any other slow test. Prints each run's measured summary line.
# Usage: scripts/soak.sh [extra pytest args]   (make soak runs it after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${DIFFMF_VENV:-.venv}/bin/python"
exec "$PY" -m pytest -p no:cacheprovider -q -rfEsP --timeout=1800 -m slow "$@" test
