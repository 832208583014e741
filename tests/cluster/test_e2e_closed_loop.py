"""End to end: the operator process (kopf) runs the real model server on the local cluster.

A shortened closed loop: a load step makes the operator scale up within a bounded number of
intervals; stopping Prometheus makes it hold and set MetricsAvailable=False; restarting the
operator keeps the learned state. The operator runs with its ServiceAccount's token, so the RBAC
of manifests/rbac.yaml is exercised too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from operator_fixtures import read_recommender, start_operator
from support import wait_until
from tierscale_localcluster import cluster as local
from tierscale_operator.spec import GROUP, PLURAL, VERSION

NAME = "e2e"
INTERVAL_S = 5
pytestmark = pytest.mark.timeout(1500)


def _spec(prometheus_url: str) -> dict:
    return {
        "model": {"name": "movielens-bert", "image": "tierscale/model-server:test",
                  "args": ["--train-if-missing", "--max-batch-size", "8"]},
        "tiers": [{"name": "small", "gpusPerReplica": 1}],
        "replicas": {"min": 1, "max": 3},
        "gpuBudget": 3,
        # Below what 24 concurrent clients cause on this machine, above a single request's latency.
        "slo": {"latencyP95Ms": 12},
        "prometheus": {"url": prometheus_url, "window": "10s", "timeoutSeconds": 2},
        "policy": {"interval": f"{INTERVAL_S}s", "cooldown": "10s", "epsilon": 0.0, "epsilonMin": 0.0},
        "podTemplate": {"labels": {"tierscale.io/local-run": "true"}},
    }


@pytest.fixture
def operator(cluster, namespace, tmp_path):
    running = start_operator(cluster, namespace, tmp_path)
    yield running
    # Delete the resource while the operator runs, so kopf can remove its finalizer.
    cluster.kubectl("delete", "recdeploy", NAME, "-n", namespace, "--ignore-not-found", "--timeout=60s",
                    check=False)
    running.kill()
    print(running.log_path.read_text()[-4000:])


def _status(kube, namespace: str) -> dict:
    return read_recommender(kube, namespace, NAME).get("status") or {}


def _condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def _endpoints(kube, namespace: str) -> list[str]:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"tierscale.io/recommender={NAME}").items
    return [
        p.metadata.annotations["tierscale.io/local-address"] for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


async def _load(kube, namespace: str, seconds: float, concurrency: int) -> int:
    """A load step: ``concurrency`` closed-loop clients for ``seconds`` against the ready pods."""
    deadline = time.monotonic() + seconds
    sent = 0
    shared = {"endpoints": _endpoints(kube, namespace), "read_at": time.monotonic()}

    async def client_loop(index: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=10) as http:
            while time.monotonic() < deadline:
                if time.monotonic() - shared["read_at"] > 2:
                    shared.update(endpoints=_endpoints(kube, namespace), read_at=time.monotonic())
                targets = shared["endpoints"]
                try:
                    await http.post(f"http://{targets[index % len(targets)]}/predictions/movielens-bert",
                                    json={"user_id": str(1 + (sent % 900)), "k": 10})
                except httpx.TransportError:
                    # The pod went away (scale-down or restart): read the ready pods again.
                    shared["read_at"] = 0.0
                    await asyncio.sleep(0.2)
                    continue
                sent += 1

    await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    return sent


def test_load_step_scales_up_then_prometheus_outage_holds_and_restart_keeps_state(
        cluster, kube, namespace, operator):
    kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecommenderDeployment",
         "metadata": {"name": NAME}, "spec": _spec(cluster.prometheus_url)})
    wait_until(lambda: _endpoints(kube, namespace), timeout_s=1200, interval_s=2,
               what="the first model-server pod to be ready (trains the small tier on a fresh machine)")

    # Load step: the p95 rises above the 12 ms SLO and the sustained-breach guard scales up.
    sent = asyncio.run(_load(kube, namespace, seconds=12 * INTERVAL_S, concurrency=24))
    status = _status(kube, namespace)
    assert sent > 0
    assert status["replicas"] >= 2, json.dumps(status, indent=1)
    scaled = [e for e in kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={NAME},reason=ScaledUp").items]
    assert scaled and "replicas" in scaled[0].message

    # Prometheus down: hold, MetricsAvailable=False, and the replicas stay where they are.
    replicas = status["replicas"]
    pid = int((cluster.config.run_dir / "prometheus.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    try:
        held = wait_until(
            lambda: (s := _status(kube, namespace)) and _condition(s, "MetricsAvailable").get("status") == "False" and s,
            timeout_s=6 * INTERVAL_S, what="MetricsAvailable=False")
        assert _condition(held, "MetricsAvailable")["reason"] == "PrometheusUnavailable"
        assert held["lastDecision"]["action"] == "hold"
        assert held["replicas"] == replicas
        assert kube.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={NAME},reason=MetricsUnavailable").items
    finally:
        local.up(cluster.config, cluster.tools)  # starts Prometheus again

    # Restart: the learned state in the ConfigMap survives and keeps counting.
    before = _status(kube, namespace)
    operator.kill()
    operator.start()
    after = wait_until(
        lambda: (s := _status(kube, namespace)) and s["lastDecision"]["at"] != before["lastDecision"]["at"] and s,
        timeout_s=12 * INTERVAL_S, what="a step of the restarted operator")
    assert after["policy"]["updates"] >= before["policy"]["updates"]
    assert after["policy"]["stateRef"] == f"{NAME}-policy-state"
    assert after["replicas"] == before["replicas"]
