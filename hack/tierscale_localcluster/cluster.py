"""Starts and stops the local cluster: etcd, the control plane, kwok, the kubelet stand-in, Prometheus.

``up()`` is safe to repeat: a component whose pid file names a live process is left alone, so a
second ``make cluster-up`` only prints the kubeconfig. ``down()`` stops every process the cluster
started (the pod processes of the kubelet stand-in included) and removes the cluster's data, so the
next ``up()`` starts from an empty etcd. Certificates and keys are kept.

Every process runs in a session of its own and is recorded in ``<state>/run/<name>.pid``; its output
goes to ``<state>/logs/<name>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import pki
from .config import (
    GPU_RESOURCE,
    LOCAL_RUN_LABEL,
    REPO_ROOT,
    SIMULATED_NODE_ANNOTATION,
    ClusterConfig,
)

log = logging.getLogger("tierscale.localcluster")

# Stop order: the reverse of the start order.
COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "podrunner",
    "prometheus",
]
START_TIMEOUT_S = 120
STOP_GRACE_S = 10


class ClusterError(RuntimeError):
    """A component failed to start or to become healthy; the message names it and its log."""


@dataclass(frozen=True)
class Tools:
    """Directories of the binaries built by hack/build-tools.sh."""

    kubernetes: Path
    etcd: Path
    kwok: Path
    helm: Path

    @property
    def kubectl(self) -> Path:
        return self.kubernetes / "kubectl"

    @classmethod
    def build(cls) -> "Tools":
        """Runs hack/build-tools.sh (which builds nothing when the cache is warm)."""
        out = subprocess.run(
            [str(REPO_ROOT / "hack" / "build-tools.sh"), "--bindir"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        dirs = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        return cls(**{name: Path(path) for name, path in dirs.items()})


def up(config: ClusterConfig | None = None, tools: Tools | None = None) -> Path:
    """Starts whatever part of the cluster is not running; returns the kubeconfig path."""
    config = config or ClusterConfig()
    tools = tools or Tools.build()
    for directory in (config.run_dir, config.log_dir, config.pods_dir, config.targets_dir):
        directory.mkdir(parents=True, exist_ok=True)

    pki.ensure_pki(config.pki_dir)
    _write_kubeconfig(config)

    _ensure(config, "etcd", _etcd_command(config, tools), lambda: _etcd_healthy(config))
    _ensure(
        config,
        "kube-apiserver",
        _apiserver_command(config, tools),
        lambda: _https_ok(config, config.apiserver_port, "/readyz"),
    )
    _ensure(
        config,
        "kube-controller-manager",
        _controller_manager_command(config, tools),
        lambda: _https_ok(config, config.controller_manager_port, "/healthz"),
    )
    _ensure(
        config,
        "kube-scheduler",
        _scheduler_command(config, tools),
        lambda: _https_ok(config, config.scheduler_port, "/healthz"),
    )
    _write_kwok_config(config)
    _ensure(
        config,
        "kwok",
        _kwok_command(config, tools),
        lambda: _http_ok(f"http://127.0.0.1:{config.kwok_port}/healthz"),
    )
    _apply_nodes(config, tools)
    _ensure(
        config,
        "podrunner",
        [sys.executable, "-m", "tierscale_localcluster.podrunner", "--state-dir", str(config.state_dir)],
        lambda: (config.run_dir / "podrunner.ready").exists(),
    )
    _write_prometheus_config(config)
    _ensure(
        config,
        "prometheus",
        _prometheus_command(config),
        lambda: _http_ok(f"{config.prometheus_url}/-/ready"),
    )
    _wait_for_nodes_ready(config, tools)
    return config.kubeconfig


def down(config: ClusterConfig | None = None) -> list[str]:
    """Stops every process of the cluster; returns the names of those that were running."""
    config = config or ClusterConfig()
    stopped = []
    # The kubelet stand-in stops its pod processes itself on SIGTERM; the pod pid files are the
    # safety net for a stand-in that was killed.
    for name in reversed(COMPONENTS):
        if _stop_pid_file(config.run_dir / f"{name}.pid"):
            stopped.append(name)
    for pid_file in sorted(config.pods_dir.glob("**/*.pid")):
        if _stop_pid_file(pid_file):
            stopped.append(f"pod process {pid_file.relative_to(config.pods_dir)}")
    for path in (config.etcd_data_dir, config.pods_dir, config.targets_dir, config.prometheus_dir / "data"):
        shutil.rmtree(path, ignore_errors=True)
    (config.run_dir / "podrunner.ready").unlink(missing_ok=True)
    return stopped


def running_components(config: ClusterConfig) -> list[str]:
    """Names of the components whose recorded process is alive."""
    return [name for name in COMPONENTS if _live_pid(config.run_dir / f"{name}.pid")]


# --- process handling -------------------------------------------------------------------------


def _ensure(config: ClusterConfig, name: str, command: list[str], healthy) -> None:
    pid_file = config.run_dir / f"{name}.pid"
    if _live_pid(pid_file) is None:
        log_path = config.log_dir / f"{name}.log"
        log.info("starting %s (log: %s)", name, log_path)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=config.state_dir,
            )
        pid_file.write_text(str(process.pid))
    else:
        log.debug("%s is already running", name)

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _live_pid(pid_file) is None:
            raise ClusterError(f"{name} exited during start; see {config.log_dir / (name + '.log')}")
        if healthy():
            return
        time.sleep(0.25)
    raise ClusterError(
        f"{name} did not become healthy within {START_TIMEOUT_S} s; see {config.log_dir / (name + '.log')}"
    )


def _live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    # A zombie or a recycled pid is not ours: the process must be a session leader we started.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    state, session_id = fields[0], int(fields[3])
    if state == "Z" or session_id != pid:
        return None
    return pid


def _stop_pid_file(pid_file: Path) -> bool:
    pid = _live_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    _kill_session(pid)
    return True


def _kill_session(pid: int) -> None:
    """SIGTERM to the process group, SIGKILL after STOP_GRACE_S."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# --- health checks ----------------------------------------------------------------------------


def _ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.pki_dir / "ca.crt"))
    context.load_cert_chain(config.pki_dir / "admin.crt", config.pki_dir / "admin.key")
    return context


def _https_ok(config: ClusterConfig, port: int, path: str) -> bool:
    # The controller manager and scheduler serve with self-signed certificates of their own.
    context = _ssl_context(config)
    if port != config.apiserver_port:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=context, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _etcd_healthy(config: ClusterConfig) -> bool:
    return _http_ok(f"http://127.0.0.1:{config.etcd_client_port}/health")


# --- component commands -----------------------------------------------------------------------


def _etcd_command(config: ClusterConfig, tools: Tools) -> list[str]:
    client = f"http://127.0.0.1:{config.etcd_client_port}"
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    return [
        str(tools.etcd / "etcd"),
        "--name=tierscale-local",
        f"--data-dir={config.etcd_data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=tierscale-local={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",  # test data only: fsync makes the API server slow on shared disks
        "--log-level=warn",
    ]


def _apiserver_command(config: ClusterConfig, tools: Tools) -> list[str]:
    p = config.pki_dir
    return [
        str(tools.kubernetes / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{config.etcd_client_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={config.apiserver_port}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        # No kube-proxy runs here, so nothing routes to Service addresses; keep the default
        # 'kubernetes' Service pointing at loopback.
        "--endpoint-reconciler-type=none",
        "--v=1",
    ]


def _controller_manager_command(config: ClusterConfig, tools: Tools) -> list[str]:
    p = config.pki_dir
    return [
        str(tools.kubernetes / "kube-controller-manager"),
        f"--kubeconfig={config.kubeconfig}",
        f"--authentication-kubeconfig={config.kubeconfig}",
        f"--authorization-kubeconfig={config.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={config.controller_manager_port}",
        "--leader-elect=false",
        f"--root-ca-file={p / 'ca.crt'}",
        f"--service-account-private-key-file={p / 'sa.key'}",
        "--use-service-account-credentials=false",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
        "--allocate-node-cidrs=false",
        "--v=1",
    ]


def _scheduler_command(config: ClusterConfig, tools: Tools) -> list[str]:
    return [
        str(tools.kubernetes / "kube-scheduler"),
        f"--kubeconfig={config.kubeconfig}",
        f"--authentication-kubeconfig={config.kubeconfig}",
        f"--authorization-kubeconfig={config.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={config.scheduler_port}",
        "--leader-elect=false",
        "--v=1",
    ]


def _kwok_command(config: ClusterConfig, tools: Tools) -> list[str]:
    return [
        str(tools.kwok / "kwok"),
        f"--kubeconfig={config.kubeconfig}",
        f"--config={config.state_dir / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={SIMULATED_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{config.kwok_port}",
        # Node addresses on loopback, so nothing is ever aimed at another host; pods kwok runs
        # get addresses from an unrouted range that nothing here connects to.
        "--node-ip=127.0.0.1",
        "--cidr=10.244.0.0/16",
    ]


def _prometheus_command(config: ClusterConfig) -> list[str]:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    return [
        prometheus,
        f"--config.file={config.prometheus_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={config.prometheus_dir / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{config.prometheus_port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


# --- generated files --------------------------------------------------------------------------


def _kubeconfig_document(config: ClusterConfig, user_name: str, user: dict) -> dict:
    """A kubeconfig for the local API server with one user (client certificate or token)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tierscale-local",
                "cluster": {
                    "server": config.apiserver_url,
                    "certificate-authority": str(config.pki_dir / "ca.crt"),
                },
            }
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [
            {"name": "tierscale-local", "context": {"cluster": "tierscale-local", "user": user_name}}
        ],
        "current-context": "tierscale-local",
    }


def _write_kubeconfig(config: ClusterConfig) -> None:
    admin = {
        "client-certificate": str(config.pki_dir / "admin.crt"),
        "client-key": str(config.pki_dir / "admin.key"),
    }
    document = _kubeconfig_document(config, "admin", admin)
    config.kubeconfig.write_text(yaml.safe_dump(document, sort_keys=False))


def _write_kwok_config(config: ClusterConfig) -> None:
    """kwok's stages: nodes kept Ready, and pods *not* opted in to local running made Running.

    Pods labelled ``tierscale.io/local-run=true`` are left to the kubelet stand-in, which starts
    their processes and reports their real state.
    """
    stages_dir = Path(__file__).with_name("kwok-stages.yaml")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "kwok.yaml").write_text(stages_dir.read_text())


def node_manifest(
    name: str, gpus: int, labels: dict[str, str] | None = None, taints: list[dict] | None = None
) -> dict:
    """A simulated node kwok keeps Ready, with ``gpus`` of nvidia.com/gpu capacity."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {SIMULATED_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints or []},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def add_simulated_node(
    config: ClusterConfig,
    tools: Tools,
    name: str,
    gpus: int,
    labels: dict[str, str] | None = None,
    taints: list[dict] | None = None,
) -> None:
    """Creates (or updates) one simulated GPU node and waits until kwok reports it Ready."""
    kubectl(config, tools, "apply", "-f", "-", input=json.dumps(node_manifest(name, gpus, labels, taints)))
    kubectl(config, tools, "wait", "--for=condition=Ready", f"node/{name}", f"--timeout={START_TIMEOUT_S}s")


def _apply_nodes(config: ClusterConfig, tools: Tools) -> None:
    nodes = [node_manifest(f"gpu-node-{i}", config.gpus_per_node) for i in range(config.gpu_nodes)]
    if not nodes:
        return
    document = {"apiVersion": "v1", "kind": "List", "items": nodes}
    kubectl(config, tools, "apply", "-f", "-", input=json.dumps(document))


def _wait_for_nodes_ready(config: ClusterConfig, tools: Tools) -> None:
    if config.gpu_nodes == 0:
        return
    kubectl(
        config, tools, "wait", "--for=condition=Ready", "node", "-l", "type=kwok",
        f"--timeout={START_TIMEOUT_S}s",
    )


def _write_prometheus_config(config: ClusterConfig) -> None:
    interval = f"{config.scrape_interval_s:g}s"
    prometheus_config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                # Pod processes run by the kubelet stand-in, one file per pod.
                "job_name": "local-pods",
                "file_sd_configs": [
                    {"files": [str(config.targets_dir / "pod-*.json")], "refresh_interval": "1s"}
                ],
            },
            {
                # Anything else the project exposes (the operator registers itself here).
                "job_name": "tierscale",
                "file_sd_configs": [
                    {"files": [str(config.targets_dir / "extra-*.json")], "refresh_interval": "1s"}
                ],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{config.prometheus_port}"]}],
            },
        ],
    }
    config.prometheus_dir.mkdir(parents=True, exist_ok=True)
    (config.prometheus_dir / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config, sort_keys=False)
    )


def service_account_kubeconfig(
    config: ClusterConfig, tools: Tools, namespace: str, service_account: str, path: Path
) -> Path:
    """Writes a kubeconfig that authenticates as a ServiceAccount (a 24 h token), so a process
    run outside the cluster has exactly that account's RBAC, as it would in a pod."""
    token = kubectl(
        config, tools, "create", "token", service_account, "-n", namespace, "--duration=24h"
    ).stdout.strip()
    kubeconfig = _kubeconfig_document(config, service_account, {"token": token})
    path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    path.chmod(0o600)
    return path


def kubectl(
    config: ClusterConfig, tools: Tools, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs the built kubectl against the local cluster; with ``check``, raises with its stderr."""
    result = subprocess.run(
        [str(tools.kubectl), f"--kubeconfig={config.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 10,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


__all__ = [
    "ClusterError",
    "LOCAL_RUN_LABEL",
    "Tools",
    "add_simulated_node",
    "down",
    "kubectl",
    "node_manifest",
    "running_components",
    "service_account_kubeconfig",
    "up",
]
