#!/usr/bin/env bash
# Set up a virtual environment with a CPU build of torch, install cdvideo with its test extra (and Debian's
# Chromium for the web app's browser test), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if ! { command -v chromium && command -v chromedriver; } > /dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update -qq > /dev/null && $SUDO apt-get install -y -qq chromium chromium-driver > /dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
"$VENV/bin/lint-imports" --no-cache  # the layer contracts in pyproject.toml: an import that runs back up fails
# two workers (pytest-xdist), each test file on one of them, one thread each (tests/conftest.py): 1.5x faster on 2
# cores than one process with two threads; files in collection order (--no-loadscope-reorder), the slowest first
# (tests/conftest.py); --durations: the slowest tests, so the next slow one is seen
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder \
    --durations=15 "$@"
