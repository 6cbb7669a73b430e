#!/usr/bin/env bash
# Set up a virtual environment with a CPU build of torch, install cdvideo with its test extra, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest "$@"
