"""The RecommenderDeployment spec as typed values, with the checks the CRD schema cannot express.

The API server has already applied the schema's defaults and rejected wrong types, ranges, enums and
the cross-field CEL rules. What is left here: durations as seconds, a query timeout shorter than the
interval, position propensities present when configured, and the policy's own checks. Each failure
raises `SpecError` with the field path and the rejected value, which the operator copies into the
`Ready` condition and an Event.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from tierscale_operator.policy import PolicyConfig, PolicyConfigError, TierSpec

GROUP = "tierscale.io"
VERSION = "v1alpha1"
PLURAL = "recommenderdeployments"
KIND = "RecommenderDeployment"

# PolicyConfig's field names -> the spec paths they come from, for error messages.
_POLICY_FIELDS = {
    "tiers": "spec.tiers",
    "min_replicas": "spec.replicas.min",
    "max_replicas": "spec.replicas.max",
    "gpu_budget": "spec.gpuBudget",
    "slo_latency_p95_ms": "spec.slo.latencyP95Ms",
    "click_value": "spec.objective.clickValue",
    "gpu_hour_cost": "spec.objective.gpuHourCost",
    "slo_penalty": "spec.objective.sloPenalty",
    "interval_s": "spec.policy.interval",
    "cooldown_s": "spec.policy.cooldown",
    "learning_rate": "spec.policy.learningRate",
    "learning_rate_schedule": "spec.policy.learningRateSchedule",
    "discount": "spec.policy.discount",
    "load_scale": "spec.policy.loadScale",
    "epsilon": "spec.policy.epsilon",
    "epsilon_min": "spec.policy.epsilonMin",
    "epsilon_decay": "spec.policy.epsilonDecay",
    "mode": "spec.policy.mode",
}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SpecError(ValueError):
    """A spec value is invalid; ``field`` is its path, e.g. ``spec.policy.interval``."""

    def __init__(self, field: str, value: Any, problem: str):
        self.field = field
        self.value = value
        super().__init__(f"{field}={value!r}: {problem}")


def parse_duration_s(field: str, value: str) -> float:
    """Parses ``30s``, ``500ms``, ``2m`` or ``1h`` into seconds."""
    match = _DURATION.match(str(value))
    if not match:
        raise SpecError(field, value, "expected a duration such as 30s, 2m or 1h")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Tier:
    name: str
    gpus_per_replica: int
    layers: int | None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    image: str
    port: int
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    resources: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class CausalSpec:
    method: str
    position_bias: str
    position_propensities: tuple[float, ...]
    confounders: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RecommenderSpec:
    """A validated spec; ``policy`` is the policy's own configuration built from it."""

    model: ModelSpec
    tiers: tuple[Tier, ...]
    initial_tier: str
    min_replicas: int
    max_replicas: int
    gpu_budget: int
    slo_latency_p95_ms: float
    prometheus_url: str
    prometheus_window: str
    prometheus_timeout_s: float
    interval_s: float
    rollout_timeout_s: float
    initial_table: str | None
    causal: CausalSpec
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    policy: PolicyConfig

    @property
    def mode(self) -> str:
        return self.policy.mode

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise SpecError("spec.tiers", name, "no tier of that name")


def parse_spec(spec: Mapping[str, Any]) -> RecommenderSpec:
    """Builds a `RecommenderSpec` from a spec the API server has defaulted and validated."""
    model = spec["model"]
    tiers = tuple(
        Tier(name=t["name"], gpus_per_replica=int(t.get("gpusPerReplica", 1)), layers=t.get("layers"))
        for t in spec["tiers"]
    )
    replicas = spec.get("replicas", {})
    policy = spec.get("policy", {})
    prometheus = spec.get("prometheus", {})
    objective = spec.get("objective", {})
    causal = spec.get("causal", {})

    interval_s = parse_duration_s("spec.policy.interval", policy.get("interval", "30s"))
    cooldown_s = parse_duration_s("spec.policy.cooldown", policy.get("cooldown", "60s"))
    rollout_timeout_s = parse_duration_s("spec.policy.rolloutTimeout", policy.get("rolloutTimeout", "120s"))
    if interval_s < 1:
        raise SpecError("spec.policy.interval", policy.get("interval"), "must be at least 1s")
    if parse_duration_s("spec.prometheus.window", prometheus.get("window", "1m")) <= 0:
        raise SpecError("spec.prometheus.window", prometheus.get("window"), "must be above 0")
    timeout_s = float(prometheus.get("timeoutSeconds", 5))
    if timeout_s >= interval_s:
        raise SpecError(
            "spec.prometheus.timeoutSeconds", timeout_s,
            f"must be shorter than spec.policy.interval ({interval_s:g} s) so a slow query cannot "
            "delay the next decision",
        )

    position_bias = causal.get("positionBias", "estimate")
    propensities = tuple(float(p) for p in causal.get("positionPropensities") or ())
    if position_bias == "configured" and not propensities:
        raise SpecError(
            "spec.causal.positionPropensities", list(propensities),
            "is required when spec.causal.positionBias is 'configured'",
        )

    initial_tier = spec.get("initialTier", tiers[0].name)
    try:
        policy_config = PolicyConfig(
            tiers=tuple(TierSpec(t.name, t.gpus_per_replica) for t in tiers),
            min_replicas=int(replicas.get("min", 1)),
            max_replicas=int(replicas.get("max", 8)),
            gpu_budget=int(spec.get("gpuBudget", 8)),
            slo_latency_p95_ms=float(spec.get("slo", {}).get("latencyP95Ms", 50)),
            click_value=float(objective.get("clickValue", 1.0)),
            gpu_hour_cost=float(objective.get("gpuHourCost", 0.2)),
            slo_penalty=float(objective.get("sloPenalty", 5.0)),
            interval_s=interval_s,
            cooldown_s=cooldown_s,
            learning_rate=float(policy.get("learningRate", 0.1)),
            learning_rate_schedule=policy.get("learningRateSchedule", "constant"),
            discount=float(policy.get("discount", 0.9)),
            load_scale=float(policy.get("loadScale", 1.0)),
            epsilon=float(policy.get("epsilon", 0.05)),
            epsilon_min=float(policy.get("epsilonMin", 0.01)),
            epsilon_decay=float(policy.get("epsilonDecay", 0.9999)),
            mode=policy.get("mode", "learn"),
        )
    except PolicyConfigError as error:
        message = str(error)
        field = _POLICY_FIELDS.get(message.split(" ", 1)[0].split("[", 1)[0], "spec")
        raise SpecError(field, "(see message)", message) from error

    return RecommenderSpec(
        model=ModelSpec(
            name=model["name"],
            image=model["image"],
            port=int(model.get("port", 8080)),
            command=tuple(model.get("command") or ("python", "-m", "tierscale_server", "serve")),
            args=tuple(model.get("args") or ()),
            env=tuple((e["name"], e.get("value", "")) for e in model.get("env") or ()),
            resources=model.get("resources") or {},
        ),
        tiers=tiers,
        initial_tier=initial_tier,
        min_replicas=policy_config.min_replicas,
        max_replicas=policy_config.max_replicas,
        gpu_budget=policy_config.gpu_budget,
        slo_latency_p95_ms=policy_config.slo_latency_p95_ms,
        prometheus_url=prometheus.get("url", "http://prometheus.monitoring:9090"),
        prometheus_window=prometheus.get("window", "1m"),
        prometheus_timeout_s=timeout_s,
        interval_s=interval_s,
        rollout_timeout_s=rollout_timeout_s,
        initial_table=policy.get("initialTable"),
        causal=CausalSpec(
            method=causal.get("method", "snips"),
            position_bias=position_bias,
            position_propensities=propensities,
            # An explicit empty list turns the confounder adjustment off; a missing one means both.
            confounders=tuple(causal.get("confounders", ("hourOfDay", "load"))),
        ),
        pod_labels=dict((spec.get("podTemplate") or {}).get("labels") or {}),
        pod_annotations=dict((spec.get("podTemplate") or {}).get("annotations") or {}),
        node_selector=dict((spec.get("podTemplate") or {}).get("nodeSelector") or {}),
        tolerations=tuple((spec.get("podTemplate") or {}).get("tolerations") or ()),
        policy=policy_config,
    )
