"""Writes the pinned constraints the Dockerfiles install with: hack/docker/constraints-<extra>.txt.

    python hack/docker/lock.py [operator|server ...]

pip resolves the extra from the package index (a dry run: nothing is installed) and every package of
the resolution is written as name==version, so an image built later gets the versions that were
resolved here. pip resolves for the interpreter and platform it runs on, and the images use
python:3.11 on Linux, so run it with Python 3.11 on Linux.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTRAS = ("operator", "server")


def resolve(extra: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         f"{REPO}[{extra}]"],
        capture_output=True, text=True, timeout=900,
    )
    if result.returncode != 0:
        raise SystemExit(f"pip could not resolve tierscale[{extra}]: {result.stderr.strip()}")
    report = json.loads(result.stdout)
    pins = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    pins.pop("tierscale", None)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> None:
    extras = sys.argv[1:] or list(EXTRAS)
    for extra in extras:
        if extra not in EXTRAS:
            raise SystemExit(f"unknown extra {extra!r}: expected one of {', '.join(EXTRAS)}")
        pins = resolve(extra)
        header = (f"# Pinned dependencies of tierscale[{extra}] for the container image, "
                  f"resolved by `make docker-lock` with Python {sys.version_info.major}.{sys.version_info.minor}.\n")
        (Path(__file__).parent / f"constraints-{extra}.txt").write_text(header + "\n".join(pins) + "\n")
        print(f"constraints-{extra}.txt: {len(pins)} packages", file=sys.stderr)


if __name__ == "__main__":
    main()
