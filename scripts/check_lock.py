"""Check that an environment holds exactly the locked packages (scripts/setup.sh runs this).

    python scripts/check_lock.py            # exit 1, listing every difference, unless exact
    python scripts/check_lock.py --extras   # print the installed packages no lock names

The locks are requirements.lock and requirements-nodeps.lock: `name==version` lines only. The
project itself (kame-sim, installed editable) is the one package allowed besides them. Unlike
`pip check` this does not look at declared requirements, so moshi's torch<2.10 pin (bypassed on
purpose with --no-deps) is no failure here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock", "requirements-nodeps.lock")
PROJECT = "kame-sim"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_locks() -> tuple[dict[str, str], list[str]]:
    pins: dict[str, str] = {}
    problems: list[str] = []
    for lock in LOCKS:
        for n, raw in enumerate((ROOT / lock).read_text().splitlines(), 1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            m = PIN.match(line)
            if m is None:
                problems.append(f"{lock}:{n}: not an exact `name==version` pin: {raw.strip()}")
                continue
            name = canonical(m[1])
            if name in pins:
                problems.append(f"{lock}:{n}: {name} is pinned twice")
            pins[name] = m[2]
    return pins, problems


def installed() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), []).append(dist.version)
    return found


def main(argv: list[str]) -> int:
    pins, problems = read_locks()
    have = installed()
    extras = sorted(n for n in have if n not in pins and n != PROJECT)
    if argv[1:] == ["--extras"]:
        print(" ".join(extras))
        return 0
    for name, version in sorted(pins.items()):
        versions = have.get(name)
        if not versions:
            problems.append(f"missing: {name}=={version}")
        elif versions != [version]:
            problems.append(f"{name}: installed {', '.join(versions)}, locked {version}")
    problems += [f"not in the lock: {n}=={', '.join(have[n])}" for n in extras]
    if PROJECT not in have:
        problems.append(f"missing: {PROJECT} itself (pip install --no-deps -e .)")
    if problems:
        print(f"{sys.prefix} does not match {' + '.join(LOCKS)}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{sys.prefix}: exactly the {len(pins)} locked packages (+ {PROJECT})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
