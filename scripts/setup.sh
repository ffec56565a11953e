#!/usr/bin/env bash
# Create .venv and install kame-sim with everything its tests need, exactly as locked.
# Idempotent; safe to re-run: afterwards .venv holds the locked packages and nothing else.
#
# requirements.lock pins every package (scripts/lock.sh regenerates it; see the README), so nothing
# is resolved here: each goes in with --no-deps, as a wheel. torch is the CPU build 2.13.0+cpu (a
# local wheel on these machines; elsewhere add PyTorch's CPU wheel index, e.g. through
# PIP_EXTRA_INDEX_URL). moshi pins torch<2.10, which would pull torch 2.9 and gigabytes of CUDA
# wheels, so it is pinned apart in requirements-nodeps.lock, after its real needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup.sh: note: requirements.lock was made for Python 3.11; .venv has $(.venv/bin/python -V)" >&2
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
locked() { pip install --quiet --no-deps --only-binary=:all: "$@"; }
locked "$(grep -E '^pip==' requirements.lock)"   # the locked pip installs the rest
locked -r requirements.lock
locked -r requirements-nodeps.lock
pip install --quiet --no-deps --no-build-isolation -e .
extras=$(.venv/bin/python scripts/check_lock.py --extras)
if [ -n "$extras" ]; then
  echo "setup.sh: removing packages that no lock names: $extras" >&2
  # shellcheck disable=SC2086
  pip uninstall --quiet --yes $extras
fi
.venv/bin/python scripts/check_lock.py

# The browser test (tests/test_report_browser.py) opens the HTML reports in headless Chromium:
# Debian's chromium package, installed here when missing and running as root (CI, these machines).
if [ -z "${KAME_SIM_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: installing Debian's chromium for the browser test (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
      echo "setup.sh: error: apt-get install chromium failed; the browser test needs it" >&2
      exit 1
    fi
  else
    echo "setup.sh: warning: no chromium on PATH and not root, so not installed: the browser test" \
      "(tests/test_report_browser.py) will fail. Install it (sudo apt-get install chromium) or set" \
      "KAME_SIM_CHROMIUM to a Chromium/Chrome executable." >&2
  fi
fi
