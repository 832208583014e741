"""One control step for one RecommenderDeployment: observe, adjust, learn, decide, act, report.

The kopf timer calls `Controller.tick` every few seconds; a step runs only when the resource's
``spec.policy.interval`` has passed since the last one (the time is kept in the state ConfigMap, so
it survives restarts) and only on the operator replica holding the resource's Lease. The first step
after the operator starts only observes: a restarted operator never scales down before it has seen
one full interval itself.

Every step ends in a `StepReport`: the status to write, the Events to post and the metrics to
export. Nothing in a step is credited to the policy when metrics are missing, NaN or stale, while
a tier switch is in progress, or when the replica write failed.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tierscale_operator import adjust, builders, offpolicy, workloads
from tierscale_operator.lease import LoopLease
from tierscale_operator.observe import MetricsSample, PrometheusReader
from tierscale_operator.persistence import ControllerState, Rollout, StateStore, StoredState
from tierscale_operator.policy import Decision, Observation, ObservationError, decide
from tierscale_operator.spec import RecommenderSpec

log = logging.getLogger("tierscale.controller")

# How long a GPU shortage is remembered after the last Pending pod: scale-up stays blocked at the
# GPU count that fitted, so a scale-down that removed the Pending pod is not undone at once.
GPU_CEILING_MIN_S = 300.0
GPU_CEILING_INTERVALS = 10


@dataclasses.dataclass
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclasses.dataclass
class StepReport:
    status: dict[str, Any]
    events: list[Event]
    decision: Decision | None = None
    sample: MetricsSample | None = None
    acted: bool = False


def _iso(at_s: float) -> str:
    return datetime.datetime.fromtimestamp(at_s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool, reason: str, message: str, generation: int, now_s: float) -> dict:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": _iso(now_s),
    }


def merge_conditions(old: list[dict], new: list[dict]) -> list[dict]:
    """Keeps a condition's lastTransitionTime while its status does not change."""
    previous = {c["type"]: c for c in old or []}
    merged = []
    for c in new:
        before = previous.get(c["type"])
        if before is not None and before.get("status") == c["status"]:
            c = {**c, "lastTransitionTime": before.get("lastTransitionTime", c["lastTransitionTime"])}
        merged.append(c)
    return merged


class Controller:
    """Runs control steps; one instance per operator process."""

    def __init__(
        self,
        api_client: client.ApiClient,
        identity: str,
        *,
        clock: Callable[[], float] = time.time,
        reader_factory: Callable[[RecommenderSpec], PrometheusReader] | None = None,
        before_replica_write: Callable[[], None] | None = None,
    ):
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.identity = identity
        self.clock = clock
        self.started_at_s = clock()
        self.reader_factory = reader_factory or (
            lambda spec: PrometheusReader(spec.prometheus_url, spec.prometheus_timeout_s)
        )
        self.before_replica_write = before_replica_write

    # --- the step -----------------------------------------------------------------------------

    def tick(self, body: dict, spec: RecommenderSpec, initial_table=None) -> StepReport | None:
        """Runs one step if it is due and this replica holds the Lease; None otherwise."""
        metadata = body["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        now_s = self.clock()

        lease = LoopLease(self.coordination, self.identity, duration_s=max(15, int(3 * spec.interval_s)))
        if not lease.acquire(namespace, name, builders.owner_reference(name, uid)):
            return None

        store = StateStore(self.core, namespace, name, uid)
        stored = store.load(spec.policy, spec.initial_tier, initial_table)
        last = stored.controller.last_tick_at_s
        if last is not None and now_s - last < spec.interval_s:
            log.debug("%s/%s: next step in %.1f s", namespace, name, spec.interval_s - (now_s - last))
            return None

        view = workloads.observe(self.apps, self.core, namespace, name, spec)
        sample = self.reader_factory(spec).read(self._labels(namespace, spec), spec.prometheus_window, now_s)
        events: list[Event] = []
        self._accumulate_swaps(stored.controller, sample)
        rollout_note = self._advance_rollout(namespace, name, spec, stored, view, now_s, events)
        view = workloads.observe(self.apps, self.core, namespace, name, spec) if rollout_note else view
        adjusted = self._adjust(namespace, name, spec, stored.controller, sample, now_s)

        first_step = now_s - self.started_at_s < spec.interval_s and last is not None
        gpus_free = self._gpu_ceiling(stored.controller, spec, view, now_s)
        tier = self._serving_tier(stored.controller, spec)
        replicas = stored.controller.tier_replicas.get(tier, 0)
        observation = Observation(
            at_s=now_s,
            tier=tier,
            replicas=replicas,
            ready_replicas=min(replicas, view.tiers[tier].ready) if tier in view.tiers else 0,
            gpus_allocated=view.gpus,
            requests_per_second=None if sample.unreachable else sample.requests_per_second,
            latency_p95_ms=sample.latency_p95_ms,
            ctr_adjusted=adjusted.ctr_adjusted,
            metrics_at_s=None if sample.unreachable or sample.requests_per_second is None else now_s,
            pending_replicas=view.pending_for_gpus,
            tier_rollout=stored.controller.rollout is not None or first_step,
            gpus_free=gpus_free,
        )

        decision, new_policy = decide(spec.policy, stored.policy, observation)
        acted, action_error = False, None
        if first_step and decision.is_change:
            log.info("%s/%s: first step after start only observes (policy proposed %s)",
                     namespace, name, decision.action.label)
        elif spec.mode != "recommend" and decision.is_change:
            acted, action_error = self._act(namespace, name, spec, stored, decision, now_s, events)

        stored.policy = new_policy
        stored.controller.last_tick_at_s = now_s
        if new_policy.steps % offpolicy.EVERY_STEPS == 0 or stored.controller.off_policy is None:
            verdict = offpolicy.evaluate_greedy(new_policy, spec.causal.method)
            if verdict is not None:
                stored.controller.off_policy = verdict
        store.save(stored)  # a 409 here means another writer: the step is dropped, nothing reported

        status = self._status(body, spec, stored, view, sample, adjusted, decision, acted, action_error, now_s)
        if decision.is_change and spec.mode == "recommend":
            events.append(Event("Normal", "Recommended", f"would {decision.action.label}: {decision.reason}"))
        if sample.unreachable:
            events.append(Event("Warning", "MetricsUnavailable", "; ".join(sample.problems)))
        log.info(
            "%s/%s: %s (%s) tier=%s replicas=%d ready=%d p95=%s rps=%s ctr=%s adjusted=%s applied=%s",
            namespace, name, decision.action.label, decision.reason, tier, replicas, view.ready,
            _fmt(sample.latency_p95_ms), _fmt(sample.requests_per_second), _fmt(adjusted.ctr_raw),
            _fmt(adjusted.ctr_adjusted), acted,
        )
        return StepReport(status=status, events=events, decision=decision, sample=sample, acted=acted)

    # --- steps of a tick ----------------------------------------------------------------------

    @staticmethod
    def _labels(namespace: str, spec: RecommenderSpec) -> dict[str, str]:
        return {"namespace": namespace, "model": spec.model.name}

    @staticmethod
    def _serving_tier(controller: ControllerState, spec: RecommenderSpec) -> str:
        if controller.rollout is not None:
            return controller.rollout.from_tier
        serving = [t.name for t in spec.tiers if controller.tier_replicas.get(t.name, 0) > 0]
        return serving[-1] if serving else spec.initial_tier

    @staticmethod
    def _gpu_ceiling(controller: ControllerState, spec: RecommenderSpec, view: workloads.ClusterView,
                     now_s: float) -> int | None:
        """Return the free GPUs implied by the last GPU shortage, or None when none is remembered.

        The operator cannot see which nodes a pod template may use, so it learns capacity from
        the scheduler: while pods are Pending for nvidia.com/gpu, the GPUs already bound are the
        ceiling. The ceiling holds for max(5 min, 10 intervals) after the last Pending pod, then
        scale-up may try again.
        """
        if view.pending_for_gpus > 0:
            controller.gpu_ceiling = view.gpus
            controller.gpu_ceiling_until_s = now_s + max(GPU_CEILING_MIN_S, GPU_CEILING_INTERVALS * spec.interval_s)
        elif controller.gpu_ceiling_until_s is not None and now_s >= controller.gpu_ceiling_until_s:
            controller.gpu_ceiling = controller.gpu_ceiling_until_s = None
        if controller.gpu_ceiling is None:
            return None
        return max(0, controller.gpu_ceiling - view.gpus)

    @staticmethod
    def _accumulate_swaps(controller: ControllerState, sample: MetricsSample) -> None:
        """Adds the interval's (rank, position) cells, swapped and unswapped, to the running sums."""
        if not sample.swapped_impressions:
            return
        diagonal_impressions, diagonal_clicks = adjust.diagonal_cells(
            sample.impressions, sample.clicks, sample.swapped_impressions, sample.swapped_clicks
        )
        for source, target in (
            (sample.swapped_impressions, controller.swapped_impressions),
            (diagonal_impressions, controller.swapped_impressions),
            (sample.swapped_clicks, controller.swapped_clicks),
            (diagonal_clicks, controller.swapped_clicks),
        ):
            for key, value in source.items():
                target[key] = target.get(key, 0.0) + value

    def _adjust(self, namespace: str, name: str, spec: RecommenderSpec, controller: ControllerState,
                sample: MetricsSample, now_s: float) -> adjust.Adjusted:
        bias, note = adjust.position_bias(
            spec.causal.position_bias, spec.causal.position_propensities,
            controller.swapped_impressions, controller.swapped_clicks,
        )
        history = adjust.IntervalHistory(controller.interval_history)  # shares the list: adds persist
        result = adjust.adjust_interval(
            impressions=sample.impressions,
            clicks=sample.clicks,
            tier=self._serving_tier(controller, spec),
            load_rps=sample.requests_per_second,
            at=datetime.datetime.fromtimestamp(now_s, datetime.timezone.utc),
            bias=bias,
            history=history,
            tiers=[t.name for t in spec.tiers],
            use_confounders=spec.causal.method != "none" and bool(spec.causal.confounders),
        )
        if note:
            result = dataclasses.replace(result, notes=(note, *result.notes))
        return result

    def _advance_rollout(self, namespace: str, name: str, spec: RecommenderSpec, stored: StoredState,
                         view: workloads.ClusterView, now_s: float, events: list[Event]) -> str | None:
        """Finishes a tier switch whose new pods are ready, or rolls it back after the timeout."""
        rollout = stored.controller.rollout
        if rollout is None:
            return None
        new_ready = view.tiers[rollout.to_tier].ready if rollout.to_tier in view.tiers else 0
        if new_ready >= rollout.replicas:
            self._write_tiers(namespace, name, stored, {rollout.from_tier: 0, rollout.to_tier: rollout.replicas})
            stored.controller.rollout = None
            message = f"tier switch {rollout.from_tier} -> {rollout.to_tier} done: {new_ready} replicas ready"
            events.append(Event("Normal", "TierSwitched", message))
            return message
        if now_s - rollout.started_at_s > spec.rollout_timeout_s:
            self._write_tiers(namespace, name, stored, {rollout.to_tier: 0, rollout.from_tier: rollout.replicas})
            stored.controller.rollout = None
            message = (
                f"tier switch {rollout.from_tier} -> {rollout.to_tier} rolled back: {new_ready} of "
                f"{rollout.replicas} new replicas ready after {spec.rollout_timeout_s:g} s"
            )
            events.append(Event("Warning", "TierSwitchRolledBack", message))
            return message
        return None

    def _write_tiers(self, namespace: str, name: str, stored: StoredState, tier_replicas: dict[str, int]) -> None:
        """Writes replicas tier by tier, growing ones first, and records each one that succeeded."""
        for tier, replicas in sorted(tier_replicas.items(), key=lambda item: -item[1]):
            workloads.set_replicas(
                self.apps, namespace, builders.deployment_name(name, tier), replicas,
                before_write=self.before_replica_write,
            )
            stored.controller.tier_replicas[tier] = replicas

    def _act(self, namespace: str, name: str, spec: RecommenderSpec, stored: StoredState,
             decision: Decision, now_s: float, events: list[Event]) -> tuple[bool, str | None]:
        try:
            if decision.target_tier != decision.tier:
                # The new tier starts beside the old one; the old one shrinks only once the new
                # one is ready (see _advance_rollout).
                self._write_tiers(namespace, name, stored, {decision.target_tier: decision.target_replicas})
                stored.controller.rollout = Rollout(
                    from_tier=decision.tier, to_tier=decision.target_tier,
                    replicas=decision.target_replicas, started_at_s=now_s,
                )
                events.append(Event("Normal", "TierSwitchStarted",
                                    f"{decision.tier} -> {decision.target_tier} at {decision.target_replicas} "
                                    f"replicas: {decision.reason}"))
            else:
                self._write_tiers(namespace, name, stored, {decision.tier: decision.target_replicas})
                reason = "ScaledUp" if decision.target_replicas > decision.replicas else "ScaledDown"
                events.append(Event("Normal", reason,
                                    f"{decision.tier} {decision.replicas} -> {decision.target_replicas} "
                                    f"replicas: {decision.reason}"))
            return True, None
        except (workloads.ReplicaWriteFailed, ApiException) as error:
            message = f"{decision.action.label} not applied: {error}"
            log.warning("%s/%s: %s", namespace, name, message)
            events.append(Event("Warning", "ActionFailed", message))
            return False, message

    def _status(self, body: dict, spec: RecommenderSpec, stored: StoredState, view: workloads.ClusterView,
                sample: MetricsSample, adjusted: adjust.Adjusted, decision: Decision, acted: bool,
                action_error: str | None, now_s: float) -> dict[str, Any]:
        generation = body["metadata"].get("generation", 0)
        controller = stored.controller
        tier = self._serving_tier(controller, spec)
        replicas = controller.tier_replicas.get(tier, 0)
        gpus_short = view.pending_for_gpus > 0
        if gpus_short:
            gpus_reason = "PodsPendingForGPUs"
            gpus_message = (f"{view.pending_for_gpus} pods cannot be scheduled: insufficient nvidia.com/gpu; "
                            "scale-up is blocked")
        elif controller.gpu_ceiling is not None:
            gpus_reason = "RecentlyPendingForGPUs"
            gpus_message = (f"pods were Pending for nvidia.com/gpu with {controller.gpu_ceiling} GPUs bound; "
                            f"scale-up beyond {controller.gpu_ceiling} GPUs is blocked until "
                            f"{_iso(controller.gpu_ceiling_until_s)}")
        else:
            gpus_reason, gpus_message = "GPUsAvailable", "every replica has its GPUs"

        metrics_ok = not sample.unreachable and sample.requests_per_second is not None
        metrics_message = "; ".join(sample.problems) if sample.problems else (
            "p95, request rate and clicks were read" + ("; idle: no requests" if sample.idle else "")
        )
        conditions = [
            condition("Ready", view.ready >= spec.min_replicas and controller.rollout is None,
                      "Serving" if view.ready >= spec.min_replicas else "ReplicasNotReady",
                      f"{view.ready} of {sum(controller.tier_replicas.values())} replicas ready on tier {tier}"
                      + (f"; switching to {controller.rollout.to_tier}" if controller.rollout else ""),
                      generation, now_s),
            condition("MetricsAvailable", metrics_ok,
                      "MetricsRead" if metrics_ok else ("PrometheusUnavailable" if sample.unreachable else "NoSeries"),
                      metrics_message, generation, now_s),
            condition("GPUsInsufficient", gpus_short or controller.gpu_ceiling is not None,
                      gpus_reason, gpus_message, generation, now_s),
            condition("PolicyConverging", spec.mode == "learn" and decision.epsilon > spec.policy.epsilon_min,
                      {"learn": "Learning", "act": "Frozen", "recommend": "DryRun"}[spec.mode],
                      f"mode {spec.mode}, epsilon {decision.epsilon:.4f}, {stored.policy.updates} updates"
                      + (f"; off-policy check: {controller.off_policy['reason']}" if controller.off_policy else ""),
                      generation, now_s),
        ]
        previous = (body.get("status") or {}).get("conditions") or []
        return {
            "observedGeneration": generation,
            "tier": tier,
            "replicas": replicas,
            "readyReplicas": view.ready,
            "pendingReplicas": view.pending,
            "gpus": view.gpus,
            "tierReplicas": dict(controller.tier_replicas),
            "rollout": None if controller.rollout is None else {
                "fromTier": controller.rollout.from_tier,
                "toTier": controller.rollout.to_tier,
                "startedAt": _iso(controller.rollout.started_at_s),
            },
            "adjustment": "; ".join(adjusted.notes) or "position bias and confounders corrected",
            "observed": {
                "p95Ms": sample.latency_p95_ms,
                "requestsPerSecond": sample.requests_per_second,
                "ctr": adjusted.ctr_raw,
                "ctrAdjusted": adjusted.ctr_adjusted,
                "at": _iso(now_s),
            },
            "lastDecision": {
                "action": decision.action.label,
                "reason": action_error or decision.reason,
                "source": decision.source,
                "reward": decision.interval_reward,
                "propensity": decision.propensity,
                "applied": acted,
                "at": _iso(now_s),
            },
            "policy": {
                "mode": spec.mode,
                "updates": stored.policy.updates,
                "epsilon": decision.epsilon,
                "stateRef": builders.state_configmap_name(body["metadata"]["name"]),
                "offPolicy": controller.off_policy,
            },
            "conditions": merge_conditions(previous, conditions),
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


__all__ = ["Controller", "Event", "ObservationError", "StepReport", "condition", "merge_conditions"]
