"""The operator's own Prometheus metrics, labelled by the resource's namespace and name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from tierscale_operator.controller import StepReport

LABELS = ["namespace", "name"]

REPLICAS = Gauge("tierscale_operator_replicas", "Desired replicas of the serving tier.", LABELS + ["tier"])
READY_REPLICAS = Gauge("tierscale_operator_ready_replicas", "Ready model-server replicas.", LABELS)
GPUS = Gauge("tierscale_operator_gpus", "GPUs requested by scheduled model-server pods.", LABELS)
LATENCY_P95 = Gauge("tierscale_operator_latency_p95_ms", "Observed p95 latency in milliseconds.", LABELS)
SLO_P95 = Gauge("tierscale_operator_slo_latency_p95_ms", "Target p95 latency in milliseconds.", LABELS)
REQUEST_RATE = Gauge("tierscale_operator_requests_per_second", "Observed request rate.", LABELS)
CTR = Gauge("tierscale_operator_ctr", "Click-through rate of the last interval, raw and adjusted.",
            LABELS + ["kind"])
REWARD = Gauge("tierscale_operator_interval_reward", "Reward credited for the last settled interval.", LABELS)
DECISIONS = Counter("tierscale_operator_decisions", "Decisions by action and source.",
                    LABELS + ["action", "source"])
ACTIONS_FAILED = Counter("tierscale_operator_actions_failed", "Actions that could not be applied.", LABELS)
METRICS_UNAVAILABLE = Counter("tierscale_operator_metrics_unavailable",
                              "Steps whose Prometheus queries failed.", LABELS)


def export(namespace: str, name: str, slo_ms: float, report: StepReport) -> None:
    labels = {"namespace": namespace, "name": name}
    status = report.status
    for tier, replicas in status["tierReplicas"].items():
        REPLICAS.labels(**labels, tier=tier).set(replicas)
    READY_REPLICAS.labels(**labels).set(status["readyReplicas"])
    GPUS.labels(**labels).set(status["gpus"])
    SLO_P95.labels(**labels).set(slo_ms)
    _set_optional(LATENCY_P95.labels(**labels), status["observed"]["p95Ms"])
    _set_optional(REQUEST_RATE.labels(**labels), status["observed"]["requestsPerSecond"])
    _set_optional(CTR.labels(**labels, kind="raw"), status["observed"]["ctr"])
    _set_optional(CTR.labels(**labels, kind="adjusted"), status["observed"]["ctrAdjusted"])
    _set_optional(REWARD.labels(**labels), status["lastDecision"]["reward"])
    if report.decision is not None:
        DECISIONS.labels(**labels, action=report.decision.action.label, source=report.decision.source).inc()
    if any(event.reason == "ActionFailed" for event in report.events):
        ACTIONS_FAILED.labels(**labels).inc()
    if report.sample is not None and report.sample.unreachable:
        METRICS_UNAVAILABLE.labels(**labels).inc()


def _set_optional(gauge, value: float | None) -> None:
    gauge.set(float("nan") if value is None else value)
