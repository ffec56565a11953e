#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the bundled demo scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/kame-sim run scenarios/demo.toml --overwrite "$@"
