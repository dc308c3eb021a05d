#!/usr/bin/env bash
# The long variants of the fault-injection suite (issue #6): 50,000 payloads through 8 sender
# and 4 deliverer processes, 25 SIGKILLed deliverers, and longer runs of every other scenario.
# Takes several minutes; prints every scenario's counts (lost, duplicated, unexpected, ...).
#
#   scripts/faults_long.sh                     # all scenarios
#   scripts/faults_long.sh -k killed_reliable  # extra pytest arguments are passed on
#   GAESIGNALS_FAULTS_SEED=7 scripts/faults_long.sh   # other random kill points
#
# Uses the python on PATH when it has gaesignals' test dependencies, else .venv/bin/python
# (PYTHON overrides both). The default test run (pytest) runs the small variants.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import gaesignals, pytest, pymemcache' >/dev/null 2>&1; then
        PY="$(command -v python3)"
    elif [ -x .venv/bin/python ]; then
        PY=.venv/bin/python
    else
        echo "faults_long.sh: no python with the test dependencies found (run .ci/run first)" >&2
        exit 1
    fi
fi
export GAESIGNALS_FAULTS_SCALE=long
exec "$PY" -m pytest tests/test_faults_*.py -s -p no:cacheprovider "$@"
