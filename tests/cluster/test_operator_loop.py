"""The control step on the real cluster and real Prometheus, driven with a fake clock.

The pods run the stub server (real process, real metrics, generated traffic); faults a real
Prometheus cannot produce on demand (HTTP 503) come from a small HTTP server on loopback.
"""

from __future__ import annotations

import http.server
import threading

import pytest
from kubernetes import client, config as kube_config

from operator_fixtures import (
    FakeClock,
    create_recommender,
    deployment_replicas,
    install_crd,
    read_recommender,
    stub_spec,
    wait_ready_pods,
)
from support import wait_until
from tierscale_operator import builders, workloads
from tierscale_operator.controller import Controller
from tierscale_operator.persistence import Rollout, StateStore
from tierscale_operator.reconcile import reconcile_children
from tierscale_operator.spec import parse_spec

NAME = "rec"


@pytest.fixture(scope="module", autouse=True)
def crd(cluster):
    install_crd(cluster)


@pytest.fixture
def api_client(cluster):
    return kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))


def _controller(api_client, clock, identity="operator-a", **kwargs) -> Controller:
    return Controller(api_client, identity, clock=clock, **kwargs)


def _setup(kube, namespace, spec, tier_replicas=None, state_controller=None):
    """Creates the resource and its children, optionally with stored replicas per tier."""
    body = create_recommender(kube, namespace, NAME, spec)
    parsed = parse_spec(body["spec"])
    replicas = tier_replicas or {parsed.initial_tier: parsed.min_replicas}
    if tier_replicas is not None:
        store = StateStore(kube.core, namespace, NAME, body["metadata"]["uid"])
        stored = store.initial(parsed.policy, parsed.initial_tier, None)
        stored.controller.tier_replicas = {t.name: replicas.get(t.name, 0) for t in parsed.tiers}
        store.save(stored)
    reconcile_children(kube.apps, kube.core, namespace, NAME, body["metadata"]["uid"], parsed, replicas)
    return body


def _step(kube, controller, namespace):
    body = read_recommender(kube, namespace, NAME)
    report = controller.tick(body, parse_spec(body["spec"]))
    if report is not None:
        kube.custom.patch_namespaced_custom_object_status(
            "tierscale.io", "v1alpha1", namespace, "recommenderdeployments", NAME, {"status": report.status}
        )
    return report


def _condition(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


class _Status503(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"Service Unavailable")

    def log_message(self, *_):
        pass


@pytest.fixture
def prometheus_503():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status503)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("fault", ["refused", "http-503", "empty-result"])
def test_metrics_fault_holds_six_replicas_and_reports(kube, namespace, cluster, api_client, prometheus_503, fault):
    url = {"refused": "http://127.0.0.1:9", "http-503": prometheus_503, "empty-result": cluster.prometheus_url}[fault]
    spec = stub_spec(url, stub_args=["--rps", "20"])
    if fault == "empty-result":
        spec["model"]["name"] = "no-such-model"  # the selector matches no series
    _setup(kube, namespace, spec, tier_replicas={"small": 6})
    clock = FakeClock()
    controller = _controller(api_client, clock)

    first = _step(kube, controller, namespace)
    clock.advance(5)
    second = _step(kube, controller, namespace)

    for report in (first, second):
        assert report.decision.action.label == "hold"
        assert report.decision.credited is None
        assert report.acted is False
    assert deployment_replicas(kube, namespace, f"{NAME}-small") == 6
    status = read_recommender(kube, namespace, NAME)["status"]
    assert status["replicas"] == 6
    assert status["tier"] == "small"
    metrics = _condition(status, "MetricsAvailable")
    assert metrics["status"] == "False"
    if fault == "empty-result":
        assert metrics["reason"] == "NoSeries"
        assert "returned no series" in metrics["message"]
    else:
        assert metrics["reason"] == "PrometheusUnavailable"
        assert [e.reason for e in second.events] == ["MetricsUnavailable"]
        expected = "503" if fault == "http-503" else "unreachable"
        assert expected in metrics["message"]
    assert "p95Ms" not in status["observed"]


def test_idle_nan_p95_credits_nothing_and_allows_scale_down(kube, namespace, cluster, api_client):
    _setup(kube, namespace, stub_spec(cluster.prometheus_url, stub_args=["--rps", "0"]), tier_replicas={"small": 3})
    wait_ready_pods(kube, namespace, f"{builders.TIER_LABEL}=small", 3)
    target = cluster.config.targets_dir
    wait_until(lambda: len(list(target.glob(f"pod-{namespace}-*.json"))) == 3, timeout_s=30,
               what="3 scrape targets")
    clock = FakeClock()
    controller = _controller(api_client, clock)

    def idle_sample():
        clock.advance(5)
        report = _step(kube, controller, namespace)
        return report if report.sample.requests_per_second == 0.0 else None

    report = wait_until(idle_sample, timeout_s=60, interval_s=1, what="Prometheus to report a rate of 0")

    assert report.sample.latency_p95_ms is None  # histogram_quantile over no requests is NaN
    assert report.status["observed"]["ctr"] is None  # 0 clicks / 0 impressions
    assert report.decision.credited is None
    assert report.decision.interval_reward is None
    assert "scale-down" not in report.decision.masked
    assert 1 <= report.decision.target_replicas <= 8


def test_tier_switch_never_ready_rolls_back_without_credit(kube, namespace, cluster, api_client):
    spec = stub_spec(cluster.prometheus_url, stub_args=["--rps", "10", "--never-ready-tiers", "medium"])
    spec["policy"]["rolloutTimeout"] = "20s"
    body = _setup(kube, namespace, spec, tier_replicas={"small": 2})
    wait_ready_pods(kube, namespace, f"{builders.TIER_LABEL}=small", 2)
    parsed = parse_spec(body["spec"])
    # The switch as the control step starts it after a tier-up decision.
    store = StateStore(kube.core, namespace, NAME, body["metadata"]["uid"])
    stored = store.load(parsed.policy, "small", None)
    clock = FakeClock()
    stored.controller.rollout = Rollout(from_tier="small", to_tier="medium", replicas=2, started_at_s=clock())
    stored.controller.tier_replicas["medium"] = 2
    store.save(stored)
    workloads.set_replicas(kube.apps, namespace, f"{NAME}-medium", 2)
    controller = _controller(api_client, clock)

    during = _step(kube, controller, namespace)
    clock.advance(25)
    after = _step(kube, controller, namespace)

    assert during.decision.action.label == "hold"
    assert during.decision.credited is None
    assert during.status["rollout"]["toTier"] == "medium"
    assert [e.reason for e in after.events][:1] == ["TierSwitchRolledBack"]
    assert "0 of 2 new replicas ready after 20 s" in after.events[0].message
    assert deployment_replicas(kube, namespace, f"{NAME}-medium") == 0
    assert deployment_replicas(kube, namespace, f"{NAME}-small") == 2
    assert after.status["tier"] == "small"
    assert after.status["rollout"] is None


def _breach_until_scaled(kube, controller, clock, namespace, max_steps=6):
    for _ in range(max_steps):
        clock.advance(5)
        report = _step(kube, controller, namespace)
        if report.decision.action.label == "scale-up":
            return report
    raise AssertionError("the SLO-breach guard never scaled up")


def test_conflicting_edit_during_scale_up_is_retried_and_applied_once(kube, namespace, cluster, api_client):
    # p95 400 ms against an SLO of 100 ms: the sustained-breach guard forces a scale-up.
    _setup(kube, namespace, stub_spec(cluster.prometheus_url, stub_args=["--rps", "20", "--latency-ms", "400"]))
    wait_ready_pods(kube, namespace, f"{builders.TIER_LABEL}=small", 1)
    edits = []

    def user_edit():
        if not edits:  # once: the first write attempt meets a newer resourceVersion
            kube.apps.patch_namespaced_deployment(
                f"{NAME}-small", namespace, {"metadata": {"annotations": {"example.com/edited-by": "user"}}}
            )
            edits.append(1)

    clock = FakeClock()
    controller = _controller(api_client, clock, before_replica_write=user_edit)
    wait_until(lambda: (clock.advance(5), _step(kube, controller, namespace))[1].sample.latency_p95_ms,
               timeout_s=60, interval_s=1, what="a p95 from Prometheus")

    report = _breach_until_scaled(kube, controller, clock, namespace)

    assert edits == [1]
    assert report.acted is True
    assert deployment_replicas(kube, namespace, f"{NAME}-small") == 2
    assert report.status["lastDecision"]["applied"] is True
    assert [e.reason for e in report.events] == ["ScaledUp"]
    deployment = kube.apps.read_namespaced_deployment(f"{NAME}-small", namespace)
    assert deployment.metadata.annotations["example.com/edited-by"] == "user"


def test_restart_reloads_state_and_does_not_act_in_first_window(kube, namespace, cluster, api_client):
    _setup(kube, namespace, stub_spec(cluster.prometheus_url, stub_args=["--rps", "0"]), tier_replicas={"small": 5})
    clock = FakeClock()
    before = _controller(api_client, clock)
    _step(kube, before, namespace)
    body = read_recommender(kube, namespace, NAME)
    stored_before = StateStore(kube.core, namespace, NAME, body["metadata"]["uid"]).load(
        parse_spec(body["spec"]).policy, "small", None)

    clock.advance(5)
    restarted = _controller(api_client, clock)  # same identity: the operator's pod restarted
    report = _step(kube, restarted, namespace)

    assert report is not None
    assert report.acted is False
    assert deployment_replicas(kube, namespace, f"{NAME}-small") == 5
    stored_after = StateStore(kube.core, namespace, NAME, body["metadata"]["uid"]).load(
        parse_spec(body["spec"]).policy, "small", None)
    assert stored_after.policy.steps == stored_before.policy.steps + 1
    assert stored_after.controller.tier_replicas["small"] == 5


def test_second_operator_replica_does_not_run_the_loop(kube, namespace, cluster, api_client):
    _setup(kube, namespace, stub_spec(cluster.prometheus_url, stub_args=["--rps", "0"]))
    clock = FakeClock()
    first = _controller(api_client, clock, identity="operator-a")
    second = _controller(api_client, clock, identity="operator-b")

    assert _step(kube, first, namespace) is not None
    clock.advance(5)
    assert _step(kube, second, namespace) is None
    assert _step(kube, first, namespace) is not None
    holder = client.CoordinationV1Api(api_client).read_namespaced_lease(f"{NAME}-tierscale-loop", namespace)
    assert holder.spec.holder_identity == "operator-a"


def test_pending_gpus_stop_scale_up_and_set_condition(kube, namespace, cluster, api_client):
    from tierscale_localcluster.cluster import add_simulated_node

    node = f"gpu2-{namespace}"[:63]
    add_simulated_node(cluster.config, cluster.tools, node, gpus=2, labels={"tierscale.io/test-node": node},
                       taints=[{"key": "tierscale.io/test-node", "value": node, "effect": "NoSchedule"}])
    try:
        spec = stub_spec(cluster.prometheus_url, stub_args=["--rps", "20", "--latency-ms", "400"])
        spec["replicas"] = {"min": 2, "max": 8}  # a scale-down may drop the Pending pod, no more
        spec["podTemplate"]["nodeSelector"] = {"tierscale.io/test-node": node}
        spec["podTemplate"]["tolerations"] = [
            {"key": "tierscale.io/test-node", "operator": "Equal", "value": node, "effect": "NoSchedule"}]
        _setup(kube, namespace, spec, tier_replicas={"small": 3})
        wait_ready_pods(kube, namespace, f"{builders.TIER_LABEL}=small", 2)
        wait_until(
            lambda: workloads.observe(kube.apps, kube.core, namespace, NAME, parse_spec(spec)).pending_for_gpus == 1,
            timeout_s=60, what="one pod Pending for nvidia.com/gpu",
        )
        clock = FakeClock()
        controller = _controller(api_client, clock)

        reports = []
        for _ in range(6):
            clock.advance(5)
            reports.append(_step(kube, controller, namespace))

        # The stub breaches the SLO every interval, so the guard would scale up if it could.
        # The policy may drop the Pending replica (a scale-down to 2), and then the 2 bound GPUs
        # stay the ceiling, so the replica is never added back.
        assert all(r.decision.action.label != "scale-up" for r in reports)
        assert all("scale-up" in r.decision.masked for r in reports)
        applied = [r for r in reports if r.acted]
        assert all(r.decision.action.label == "scale-down" for r in applied)
        expected = applied[-1].decision.target_replicas if applied else 3
        assert deployment_replicas(kube, namespace, f"{NAME}-small") == expected
        status = reports[-1].status
        gpus = _condition(status, "GPUsInsufficient")
        assert gpus["status"] == "True"
        assert status["gpus"] == 2
        if applied:
            assert gpus["reason"] == "RecentlyPendingForGPUs"
            assert "scale-up beyond 2 GPUs is blocked until" in gpus["message"]
        else:
            assert "1 pods cannot be scheduled: insufficient nvidia.com/gpu" in gpus["message"]
            assert status["pendingReplicas"] == 1
    finally:
        kube.core.delete_node(node)
