"""Fixtures of the chart tests that need no cluster: the helm binary and rendering."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tierscale"


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm that hack/build-tools.sh builds (nothing is built when the cache is warm)."""
    from tierscale_localcluster.cluster import Tools

    return Tools.build().helm / "helm"


@pytest.fixture(scope="session")
def render(helm):
    """Renders the chart as release "t" in namespace "ns" with extra helm arguments; returns the objects."""

    def render_chart(*args: str) -> list[dict]:
        result = subprocess.run([str(helm), "template", "t", str(CHART), "--namespace", "ns", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return render_chart


def find(objects: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
