"""Typed, validated configuration of the Q-learning policy.

`PolicyConfig` carries everything the policy needs from a RecommenderDeployment's spec: the tiers,
replica bounds, GPU budget, latency SLO, the objective's prices, the learning parameters and the
state bins. Every check raises `PolicyConfigError` naming the field and the rejected value, so the
operator can copy the message into a condition unchanged.

The bins and the tier names fix the layout of the Q-table. `PolicyConfig.table_fingerprint()`
hashes them, so a table trained for one layout is never loaded into another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

MODES = ("learn", "act", "recommend")
LEARNING_RATE_SCHEDULES = ("constant", "visit-averaged")

# Upper bound on Q-table entries (states x actions). The persisted state stores the table and the
# visit counts in a Kubernetes ConfigMap, whose data is limited to 1 MiB; 30,000 entries encode to
# at most about 0.5 MiB (float64 values plus uint32 counts, base64).
MAX_TABLE_ENTRIES = 30_000
MAX_LOG_ENTRIES = 4096


class PolicyConfigError(ValueError):
    """A policy configuration value is invalid; the message names the field and the value."""


@dataclasses.dataclass(frozen=True)
class TierSpec:
    """One model-size tier, in the order cheapest to best."""

    name: str
    gpus_per_replica: int = 1


@dataclasses.dataclass(frozen=True)
class StateBins:
    """Bin edges that discretise observations into the Q-table's state.

    Each edge list is strictly increasing; a value v falls in bin i where i is the number of edges
    that are <= v, so n edges give n + 1 bins.
    """

    # Requests per second per ready replica. The edges cover the 200 to 240 requests/s a replica of
    # the measured tier profile serves at saturation; a much faster model needs wider edges.
    load_rps_per_replica: tuple[float, ...] = (20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0)
    # Observed p95 latency divided by the SLO target.
    latency_p95_ratio: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0, 1.25)
    # Desired replica count; the default gives one bucket per count from 1 to 7 and one for >= 8.
    replicas: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    # Request rate now divided by the rate one interval earlier (falling, flat, rising).
    load_trend: tuple[float, ...] = (0.93, 1.07)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Everything the policy reads from the resource's spec, validated on construction.

    Units: latencies in milliseconds, durations in seconds, `click_value` per click,
    `gpu_hour_cost` per GPU-hour and `slo_penalty` per interval whose p95 exceeds the SLO, all in
    the same currency.
    """

    tiers: tuple[TierSpec, ...]
    min_replicas: int = 1
    max_replicas: int = 8
    gpu_budget: int = 8
    slo_latency_p95_ms: float = 50.0
    click_value: float = 1.0
    gpu_hour_cost: float = 0.2
    slo_penalty: float = 5.0
    interval_s: float = 30.0
    cooldown_s: float = 60.0
    learning_rate: float = 0.1
    learning_rate_schedule: str = "constant"
    discount: float = 0.9
    epsilon: float = 0.05
    epsilon_min: float = 0.01
    epsilon_decay: float = 0.9999
    # Exploration picks only among actions whose Q-value is within this many SLO penalties of the
    # greedy action's, so the policy does not try what the table already rates as a breach. None
    # explores every allowed action.
    exploration_margin_penalties: float | None = 0.5
    # Factor on the request rate before it is binned into the state: profile capacity per
    # replica / this deployment's. A slower replica then maps onto the table's load bins.
    load_scale: float = 1.0
    mode: str = "learn"
    metrics_max_age_s: float | None = None
    breach_intervals: int = 2
    log_size: int = 256
    seed: int = 0
    bins: StateBins = dataclasses.field(default_factory=StateBins)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        _validate(self)

    # Derived sizes -------------------------------------------------------------------------

    @property
    def n_tiers(self) -> int:
        return len(self.tiers)

    @property
    def bin_counts(self) -> tuple[int, int, int, int, int]:
        """Number of bins per state feature: load, p95 ratio, tier, replicas, trend."""
        b = self.bins
        return (
            len(b.load_rps_per_replica) + 1,
            len(b.latency_p95_ratio) + 1,
            self.n_tiers,
            len(b.replicas) + 1,
            len(b.load_trend) + 1,
        )

    @property
    def n_states(self) -> int:
        return math.prod(self.bin_counts)

    @property
    def effective_metrics_max_age_s(self) -> float:
        """Age after which metrics count as stale: `metrics_max_age_s`, else two intervals."""
        if self.metrics_max_age_s is None:
            return 2.0 * self.interval_s
        return self.metrics_max_age_s

    def gpus_per_replica(self) -> tuple[int, ...]:
        return tuple(t.gpus_per_replica for t in self.tiers)

    def tier_index(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        known = ", ".join(t.name for t in self.tiers)
        raise PolicyConfigError(f"tier {name!r} is not one of the configured tiers ({known})")

    def table_fingerprint(self) -> str:
        """Hash of what fixes the Q-table's layout: tier names and order, bins, action count."""
        from tierscale_operator.policy.actions import N_ACTIONS

        layout = {
            "tiers": [t.name for t in self.tiers],
            "bins": dataclasses.asdict(self.bins),
            "actions": N_ACTIONS,
        }
        encoded = json.dumps(layout, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def replace(self, **changes: Any) -> PolicyConfig:
        return dataclasses.replace(self, **changes)

    # Construction from the custom resource --------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], **overrides: Any) -> PolicyConfig:
        """Build a config from a RecommenderDeployment spec (camelCase keys, durations like "30s").

        Only the fields the policy reads are used; missing optional fields take the defaults.
        """
        tiers_spec = spec.get("tiers")
        if not isinstance(tiers_spec, Sequence) or isinstance(tiers_spec, str | bytes) or not tiers_spec:
            raise PolicyConfigError(f"spec.tiers must be a non-empty list, got {tiers_spec!r}")
        tiers = []
        for i, tier in enumerate(tiers_spec):
            if not isinstance(tier, Mapping) or "name" not in tier:
                raise PolicyConfigError(f"spec.tiers[{i}] must be a mapping with a name, got {tier!r}")
            tiers.append(TierSpec(name=tier["name"], gpus_per_replica=tier.get("gpusPerReplica", 1)))

        replicas = spec.get("replicas", {})
        slo = spec.get("slo", {})
        objective = spec.get("objective", {})
        policy = spec.get("policy", {})
        kwargs: dict[str, Any] = {"tiers": tuple(tiers)}
        _copy(kwargs, "min_replicas", replicas, "min")
        _copy(kwargs, "max_replicas", replicas, "max")
        _copy(kwargs, "gpu_budget", spec, "gpuBudget")
        _copy(kwargs, "slo_latency_p95_ms", slo, "latencyP95Ms")
        _copy(kwargs, "click_value", objective, "clickValue")
        _copy(kwargs, "gpu_hour_cost", objective, "gpuHourCost")
        _copy(kwargs, "slo_penalty", objective, "sloPenalty")
        _copy(kwargs, "learning_rate", policy, "learningRate")
        _copy(kwargs, "discount", policy, "discount")
        _copy(kwargs, "epsilon", policy, "epsilon")
        _copy(kwargs, "epsilon_min", policy, "epsilonMin")
        _copy(kwargs, "epsilon_decay", policy, "epsilonDecay")
        _copy(kwargs, "mode", policy, "mode")
        if "interval" in policy:
            kwargs["interval_s"] = parse_duration_s(policy["interval"], "spec.policy.interval")
        if "cooldown" in policy:
            kwargs["cooldown_s"] = parse_duration_s(policy["cooldown"], "spec.policy.cooldown")
        kwargs.update(overrides)
        return cls(**kwargs)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(value: Any, field: str) -> float:
    """Parse a Kubernetes-style duration ("30s", "1m30s", "250ms") or a number of seconds."""
    if isinstance(value, bool):
        raise PolicyConfigError(f"{field} must be a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        raise PolicyConfigError(f"{field} must be a duration like '30s', got {value!r}")
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
        position = match.end()
    if position != len(value):
        raise PolicyConfigError(f"{field} must be a duration like '30s' or '1m30s', got {value!r}")
    return total


def _copy(kwargs: dict[str, Any], name: str, source: Mapping[str, Any], key: str) -> None:
    if key in source:
        kwargs[name] = source[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_int(field: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyConfigError(f"{field} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise PolicyConfigError(f"{field} must be >= {low}{upper}, got {value}")


def _require_float(field: str, value: Any, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> None:
    if not _is_number(value) or not math.isfinite(value):
        raise PolicyConfigError(f"{field} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise PolicyConfigError(f"{field} must be in {left}{low}, {high}{right}, got {value}")


def _require_edges(field: str, edges: Any) -> None:
    if not isinstance(edges, tuple) or not edges:
        raise PolicyConfigError(f"{field} must be a non-empty tuple of numbers, got {edges!r}")
    for i, edge in enumerate(edges):
        if not _is_number(edge) or not math.isfinite(edge):
            raise PolicyConfigError(f"{field}[{i}] must be a finite number, got {edge!r}")
        if i and edge <= edges[i - 1]:
            raise PolicyConfigError(
                f"{field} must be strictly increasing, got {edges[i - 1]} then {edge} at index {i}"
            )


def _validate(config: PolicyConfig) -> None:
    if not config.tiers:
        raise PolicyConfigError("tiers must list at least one tier, got none")
    seen: set[str] = set()
    for i, tier in enumerate(config.tiers):
        if not isinstance(tier, TierSpec):
            raise PolicyConfigError(f"tiers[{i}] must be a TierSpec, got {tier!r}")
        if not isinstance(tier.name, str) or not tier.name:
            raise PolicyConfigError(f"tiers[{i}].name must be a non-empty string, got {tier.name!r}")
        if tier.name in seen:
            raise PolicyConfigError(f"tiers[{i}].name {tier.name!r} is used by an earlier tier")
        seen.add(tier.name)
        _require_int(f"tiers[{i}].gpus_per_replica", tier.gpus_per_replica, 1)

    _require_int("min_replicas", config.min_replicas, 1)
    _require_int("max_replicas", config.max_replicas, 1)
    if config.min_replicas > config.max_replicas:
        raise PolicyConfigError(
            f"min_replicas ({config.min_replicas}) must be <= max_replicas ({config.max_replicas})"
        )
    _require_int("gpu_budget", config.gpu_budget, 1)
    cheapest = min(t.gpus_per_replica for t in config.tiers)
    if config.min_replicas * cheapest > config.gpu_budget:
        raise PolicyConfigError(
            f"gpu_budget ({config.gpu_budget}) cannot fit min_replicas ({config.min_replicas}) "
            f"of the cheapest tier ({cheapest} GPU(s) per replica)"
        )

    _require_float("slo_latency_p95_ms", config.slo_latency_p95_ms, 0.0, math.inf, low_open=True,
                   high_open=True)
    for name in ("click_value", "gpu_hour_cost", "slo_penalty"):
        _require_float(name, getattr(config, name), 0.0, math.inf, high_open=True)
    _require_float("interval_s", config.interval_s, 0.0, math.inf, low_open=True, high_open=True)
    _require_float("cooldown_s", config.cooldown_s, 0.0, math.inf, high_open=True)
    _require_float("learning_rate", config.learning_rate, 0.0, 1.0, low_open=True)
    if config.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
        raise PolicyConfigError(
            f"learning_rate_schedule must be one of {LEARNING_RATE_SCHEDULES}, "
            f"got {config.learning_rate_schedule!r}"
        )
    _require_float("discount", config.discount, 0.0, 1.0, high_open=True)
    _require_float("load_scale", config.load_scale, 0.0, 1000.0, low_open=True)
    _require_float("epsilon", config.epsilon, 0.0, 1.0)
    _require_float("epsilon_min", config.epsilon_min, 0.0, config.epsilon)
    _require_float("epsilon_decay", config.epsilon_decay, 0.0, 1.0, low_open=True)
    if config.exploration_margin_penalties is not None:
        _require_float("exploration_margin_penalties", config.exploration_margin_penalties, 0.0, math.inf,
                       high_open=True)
    if config.mode not in MODES:
        raise PolicyConfigError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.metrics_max_age_s is not None:
        _require_float("metrics_max_age_s", config.metrics_max_age_s, 0.0, math.inf, low_open=True,
                       high_open=True)
    _require_int("breach_intervals", config.breach_intervals, 1)
    _require_int("log_size", config.log_size, 0, MAX_LOG_ENTRIES)
    _require_int("seed", config.seed, 0)

    bins = config.bins
    if not isinstance(bins, StateBins):
        raise PolicyConfigError(f"bins must be a StateBins, got {bins!r}")
    for field in dataclasses.fields(StateBins):
        _require_edges(f"bins.{field.name}", getattr(bins, field.name))

    from tierscale_operator.policy.actions import N_ACTIONS

    entries = config.n_states * N_ACTIONS
    if entries > MAX_TABLE_ENTRIES:
        raise PolicyConfigError(
            f"bins and tiers give {config.n_states} states x {N_ACTIONS} actions = {entries} "
            f"Q-table entries, above the limit of {MAX_TABLE_ENTRIES} that fits a ConfigMap; "
            "use fewer bin edges"
        )
