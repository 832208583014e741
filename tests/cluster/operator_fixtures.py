"""Helpers for the operator tests on the local cluster: the CRD, resources, the operator process, a fake clock."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client

from support import wait_until
from tierscale_localcluster import cluster as local
from tierscale_operator.spec import GROUP, PLURAL, VERSION

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crd" / "recommenderdeployments.tierscale.io.yaml"
STUB = Path(__file__).with_name("stub_model_server.py")


class Operator:
    """The operator as a separate process, as it runs in its pod."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path):
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAME": "tierscale-operator-e2e"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tierscale_operator", "--namespace", self.namespace,
                 "--metrics-port", "0", "--health-port", "0"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
            )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_operator(cluster, namespace: str, tmp_path: Path) -> Operator:
    """Install the CRD and RBAC and start the operator with its ServiceAccount's token."""
    install_crd(cluster)
    for path in ("namespace.yaml", "rbac.yaml"):
        cluster.kubectl("apply", "-f", str(REPO / "manifests" / path))
    kubeconfig = local.service_account_kubeconfig(
        cluster.config, cluster.tools, "tierscale-system", "tierscale-operator", tmp_path / "operator.kubeconfig")
    running = Operator(kubeconfig, namespace, tmp_path / "operator.log")
    running.start()
    return running


def install_crd(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/recommenderdeployments.tierscale.io",
                    "--timeout=60s")


def stub_spec(prometheus_url: str, *, stub_args=(), **overrides) -> dict:
    """A RecommenderDeployment spec whose pods run the stub server locally."""
    spec = {
        "model": {
            "name": "stub-bert",
            "image": "tierscale/stub:test",
            "command": ["python", str(STUB)],
            "args": list(stub_args),
        },
        "tiers": [{"name": "small", "gpusPerReplica": 1}, {"name": "medium", "gpusPerReplica": 1}],
        "replicas": {"min": 1, "max": 8},
        "gpuBudget": 8,
        "slo": {"latencyP95Ms": 100},
        "prometheus": {"url": prometheus_url, "window": "10s", "timeoutSeconds": 2},
        "policy": {"interval": "5s", "cooldown": "5s", "epsilon": 0.0, "epsilonMin": 0.0, "rolloutTimeout": "60s"},
        "podTemplate": {"labels": {"tierscale.io/local-run": "true"}},
    }
    for key, value in overrides.items():
        spec[key] = value
    return copy.deepcopy(spec)


def create_recommender(kube, namespace: str, name: str, spec: dict) -> dict:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecommenderDeployment",
            "metadata": {"name": name}, "spec": spec}
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return read_recommender(kube, namespace, name)


def read_recommender(kube, namespace: str, name: str) -> dict:
    return kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def deployment_replicas(kube, namespace: str, name: str) -> int:
    return kube.apps.read_namespaced_deployment(name, namespace).spec.replicas


def wait_ready_pods(kube, namespace: str, selector: str, count: int, timeout_s: float = 90) -> None:
    def ready():
        pods = kube.core.list_namespaced_pod(namespace, label_selector=selector).items
        return sum(
            1 for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ) == count
    wait_until(ready, timeout_s=timeout_s, what=f"{count} ready pods for {selector}")


def events(kube, namespace: str, name: str, reason: str) -> list[client.CoreV1Event]:
    return kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason={reason}"
    ).items


class FakeClock:
    """Wall-clock time that only moves when the test says so."""

    def __init__(self):
        self.now_s = time.time()

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
