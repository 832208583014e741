"""The single-environment entry point: `decide(config, state, observation) -> (Decision, state)`.

This wraps `core.step_batch` with a batch of one, so the live loop runs the simulator's code. It
validates the observation and draws the exploration randomness from (config.seed, state.steps), so
a replay gives the same decisions. It appends credited transitions to the bounded log and turns the
decision arrays into a `Decision`, which explains itself in one line (`Decision.reason`) and in
full (`Decision.to_dict()`).

Modes: "learn" credits rewards, updates the table and explores; "act" uses the table greedily and
frozen; "recommend" decides like "act" but assumes the caller applies nothing, so the change timers
stay as they were.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tierscale_operator.policy.actions import ACTION_LABELS, CHANGE_ACTIONS, Action, MaskReason, describe_mask_reasons
from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import (
    SETTLED_FOR_CREDIT,
    BatchObservation,
    ControlState,
    Credit,
    Guard,
    Source,
    settled_now,
    step_batch,
)
from tierscale_operator.policy.features import StateFeatures, decode_state
from tierscale_operator.policy.state import LogEntry, PolicyState


class ObservationError(ValueError):
    """A cluster field of an observation is invalid; the message names the field and the value."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """The operator's observation at one tick.

    Cluster fields come from the Kubernetes API and must be valid (else `ObservationError`).
    Metric fields come from Prometheus and describe the interval that just ended. None, NaN or an
    old `metrics_at_s` make the tick a no-credit hold instead of an error. At zero requests per
    second, p95 and CTR may be None: an idle interval has neither latency nor clicks.
    """

    at_s: float
    tier: str
    replicas: int
    ready_replicas: int
    gpus_allocated: int
    requests_per_second: float | None
    latency_p95_ms: float | None
    ctr_adjusted: float | None
    metrics_at_s: float | None
    pending_replicas: int = 0
    tier_rollout: bool = False
    gpus_free: int | None = None


@dataclasses.dataclass(frozen=True)
class CreditedTransition:
    """The earlier decision that this step credited, with the reward of the interval."""

    state: int
    action: str
    propensity: float
    elapsed_intervals: int
    discounted_return: float
    reward: float
    reward_clicks: float
    reward_gpu_cost: float
    reward_slo_penalty: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision with everything needed to explain it."""

    at_s: float
    action: Action
    tier: str
    replicas: int
    target_tier: str
    target_replicas: int
    source: str
    guard: str | None
    reason: str
    propensity: float
    epsilon: float
    metrics_valid: bool
    state: StateFeatures | None
    # The state whose Q-values ranked the actions when `state` was never visited, else None.
    q_borrowed_from: StateFeatures | None
    q_values: dict[str, float]
    masked: dict[str, str]
    scale_up_blocked_by_gpus: bool
    credit: str
    credited: CreditedTransition | None
    interval_reward: float | None

    @property
    def is_change(self) -> bool:
        return self.action in CHANGE_ACTIONS

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["action"] = self.action.label
        data["state"] = None if self.state is None else self.state.to_dict()
        data["q_borrowed_from"] = None if self.q_borrowed_from is None else self.q_borrowed_from.to_dict()
        return data


_SOURCE_TEXT = {
    Source.GREEDY: "greedy",
    Source.EXPLORE: "explore",
    Source.GUARD: "guard",
    Source.MASKED_HOLD: "masked",
    Source.METRICS_HOLD: "metrics-invalid",
}
_GUARD_TEXT = {
    Guard.SLO_BREACH_SCALE_UP: "slo-breach-scale-up",
    Guard.SLO_BREACH_TIER_DOWN: "slo-breach-tier-down",
    Guard.ROLLBACK_TIER: "rollback-tier-switch",
    Guard.SLO_BREACH_BLOCKED: "slo-breach-blocked",
}
_CREDIT_TEXT = {
    Credit.CREDITED: "credited",
    Credit.NO_PENDING: "nothing pending",
    Credit.METRICS_INVALID: "not credited: metrics missing, NaN or stale",
    Credit.UNSETTLED: "waiting for a settled interval",
    Credit.NOT_LEARNING: "not credited: table frozen in this mode",
    Credit.SUPERSEDED_BY_GUARD: "not credited: superseded by a guard action",
}


def decide(config: PolicyConfig, state: PolicyState, observation: Observation) -> tuple[Decision, PolicyState]:
    """Observe, credit, learn and decide for one deployment; returns the decision and the new state.

    Raises ObservationError for an invalid cluster field and PolicyStateError when `state` was
    built for another table layout.
    """
    state.check_layout(config)
    batch_obs = _to_batch(config, observation)
    tables, control = state.to_batch()
    learn = config.mode == "learn"
    epsilon = None if learn else np.zeros(1)
    uniforms = np.random.default_rng([config.seed, state.steps]).random((1, 2))

    batch, tables, control = step_batch(config, tables, control, batch_obs, uniforms, learn=learn,
                                        epsilon=epsilon, inplace=True)

    if config.mode == "recommend":
        _undo_change_timers(state, control, batch_obs)
    log = _append_log(config, state.log, batch, observation)
    new_state = state.with_batch(tables, control, steps=state.steps + 1, log=log)
    return _to_decision(config, observation, batch), new_state


def _to_batch(config: PolicyConfig, obs: Observation) -> BatchObservation:
    _check_count("replicas", obs.replicas)
    _check_count("ready_replicas", obs.ready_replicas)
    _check_count("pending_replicas", obs.pending_replicas)
    _check_count("gpus_allocated", obs.gpus_allocated)
    if obs.gpus_free is not None:
        _check_count("gpus_free", obs.gpus_free)
    if not isinstance(obs.at_s, int | float) or not math.isfinite(obs.at_s):
        raise ObservationError(f"at_s must be a finite number of seconds, got {obs.at_s!r}")
    if not isinstance(obs.tier_rollout, bool):
        raise ObservationError(f"tier_rollout must be a bool, got {obs.tier_rollout!r}")
    try:
        tier = config.tier_index(obs.tier)
    except ValueError as error:
        raise ObservationError(f"tier: {error}") from None

    def metric(value: float | None) -> float:
        return math.nan if value is None else float(value)

    age = math.nan if obs.metrics_at_s is None else obs.at_s - float(obs.metrics_at_s)
    return BatchObservation(
        at_s=np.array([float(obs.at_s)]),
        metrics_age_s=np.array([age]),
        requests_per_second=np.array([metric(obs.requests_per_second)]),
        latency_p95_ms=np.array([metric(obs.latency_p95_ms)]),
        ctr_adjusted=np.array([metric(obs.ctr_adjusted)]),
        tier=np.array([tier]),
        replicas=np.array([obs.replicas]),
        ready_replicas=np.array([obs.ready_replicas]),
        pending_replicas=np.array([obs.pending_replicas]),
        tier_rollout=np.array([obs.tier_rollout]),
        gpus_allocated=np.array([obs.gpus_allocated]),
        gpus_free=np.array([-1 if obs.gpus_free is None else obs.gpus_free]),
    )


def _check_count(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ObservationError(f"{field} must be a non-negative integer, got {value!r}")


def _undo_change_timers(state: PolicyState, control: ControlState, obs: BatchObservation) -> None:
    """In recommend mode nothing is applied, so keep the timers a change would have reset."""
    settled = bool(settled_now(obs)[0])
    control.settled_ticks[0] = min(state.settled_ticks + 1, SETTLED_FOR_CREDIT) if settled else 0
    control.last_change_at_s[0] = -np.inf if state.last_change_at_s is None else state.last_change_at_s
    control.switch_from_tier[0] = state.switch_from_tier
    control.switch_slo_met_before[0] = state.switch_slo_met_before


def _append_log(config: PolicyConfig, log: tuple[LogEntry, ...], batch: Any,
                obs: Observation) -> tuple[LogEntry, ...]:
    if batch.credit[0] != Credit.CREDITED or config.log_size == 0:
        return log
    entry = LogEntry(
        at_s=float(obs.at_s),
        state=int(batch.credited_state[0]),
        action=int(batch.credited_action[0]),
        propensity=float(batch.credited_propensity[0]),
        reward=float(batch.reward[0]),
        reward_clicks=float(batch.reward_clicks[0]),
        reward_gpu_cost=float(batch.reward_gpu_cost[0]),
        reward_slo_penalty=float(batch.reward_slo_penalty[0]),
        requests_per_second=float(obs.requests_per_second or 0.0),
    )
    log = (*log, entry)
    return log[max(0, len(log) - config.log_size):]


def _to_decision(config: PolicyConfig, obs: Observation, batch: Any) -> Decision:
    action = Action(int(batch.action[0]))
    source = Source(int(batch.source[0]))
    guard = Guard(int(batch.guard[0]))
    credit = Credit(int(batch.credit[0]))
    valid = bool(batch.metrics_valid[0])
    mask = batch.mask_reasons[0]

    q_values = {ACTION_LABELS[a]: float(batch.q_values[0, a]) for a in range(len(Action))
                if mask[a] == 0 and valid}
    masked = {ACTION_LABELS[a]: describe_mask_reasons(int(mask[a])) for a in range(len(Action)) if mask[a]}
    up_reasons = int(batch.guard_mask_reasons[0, Action.SCALE_UP])
    gpu_bits = MaskReason.PENDING_PODS | MaskReason.NO_FREE_GPUS | MaskReason.GPU_BUDGET

    credited = None
    if credit == Credit.CREDITED:
        credited = CreditedTransition(
            state=int(batch.credited_state[0]),
            action=ACTION_LABELS[int(batch.credited_action[0])],
            propensity=float(batch.credited_propensity[0]),
            elapsed_intervals=int(batch.credited_elapsed[0]),
            discounted_return=float(batch.credited_return[0]),
            reward=float(batch.reward[0]),
            reward_clicks=float(batch.reward_clicks[0]),
            reward_gpu_cost=float(batch.reward_gpu_cost[0]),
            reward_slo_penalty=float(batch.reward_slo_penalty[0]),
        )
    target_tier = int(batch.target_tier[0])
    reward = float(batch.reward[0])
    state, q_state = int(batch.state_index[0]), int(batch.q_state[0])
    borrowed = decode_state(config, q_state) if valid and q_state != state else None
    return Decision(
        at_s=float(obs.at_s),
        action=action,
        tier=obs.tier,
        replicas=obs.replicas,
        target_tier=config.tiers[target_tier].name,
        target_replicas=int(batch.target_replicas[0]),
        source=_SOURCE_TEXT[source],
        guard=_GUARD_TEXT.get(guard),
        reason=_reason(config, action, source, guard, q_values, masked, batch, up_reasons, borrowed),
        propensity=float(batch.propensity[0]),
        epsilon=float(batch.epsilon[0]),
        metrics_valid=valid,
        state=decode_state(config, state) if valid else None,
        q_borrowed_from=borrowed,
        q_values=q_values,
        masked=masked,
        scale_up_blocked_by_gpus=bool(up_reasons & gpu_bits),
        credit=_CREDIT_TEXT[credit],
        credited=credited,
        interval_reward=reward if math.isfinite(reward) else None,
    )


def _reason(config: PolicyConfig, action: Action, source: Source, guard: Guard, q_values: dict[str, float],
            masked: dict[str, str], batch: Any, up_reasons: int, borrowed: StateFeatures | None) -> str:
    """Format the chosen action and its cause as one line."""
    label = action.label
    if source == Source.METRICS_HOLD:
        return f"{label}: metrics missing, NaN or stale; nothing credited"
    if guard == Guard.ROLLBACK_TIER:
        return (f"{label}: guard rolled back the last tier switch, whose first settled interval "
                f"broke the p95 SLO of {config.slo_latency_p95_ms:g} ms")
    if guard in (Guard.SLO_BREACH_SCALE_UP, Guard.SLO_BREACH_TIER_DOWN):
        return (f"{label}: guard, p95 above the SLO of {config.slo_latency_p95_ms:g} ms for "
                f"{config.breach_intervals} or more intervals")
    prefix = ""
    if guard == Guard.SLO_BREACH_BLOCKED:
        prefix = (f"SLO breached for {config.breach_intervals}+ intervals but scale-up is blocked "
                  f"({describe_mask_reasons(up_reasons)}); ")
    if source == Source.MASKED_HOLD:
        change_bits = 0
        for change in CHANGE_ACTIONS:
            change_bits |= int(batch.mask_reasons[0, change])
        return f"{prefix}{label}: every change is masked ({describe_mask_reasons(change_bits)})"
    ranked = sorted(q_values.items(), key=lambda item: -item[1])
    values = ", ".join(f"{name} {value:.3g}" for name, value in ranked)
    if borrowed is not None:
        values += f" (state never visited: Q of load bin {borrowed.load_bin} at the same p95 ratio)"
    if source == Source.EXPLORE:
        return f"{prefix}{label}: explore (epsilon {float(batch.epsilon[0]):.3g}); Q: {values}"
    return f"{prefix}{label}: greedy; Q: {values}"
