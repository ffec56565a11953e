#!/usr/bin/env bash
# Create .venv and install kame-sim with its test/query extras. Idempotent; safe to re-run.
# torch is not needed by the simulation core (it comes with the real front-end).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
