"""Opted-in pods on simulated nodes run as real local processes that Prometheus scrapes."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import requests
from kubernetes import client

from support import wait_until

EXPORTER = Path(__file__).with_name("exporter.py")


def _exporter_pod(name: str) -> client.V1Pod:
    container = client.V1Container(
        name="exporter",
        image="tierscale/exporter:test",
        command=["python", str(EXPORTER)],
        args=["--port", "9100", "--host", "0.0.0.0"],
        ports=[client.V1ContainerPort(name="metrics", container_port=9100)],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/metrics", port="metrics"),
            period_seconds=1,
            failure_threshold=1,
        ),
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name, labels={"tierscale.io/local-run": "true", "app.kubernetes.io/name": "exporter"}
        ),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=5),
    )


def _ready(kube, namespace: str, name: str) -> bool:
    pod = kube.core.read_namespaced_pod(name, namespace)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _pid(cluster, namespace: str, name: str) -> int | None:
    pid_file = cluster.config.pods_dir / namespace / name / "exporter.pid"
    try:
        return int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _up_value(cluster, namespace: str, name: str):
    response = requests.get(
        f"{cluster.prometheus_url}/api/v1/query",
        params={"query": f'up{{namespace="{namespace}",pod="{name}"}}'},
        timeout=5,
    )
    result = response.json()["data"]["result"]
    return result[0] if result else None


@pytest.fixture
def exporter(cluster, kube, namespace):
    kube.core.create_namespaced_pod(namespace, _exporter_pod("exporter"))
    wait_until(lambda: _ready(kube, namespace, "exporter"), timeout_s=90, what="the exporter pod to be Ready")
    return "exporter"


def test_opted_in_pod_runs_as_a_local_process_on_a_loopback_port(cluster, kube, namespace, exporter):
    pod = kube.core.read_namespaced_pod(exporter, namespace)
    pid = _pid(cluster, namespace, exporter)
    assert pid is not None and _alive(pid)
    assert pod.spec.node_name.startswith("gpu-node-")
    assert pod.status.phase == "Running"

    address = pod.metadata.annotations["tierscale.io/local-address"]
    ports = json.loads(pod.metadata.annotations["tierscale.io/local-ports"])
    assert address == f"127.0.0.1:{ports['metrics']}"
    assert ports["metrics"] != 9100
    body = requests.get(f"http://{address}/metrics", timeout=5).text
    assert "tierscale_test_exporter_up 1.0" in body
    # The interpreter is the project's, and the argument 0.0.0.0 was narrowed to loopback.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].decode() == sys.executable
    assert b"0.0.0.0" not in cmdline


def test_prometheus_scrapes_the_pod_with_its_namespace_pod_and_labels(cluster, namespace, exporter):
    sample = wait_until(
        lambda: (s := _up_value(cluster, namespace, exporter)) and s["value"][1] == "1" and s,
        timeout_s=60, what="Prometheus to report up == 1 for the exporter pod",
    )

    assert sample["metric"]["pod"] == exporter
    assert sample["metric"]["namespace"] == namespace
    assert sample["metric"]["app_kubernetes_io_name"] == "exporter"
    assert sample["metric"]["job"] == "local-pods"


def test_killing_the_process_makes_the_pod_not_ready_then_it_restarts(cluster, kube, namespace, exporter):
    pid = _pid(cluster, namespace, exporter)

    os.kill(pid, signal.SIGKILL)

    wait_until(lambda: not _ready(kube, namespace, exporter), timeout_s=30, what="the pod to become not Ready")
    pod = kube.core.read_namespaced_pod(exporter, namespace)
    status = pod.status.container_statuses[0]
    assert status.ready is False
    assert status.last_state.terminated is None or status.last_state.terminated.exit_code != 0
    terminated = status.state.terminated or status.last_state.terminated
    waiting = status.state.waiting
    assert (terminated is not None and terminated.exit_code == -9) or (
        waiting is not None and waiting.reason == "CrashLoopBackOff"
    )

    # Restart policy Always: the stand-in starts it again after the kubelet's back-off.
    wait_until(lambda: _ready(kube, namespace, exporter), timeout_s=60, what="the restarted pod to be Ready")
    restarted = kube.core.read_namespaced_pod(exporter, namespace).status.container_statuses[0]
    assert restarted.restart_count == 1
    assert restarted.last_state.terminated.exit_code == -9
    new_pid = _pid(cluster, namespace, exporter)
    assert new_pid != pid
    assert _alive(new_pid)


def test_deleting_the_pod_kills_the_process_and_removes_the_target(cluster, kube, namespace, exporter):
    pid = _pid(cluster, namespace, exporter)
    target = cluster.config.targets_dir / f"pod-{namespace}-{exporter}.json"
    assert target.exists()

    kube.core.delete_namespaced_pod(exporter, namespace)

    wait_until(lambda: not _alive(pid), timeout_s=30, what=f"process {pid} to exit")
    names = lambda: [p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items]
    wait_until(lambda: exporter not in names(), timeout_s=30, what="the pod object to be deleted")
    assert not target.exists()


def test_pod_without_a_command_fails_with_a_message_naming_the_container(cluster, kube, namespace):
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="no-command", labels={"tierscale.io/local-run": "true"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="server", image="example/server:1")]),
    )
    kube.core.create_namespaced_pod(namespace, pod)

    failed = wait_until(
        lambda: (p := kube.core.read_namespaced_pod("no-command", namespace)).status.phase == "Failed" and p,
        timeout_s=60, what="the pod to fail",
    )
    assert failed.status.reason == "LocalRunFailed"
    assert "container 'server' has no command" in failed.status.message
    events = kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=no-command,reason=LocalRunFailed"
    ).items
    assert len(events) == 1
