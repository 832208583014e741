"""`make cluster-up` then `make cluster-down` on a second cluster of its own: no process is left."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import wait_until

REPO = Path(__file__).resolve().parents[2]
EXPORTER = Path(__file__).with_name("exporter.py")


def _processes_mentioning(text: str) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


@pytest.fixture
def second_cluster_env(tmp_path):
    env = dict(os.environ)
    env.update(
        TIERSCALE_CLUSTER_DIR=str(tmp_path / "cluster"),
        TIERSCALE_CLUSTER_PORT_BASE="17400",
        TIERSCALE_GPU_NODES="1",
        TIERSCALE_GPUS_PER_NODE="2",
    )
    yield env
    # Whatever the test left behind, stop it.
    subprocess.run(["make", "-s", "cluster-down"], cwd=REPO, env=env, timeout=180, check=False)


def test_cluster_down_leaves_no_process_behind(cluster, second_cluster_env):
    env = second_cluster_env
    state_dir = env["TIERSCALE_CLUSTER_DIR"]
    up = subprocess.run(["make", "-s", "cluster-up"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert kubeconfig == f"{state_dir}/kubeconfig"

    # One local pod, so the pod processes are covered too.
    kubectl = [str(cluster.tools.kubectl), f"--kubeconfig={kubeconfig}"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "exporter", "namespace": "default", "labels": {"tierscale.io/local-run": "true"}},
        "spec": {"containers": [{"name": "exporter", "image": "x", "command": ["python", str(EXPORTER)],
                                 "args": ["--port", "9100"], "ports": [{"containerPort": 9100}]}]},
    }
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod), text=True, check=True,
                   capture_output=True, timeout=60)
    pid_file = Path(state_dir) / "pods" / "default" / "exporter" / "exporter.pid"
    pod_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout_s=60,
                             what="the pod process to start"))
    components = _processes_mentioning(state_dir)
    assert len(components) >= 7, components  # etcd, 3 control plane, kwok, podrunner, prometheus

    down = subprocess.run(["make", "-s", "cluster-down"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)

    assert down.returncode == 0, down.stderr
    assert _processes_mentioning(state_dir) == {}
    assert not Path(f"/proc/{pod_pid}").exists() or (
        Path(f"/proc/{pod_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    )
