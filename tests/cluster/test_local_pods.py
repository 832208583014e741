"""Opted-in pods on simulated nodes run as real local processes that Prometheus scrapes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import requests
from kubernetes import client

from support import wait_until
from tierscale_localcluster.podrunner import Container, CpuCgroups, LocalPod, PodRunner

EXPORTER = Path(__file__).with_name("exporter.py")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _exporter_pod(name: str, cpu_limit: str | None = None) -> client.V1Pod:
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
        resources=client.V1ResourceRequirements(limits={"cpu": cpu_limit}) if cpu_limit else None,
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


def _cgroup_v2_has_cpu() -> bool:
    try:
        return "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _cpu_cgroups_writable() -> bool:
    if _cgroup_v2_has_cpu():
        return os.access(CGROUP_ROOT, os.W_OK)
    return (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").is_file() and os.access(CGROUP_ROOT / "cpu", os.W_OK)


def _cpu_cgroup(pid: int) -> Path:
    """The folder of the cgroup that contains process ``pid`` in the cpu controller's hierarchy."""
    entries = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    if _cgroup_v2_has_cpu():
        path = next(path for hierarchy_id, _, path in entries if hierarchy_id == "0")
        return CGROUP_ROOT / path.lstrip("/")
    path = next(path for _, controllers, path in entries if "cpu" in controllers.split(","))
    return CGROUP_ROOT / "cpu" / path.lstrip("/")


def _cfs_quota_and_period(cgroup: Path) -> tuple[int, int]:
    if _cgroup_v2_has_cpu():
        quota, period = (cgroup / "cpu.max").read_text().split()
        return int(quota), int(period)
    return int((cgroup / "cpu.cfs_quota_us").read_text()), int((cgroup / "cpu.cfs_period_us").read_text())


def _events(kube, namespace: str, name: str, reason: str) -> list:
    selector = f"involvedObject.name={name},reason={reason}"
    return kube.core.list_namespaced_event(namespace, field_selector=selector).items


def _sleeper(tmp_path: Path, cgroups: CpuCgroups) -> Container:
    """A container with a 250m CPU limit whose process sleeps, started without a cluster."""
    return Container(
        name="server",
        image="example/server:1",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ),
        log_path=tmp_path / "logs" / "server.log",
        pid_path=tmp_path / "logs" / "server.pid",
        readiness=None,
        cpu_limit="250m",
        cpu_quota_us=25_000,
        cgroup_name="test_sleeper_server",
        cgroups=cgroups,
    )


needs_cpu_cgroups = pytest.mark.skipif(
    not _cpu_cgroups_writable(), reason="the cpu cgroup controller is missing or not writable here"
)


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


@pytest.fixture
def limited_exporter(cluster, kube, namespace):
    kube.core.create_namespaced_pod(namespace, _exporter_pod("limited", cpu_limit="250m"))
    wait_until(lambda: _ready(kube, namespace, "limited"), timeout_s=90, what="the limited pod to be Ready")
    return "limited"


@needs_cpu_cgroups
def test_cpu_limit_sets_cgroup_cfs_quota(cluster, kube, namespace, limited_exporter):
    pid = _pid(cluster, namespace, limited_exporter)
    cgroup = _cpu_cgroup(pid)

    assert cgroup.name == f"{namespace}_limited_exporter"
    assert cgroup.parent.name == "tierscale-podrunner"
    assert _cfs_quota_and_period(cgroup) == (25_000, 100_000)
    # The process was released from the cgroup gate: it runs the container's command.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].decode() == sys.executable
    assert _events(kube, namespace, limited_exporter, "CPULimitNotEnforced") == []

    kube.core.delete_namespaced_pod(limited_exporter, namespace)

    wait_until(lambda: not _alive(pid), timeout_s=30, what=f"process {pid} to exit")
    wait_until(lambda: not cgroup.exists(), timeout_s=30, what=f"the cgroup {cgroup} to be removed")


@needs_cpu_cgroups
def test_restarted_container_rejoins_its_cgroup(cluster, kube, namespace, limited_exporter):
    pid = _pid(cluster, namespace, limited_exporter)
    cgroup = _cpu_cgroup(pid)

    os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: not _ready(kube, namespace, limited_exporter), timeout_s=30, what="the pod to become not Ready"
    )
    wait_until(
        lambda: _ready(kube, namespace, limited_exporter), timeout_s=60, what="the restarted pod to be Ready"
    )
    new_pid = _pid(cluster, namespace, limited_exporter)
    assert new_pid != pid
    assert _cpu_cgroup(new_pid) == cgroup
    assert _cfs_quota_and_period(cgroup) == (25_000, 100_000)


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        ("empty", "no cpu controller"),
        ("v2-without-cpu", "no cpu controller"),
        ("v1-folder-blocked", "failed to create the cgroup"),
    ],
)
def test_cpu_limit_fallback_reports_reason(tmp_path, layout, reason):
    root = tmp_path / "cgroup"
    root.mkdir()
    if layout == "v2-without-cpu":
        (root / "cgroup.controllers").write_text("memory pids\n")
    if layout == "v1-folder-blocked":
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
        (root / "cpu" / "tierscale-podrunner").write_text("a file where the cgroup folder belongs")
    container = _sleeper(tmp_path, CpuCgroups(root=root))

    container.start()
    try:
        assert container.alive()
        assert container.cgroup is None
        assert reason in container.cpu_limit_error
    finally:
        container.stop(grace_s=1)


def test_cpu_limit_on_cgroup_v2_writes_cpu_max(tmp_path):
    # A plain folder laid out like a cgroup v2 root: the files are written but nothing is enforced.
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("memory\n")
    (root / "tierscale-podrunner").mkdir()
    (root / "tierscale-podrunner" / "cgroup.subtree_control").write_text("")
    container = _sleeper(tmp_path, CpuCgroups(root=root))

    container.start()
    try:
        cgroup = root / "tierscale-podrunner" / "test_sleeper_server"
        assert container.cpu_limit_error is None
        assert container.cgroup == cgroup
        assert (root / "cgroup.subtree_control").read_text() == "+cpu"
        assert (root / "tierscale-podrunner" / "cgroup.subtree_control").read_text() == "+cpu"
        assert (cgroup / "cpu.max").read_text() == "25000 100000"
        assert (cgroup / "cgroup.procs").read_text() == str(container.process.pid)
        assert container.alive()
    finally:
        container.stop(grace_s=1)


def test_cpu_limit_fallback_posts_one_event(cluster, kube, namespace, tmp_path, caplog):
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="unlimited"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="server", image="example/server:1")]),
    )
    uid = kube.core.create_namespaced_pod(namespace, pod).metadata.uid
    runner = PodRunner(cluster.config, kube.core, cgroups=CpuCgroups(root=tmp_path / "no-cgroups"))
    container = _sleeper(tmp_path, runner.cgroups)
    local = LocalPod(
        namespace=namespace, name="unlimited", uid=uid, node="gpu-node-0", restart_policy="Always",
        containers=[container], target_path=None, annotations={},
    )

    with caplog.at_level(logging.WARNING, logger="tierscale.podrunner"):
        try:
            runner._start_container(local, container)
            assert container.alive()
            container.stop(grace_s=1)
            runner._start_container(local, container)  # a restart: no second Event
            assert container.alive()
        finally:
            container.stop(grace_s=1)

    events = _events(kube, namespace, "unlimited", "CPULimitNotEnforced")
    assert len(events) == 1
    assert events[0].type == "Warning"
    assert events[0].involved_object.uid == uid
    assert "container 'server' runs without its CPU limit 250m" in events[0].message
    assert "no cpu controller" in events[0].message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"pod {namespace}/unlimited" in warnings[0]
    assert "no cpu controller" in warnings[0]
