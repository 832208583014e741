"""One control step of the Q-learning policy for a batch of environments.

`step_batch` is the only place where the policy observes, credits, learns and decides. The live loop
calls it with a batch of one (through `tierscale_operator.policy.decide`), the simulator with
hundreds of environments at once, so both run exactly this code.

A step, in order:

1. Validate the metrics: missing, NaN, infinite, negative or stale values make the row invalid.
2. Track settling: a deployment is settled when no pod is starting and no tier rollout runs.
   `settled_ticks` counts consecutive settled observations since the last change (capped at 2);
   two in a row mean the interval between them was entirely settled.
3. Credit the pending transition. The reward of an interval is
   click_value x adjusted CTR x requests - gpu_hour_cost x GPU-hours - slo_penalty x [p95 > SLO].
   An interval is credited only when its metrics are valid and it was settled from start to end.
   A change action therefore waits, masked, until its rollout has finished and one full settled
   interval has been measured. The rollout intervals are credited to no action, because their
   clicks and latency mix two configurations. The change is credited for all k intervals it took:
   each earns the settled interval's clicks and SLO penalty, discounted, and costs the GPUs the
   cluster reported for it, which are known exactly. A hold has k = 1 and earns its interval's
   reward. Invalid metrics drop the pending transition, so no action is credited with an unmeasured
   interval.
4. Q-update (semi-Markov form): Q(s, a) += alpha * (R + discount^k * max Q(s', a') - Q(s, a)),
   with R the discounted return of step 3. The max runs over the actions the spec allows in s'
   (min/max replicas, tier range, GPU budget), not over transient masks.
5. Mask: spec bounds, Pending pods and free GPUs, the cooldown, unsettled rollouts, bad metrics.
6. Guardrails override the policy: a tier switch whose first settled interval breaks an SLO that
   was met before the switch is rolled back; an SLO breach for `breach_intervals` consecutive
   intervals forces a scale-up, or a tier-down when scale-up is not allowed. Guards skip the
   cooldown but respect spec bounds, Pending pods and running rollouts, and say when they are blocked.
7. Choose epsilon-greedily (ties prefer hold, then the lower index). Exploration draws from the
   allowed actions whose Q-value is within `exploration_margin_penalties` SLO penalties of the
   best, the candidates. The propensity of the chosen action is
   epsilon / |candidates| + (1 - epsilon) * [greedy].

When several environments share one table and credit the same (state, action) in one step (as in
pretraining), their updates merge into one step towards the mean of their targets; see `_q_update`.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from tierscale_operator.policy.actions import (
    CHANGE_ACTIONS,
    N_ACTIONS,
    Action,
    MaskReason,
    apply_action,
    cluster_mask_reasons,
    structural_mask_reasons,
    timer_mask_reasons,
)
from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.features import state_index

SETTLED_FOR_CREDIT = 2


class Source(enum.IntEnum):
    """The origin of the chosen action."""

    GREEDY = 0
    EXPLORE = 1
    GUARD = 2
    MASKED_HOLD = 3
    METRICS_HOLD = 4


class Guard(enum.IntEnum):
    NONE = 0
    SLO_BREACH_SCALE_UP = 1
    SLO_BREACH_TIER_DOWN = 2
    ROLLBACK_TIER = 3
    SLO_BREACH_BLOCKED = 4


class Credit(enum.IntEnum):
    """The fate of the pending transition in this step."""

    CREDITED = 0
    NO_PENDING = 1
    METRICS_INVALID = 2
    UNSETTLED = 3
    NOT_LEARNING = 4
    SUPERSEDED_BY_GUARD = 5


@dataclasses.dataclass
class TableState:
    """Q-tables with visit counts; environments pick theirs through `ControlState.table_index`."""

    q: np.ndarray  # (n_tables, n_states, N_ACTIONS) float64
    visits: np.ndarray  # (n_tables, n_states, N_ACTIONS) int64
    updates: np.ndarray  # (n_tables,) int64

    @classmethod
    def zeros(cls, config: PolicyConfig, n_tables: int = 1) -> TableState:
        shape = (n_tables, config.n_states, N_ACTIONS)
        return cls(
            q=np.zeros(shape, dtype=np.float64),
            visits=np.zeros(shape, dtype=np.int64),
            updates=np.zeros(n_tables, dtype=np.int64),
        )

    def copy(self) -> TableState:
        return TableState(q=self.q.copy(), visits=self.visits.copy(), updates=self.updates.copy())


@dataclasses.dataclass
class ControlState:
    """Per-environment timers and the transition waiting for its reward; every field has shape (n,)."""

    table_index: np.ndarray
    pending_state: np.ndarray  # -1 when nothing waits for credit
    pending_action: np.ndarray
    pending_propensity: np.ndarray
    pending_age: np.ndarray  # intervals since the pending decision, excluding the current one
    pending_gpu_cost: np.ndarray  # discounted GPU cost of the intervals skipped since that decision
    previous_rps: np.ndarray  # NaN when unknown
    settled_ticks: np.ndarray
    last_change_at_s: np.ndarray  # -inf before the first change
    breach_streak: np.ndarray
    switch_from_tier: np.ndarray  # -1 unless a tier switch awaits its rollback check
    switch_slo_met_before: np.ndarray

    @classmethod
    def initial(cls, n: int, table_index: np.ndarray | None = None) -> ControlState:
        if table_index is None:
            table_index = np.zeros(n, dtype=np.int64)
        return cls(
            table_index=np.asarray(table_index, dtype=np.int64).copy(),
            pending_state=np.full(n, -1, dtype=np.int64),
            pending_action=np.full(n, -1, dtype=np.int64),
            pending_propensity=np.ones(n, dtype=np.float64),
            pending_age=np.zeros(n, dtype=np.int64),
            pending_gpu_cost=np.zeros(n, dtype=np.float64),
            previous_rps=np.full(n, np.nan, dtype=np.float64),
            # A fresh controller may act at once, as if the deployment had been settled for long.
            settled_ticks=np.full(n, SETTLED_FOR_CREDIT, dtype=np.int64),
            last_change_at_s=np.full(n, -np.inf, dtype=np.float64),
            breach_streak=np.zeros(n, dtype=np.int64),
            switch_from_tier=np.full(n, -1, dtype=np.int64),
            switch_slo_met_before=np.zeros(n, dtype=bool),
        )

    def copy(self) -> ControlState:
        return ControlState(**{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)})


@dataclasses.dataclass
class BatchObservation:
    """The controller's observation at one tick; every field has shape (n,).

    Metrics (rate, p95, CTR) describe the interval that just ended; NaN marks a missing value.
    Cluster fields describe the resource now: `replicas` is the desired count, `ready_replicas` the
    pods serving, `pending_replicas` the pods the scheduler could not place. `gpus_free` < 0 means
    the free GPU count is unknown.
    """

    at_s: np.ndarray
    metrics_age_s: np.ndarray
    requests_per_second: np.ndarray
    latency_p95_ms: np.ndarray
    ctr_adjusted: np.ndarray
    tier: np.ndarray
    replicas: np.ndarray
    ready_replicas: np.ndarray
    pending_replicas: np.ndarray
    tier_rollout: np.ndarray
    gpus_allocated: np.ndarray
    gpus_free: np.ndarray


@dataclasses.dataclass
class BatchDecision:
    """Everything one step decided and why, per environment; see `Source`, `Guard`, `Credit`."""

    action: np.ndarray
    target_tier: np.ndarray
    target_replicas: np.ndarray
    source: np.ndarray
    guard: np.ndarray
    propensity: np.ndarray
    epsilon: np.ndarray
    state_index: np.ndarray  # -1 where the metrics were invalid
    q_values: np.ndarray  # (n, N_ACTIONS), the row of q_state before this step's update
    q_state: np.ndarray  # the state whose Q-values were used: state_index, or a neighbour (see nearest_visited)
    mask_reasons: np.ndarray  # (n, N_ACTIONS) MaskReason bits; 0 = allowed
    guard_mask_reasons: np.ndarray  # (n, N_ACTIONS) the mask guards were held to
    metrics_valid: np.ndarray
    credit: np.ndarray
    credited_state: np.ndarray
    credited_action: np.ndarray
    credited_propensity: np.ndarray
    credited_elapsed: np.ndarray  # intervals from the credited decision to now; 0 when nothing was credited
    credited_return: np.ndarray  # discounted return credited over those intervals; NaN when nothing was
    reward: np.ndarray  # NaN unless computable
    reward_clicks: np.ndarray
    reward_gpu_cost: np.ndarray
    reward_slo_penalty: np.ndarray


def nearest_visited(config: PolicyConfig, tables: TableState, table_index: np.ndarray,
                    state: np.ndarray) -> np.ndarray:
    """Return, per row, the state whose Q-values rank the actions.

    That is `state` itself once any of its actions was visited. A state never visited borrows
    the visited state nearest in load bin with the same p95 ratio, tier, replicas and trend.
    The reason: p95 near the SLO means near saturation whatever the request rate, so a server
    slower or faster than the one the table learned on gets the table's values at the same
    latency. Ties go to the higher load bin, the cautious side. With no such state, the result is
    `state` itself (all zeros: hold).
    """
    own_visited = tables.visits[table_index, state].sum(axis=1) > 0
    if own_visited.all():  # the usual case, so the search below runs only for the other rows
        return state
    rows = np.flatnonzero(~own_visited)
    n_load = config.bin_counts[0]
    stride = config.n_states // n_load
    load_bin = state[rows] // stride
    offset = np.arange(n_load)[None, :] - load_bin[:, None]
    candidates = state[rows, None] + offset * stride
    visited = tables.visits[table_index[rows, None], candidates].sum(axis=2) > 0
    distance = np.where(visited, 2 * np.abs(offset) - (offset > 0), 2 * n_load)
    nearest = candidates[np.arange(rows.shape[0]), distance.argmin(axis=1)]
    result = state.copy()
    result[rows] = np.where(visited.any(axis=1), nearest, state[rows])
    return result


def epsilon_for(config: PolicyConfig, updates: np.ndarray) -> np.ndarray:
    """Exploration rate after `updates` Q-updates: max(epsilon_min, epsilon * decay ** updates)."""
    decayed = config.epsilon * np.power(config.epsilon_decay, np.asarray(updates, dtype=np.float64))
    return np.maximum(config.epsilon_min, decayed)


def _idle(obs: BatchObservation) -> np.ndarray:
    return np.asarray(obs.requests_per_second, dtype=np.float64) == 0.0


def _finite_or_idle(value: np.ndarray, idle: np.ndarray) -> np.ndarray:
    """A metric without requests to measure (NaN p95, no CTR) counts as zero in an idle interval."""
    value = np.asarray(value, dtype=np.float64)
    return np.where(idle & ~np.isfinite(value), 0.0, value)


def metrics_validity(config: PolicyConfig, obs: BatchObservation) -> np.ndarray:
    """True where rate, p95 and CTR are present, finite, non-negative and fresh.

    At zero requests per second p95 and CTR may be missing: there is no latency to break the SLO
    and no click to count, so the interval is valid for masks and guards (an idle deployment can
    scale down), but its reward is NaN and it is credited to no action.
    """
    idle = _idle(obs)
    values = (obs.requests_per_second, _finite_or_idle(obs.latency_p95_ms, idle),
              _finite_or_idle(obs.ctr_adjusted, idle))
    valid = np.ones(obs.at_s.shape[0], dtype=bool)
    for value in values:
        value = np.asarray(value, dtype=np.float64)
        valid &= np.isfinite(value) & (value >= 0)
    age = np.asarray(obs.metrics_age_s, dtype=np.float64)
    valid &= np.isfinite(age) & (age <= config.effective_metrics_max_age_s)
    return valid


def interval_reward(config: PolicyConfig, obs: BatchObservation) -> tuple[np.ndarray, ...]:
    """Reward parts of the interval that just ended: (total, clicks, GPU cost, SLO penalty)."""
    idle = _idle(obs)
    requests = np.asarray(obs.requests_per_second, dtype=np.float64) * config.interval_s
    clicks = config.click_value * _finite_or_idle(obs.ctr_adjusted, idle) * requests
    gpu_hours = np.asarray(obs.gpus_allocated, dtype=np.float64) * config.interval_s / 3600.0
    gpu_cost = config.gpu_hour_cost * gpu_hours
    breach = _finite_or_idle(obs.latency_p95_ms, idle) > config.slo_latency_p95_ms
    slo_penalty = config.slo_penalty * breach.astype(np.float64)
    # An idle interval (no requests, so no p95 and a 0/0 CTR) is a valid observation that may
    # scale down, but it says nothing about clicks: its reward is NaN and nothing is credited.
    total = np.where(idle, np.nan, clicks - gpu_cost - slo_penalty)
    return total, clicks, gpu_cost, slo_penalty


def settled_now(obs: BatchObservation) -> np.ndarray:
    """True where no pod is starting and no tier rollout runs (Pending pods do not count)."""
    starting = (
        np.asarray(obs.replicas, dtype=np.int64)
        - np.asarray(obs.ready_replicas, dtype=np.int64)
        - np.asarray(obs.pending_replicas, dtype=np.int64)
    )
    return (starting <= 0) & ~np.asarray(obs.tier_rollout, dtype=bool)


def step_batch(
    config: PolicyConfig,
    tables: TableState,
    control: ControlState,
    obs: BatchObservation,
    uniforms: np.ndarray,
    *,
    learn: bool,
    epsilon: np.ndarray | None = None,
    inplace: bool = False,
) -> tuple[BatchDecision, TableState, ControlState]:
    """Run one control step for n environments; see the module docstring for the order of steps.

    Args:
        uniforms: (n, 2) draws in [0, 1): the first decides whether to explore, the second which
            allowed action to explore. Passing them in keeps this function deterministic.
        learn: credit rewards and update the tables; False freezes them (modes act, recommend).
        epsilon: per-environment exploration rate; None takes the config's decaying schedule.
        inplace: update `tables` and `control` in place instead of copies (the simulator does this
            to avoid copying large tables every step).

    Returns the decision arrays, the new tables and the new control state.
    """
    if not inplace:
        tables = tables.copy()
        control = control.copy()
    n = obs.at_s.shape[0]
    table_index = control.table_index

    # 1. Metrics and settling.
    valid = metrics_validity(config, obs)
    tier = np.asarray(obs.tier, dtype=np.int64)
    replicas = np.asarray(obs.replicas, dtype=np.int64)
    rps = np.where(valid, obs.requests_per_second, 0.0)
    p95 = np.where(valid, _finite_or_idle(obs.latency_p95_ms, _idle(obs)), 0.0)
    settled = settled_now(obs)
    settled_ticks = np.where(settled, np.minimum(control.settled_ticks + 1, SETTLED_FOR_CREDIT), 0)
    interval_settled = settled_ticks >= SETTLED_FOR_CREDIT

    state = state_index(config, rps, p95, tier, replicas, obs.ready_replicas, control.previous_rps)
    q_state = nearest_visited(config, tables, table_index, state)
    q_values = tables.q[table_index, q_state].copy()

    # 2. Reward and credit.
    reward, clicks, gpu_cost, slo_penalty = interval_reward(config, obs)
    credit, decision_credit = _credit(config, tables, control, valid, interval_settled,
                                      (reward, clicks, gpu_cost, slo_penalty), state, tier, replicas, learn)

    # 3. Masks and guards.
    breach = valid & (p95 > config.slo_latency_p95_ms)
    breach_streak = np.where(valid, np.where(breach, control.breach_streak + 1, 0), control.breach_streak)
    in_cooldown = obs.at_s - control.last_change_at_s < config.cooldown_s
    spec_and_cluster = structural_mask_reasons(config, tier, replicas) | cluster_mask_reasons(
        config, tier, obs.pending_replicas, obs.gpus_free
    )
    mask = spec_and_cluster | timer_mask_reasons(interval_settled, in_cooldown)
    change = np.array(CHANGE_ACTIONS, dtype=np.int64)
    mask[:, change] |= np.where(valid, 0, int(MaskReason.METRICS_INVALID))[:, None]
    guard_mask = spec_and_cluster | timer_mask_reasons(settled, np.zeros(n, dtype=bool))
    guard, forced, switch_checked = _guards(control, valid, breach, breach_streak, interval_settled,
                                            tier, guard_mask, config.breach_intervals)

    # 4. Choose.
    if epsilon is None:
        epsilon = epsilon_for(config, tables.updates[table_index])
    epsilon = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (n,))
    margin = None
    if config.exploration_margin_penalties is not None:
        margin = config.exploration_margin_penalties * config.slo_penalty
    action, source, propensity = _choose(q_values, mask, epsilon, uniforms, margin)
    guarded = forced >= 0
    action = np.where(guarded, forced, action)
    source = np.where(guarded, Source.GUARD, source)
    propensity = np.where(guarded, 1.0, propensity)
    action = np.where(valid, action, Action.HOLD)
    source = np.where(valid, source, Source.METRICS_HOLD)
    propensity = np.where(valid, propensity, 1.0)

    # 5. New control state.
    credit = np.where((credit == Credit.UNSETTLED) & guarded, Credit.SUPERSEDED_BY_GUARD, credit)
    keep_pending = (credit == Credit.UNSETTLED) & ~guarded
    record = learn & valid & ~keep_pending
    control.pending_state = np.where(record, state, np.where(keep_pending, control.pending_state, -1))
    control.pending_action = np.where(record, action, np.where(keep_pending, control.pending_action, -1))
    control.pending_propensity = np.where(record, propensity,
                                          np.where(keep_pending, control.pending_propensity, 1.0))
    skipped_cost = control.pending_gpu_cost + config.discount**control.pending_age * gpu_cost
    control.pending_gpu_cost = np.where(keep_pending, skipped_cost, 0.0)
    control.pending_age = np.where(keep_pending, control.pending_age + 1, 0)

    is_change = np.isin(action, change)
    is_switch = (action == Action.TIER_DOWN) | (action == Action.TIER_UP)
    control.settled_ticks = np.where(is_change, 0, settled_ticks)
    control.last_change_at_s = np.where(is_change, obs.at_s, control.last_change_at_s)
    control.breach_streak = np.where(guarded, 0, breach_streak)
    rollback = guard == Guard.ROLLBACK_TIER
    switch_from = np.where(switch_checked, -1, control.switch_from_tier)
    control.switch_from_tier = np.where(is_switch & ~rollback, tier, np.where(is_switch, -1, switch_from))
    control.switch_slo_met_before = np.where(is_switch, valid & ~breach, control.switch_slo_met_before)
    control.previous_rps = np.where(valid, obs.requests_per_second, np.nan)

    target_tier, target_replicas = apply_action(tier, replicas, action)
    decision = BatchDecision(
        action=action.astype(np.int64),
        target_tier=target_tier,
        target_replicas=target_replicas,
        source=source.astype(np.int64),
        guard=guard,
        propensity=propensity,
        epsilon=np.asarray(epsilon, dtype=np.float64),
        state_index=np.where(valid, state, -1),
        q_values=q_values,
        q_state=np.where(valid, q_state, -1),
        mask_reasons=mask,
        guard_mask_reasons=guard_mask,
        metrics_valid=valid,
        credit=credit.astype(np.int64),
        credited_state=decision_credit[0],
        credited_action=decision_credit[1],
        credited_propensity=decision_credit[2],
        credited_elapsed=decision_credit[3],
        credited_return=decision_credit[4],
        reward=np.where(valid, reward, np.nan),
        reward_clicks=clicks,
        reward_gpu_cost=gpu_cost,
        reward_slo_penalty=slo_penalty,
    )
    return decision, tables, control


def _credit(
    config: PolicyConfig,
    tables: TableState,
    control: ControlState,
    valid: np.ndarray,
    interval_settled: np.ndarray,
    reward_parts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    state: np.ndarray,
    tier: np.ndarray,
    replicas: np.ndarray,
    learn: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Apply the credit rule and the Q-update to `tables` in place; return the credit codes."""
    reward, clicks, gpu_cost, slo_penalty = reward_parts
    has_pending = control.pending_state >= 0
    credit = np.full(valid.shape[0], Credit.NO_PENDING, dtype=np.int64)
    credit[has_pending & ~valid] = Credit.METRICS_INVALID
    credit[has_pending & valid & ~interval_settled] = Credit.UNSETTLED
    credit[has_pending & valid & interval_settled & ~np.isfinite(reward)] = Credit.METRICS_INVALID
    creditable = has_pending & valid & interval_settled & np.isfinite(reward)
    if not learn:
        credit[creditable] = Credit.NOT_LEARNING
        creditable[:] = False
    credit[creditable] = Credit.CREDITED

    # The decision is credited for every interval it took: the skipped ones earn the settled
    # interval's clicks and SLO penalty, and cost the GPUs the cluster reported for them.
    elapsed = control.pending_age + 1
    annuity = (1.0 - config.discount**elapsed) / (1.0 - config.discount)
    discounted_return = ((clicks - slo_penalty) * annuity - control.pending_gpu_cost
                         - config.discount ** (elapsed - 1) * gpu_cost)

    credited_state = np.where(creditable, control.pending_state, -1)
    credited_action = np.where(creditable, control.pending_action, -1)
    credited_propensity = np.where(creditable, control.pending_propensity, np.nan)
    credited_elapsed = np.where(creditable, elapsed, 0)
    credited_return = np.where(creditable, discounted_return, np.nan)
    if creditable.any():
        _q_update(config, tables, control.table_index[creditable], control.pending_state[creditable],
                  control.pending_action[creditable], discounted_return[creditable], elapsed[creditable],
                  state[creditable], tier[creditable], replicas[creditable])
    return credit, (credited_state, credited_action, credited_propensity, credited_elapsed, credited_return)


def _q_update(
    config: PolicyConfig,
    tables: TableState,
    table_index: np.ndarray,
    state: np.ndarray,
    action: np.ndarray,
    discounted_return: np.ndarray,
    elapsed: np.ndarray,
    next_state: np.ndarray,
    next_tier: np.ndarray,
    next_replicas: np.ndarray,
) -> None:
    allowed_next = structural_mask_reasons(config, next_tier, next_replicas) == 0
    next_q = np.where(allowed_next, tables.q[table_index, next_state], -np.inf)
    target = discounted_return + config.discount**elapsed * next_q.max(axis=1)
    current = tables.q[table_index, state, action]

    # Rows that credit the same entry in this step merge into one update towards their mean target.
    # Its step size is that of `count` updates: 1 - (1 - alpha)^count for a constant rate, and
    # count / (visits + count) for visit averaging. One row gives the textbook update.
    _, n_states, n_actions = tables.q.shape
    flat = (table_index * n_states + state) * n_actions + action
    entries, inverse, count = np.unique(flat, return_inverse=True, return_counts=True)
    mean_error = np.bincount(inverse, weights=target - current) / count

    alpha = 1.0 - (1.0 - config.learning_rate) ** count
    if config.learning_rate_schedule == "visit-averaged":
        visits = tables.visits.reshape(-1)[entries]
        alpha = np.maximum(alpha, count / (visits + count))

    tables.q.reshape(-1)[entries] += alpha * mean_error
    tables.visits.reshape(-1)[entries] += count
    np.add.at(tables.updates, table_index, 1)


def _guards(
    control: ControlState,
    valid: np.ndarray,
    breach: np.ndarray,
    breach_streak: np.ndarray,
    interval_settled: np.ndarray,
    tier: np.ndarray,
    guard_mask: np.ndarray,
    breach_intervals: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (guard code, forced action or -1, whether a pending rollback check was evaluated)."""
    n = valid.shape[0]
    guard = np.full(n, Guard.NONE, dtype=np.int64)
    forced = np.full(n, -1, dtype=np.int64)
    allowed = guard_mask == 0

    switch_checked = (control.switch_from_tier >= 0) & valid & interval_settled
    back = np.where(control.switch_from_tier < tier, Action.TIER_DOWN, Action.TIER_UP)
    back_allowed = allowed[np.arange(n), back]
    rollback = switch_checked & breach & control.switch_slo_met_before & back_allowed
    guard[rollback] = Guard.ROLLBACK_TIER
    forced[rollback] = back[rollback]

    sustained = valid & (breach_streak >= breach_intervals) & ~rollback
    scale_up = sustained & allowed[:, Action.SCALE_UP]
    tier_down = sustained & ~scale_up & allowed[:, Action.TIER_DOWN]
    blocked = sustained & ~scale_up & ~tier_down
    guard[scale_up] = Guard.SLO_BREACH_SCALE_UP
    forced[scale_up] = Action.SCALE_UP
    guard[tier_down] = Guard.SLO_BREACH_TIER_DOWN
    forced[tier_down] = Action.TIER_DOWN
    guard[blocked] = Guard.SLO_BREACH_BLOCKED
    return guard, forced, switch_checked


def _choose(
    q_values: np.ndarray,
    mask: np.ndarray,
    epsilon: np.ndarray,
    uniforms: np.ndarray,
    margin: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epsilon-greedy over the allowed actions; returns (action, source, propensity).

    Exploration draws uniformly from the allowed actions whose Q-value is within `margin` of the
    best (all allowed actions when `margin` is None); the greedy action is always among them.
    """
    allowed = mask == 0
    allowed[:, Action.HOLD] = True
    n_allowed = allowed.sum(axis=1)

    masked_q = np.where(allowed, q_values, -np.inf)
    best = masked_q.max(axis=1, keepdims=True)
    ties = allowed & (masked_q == best)
    greedy = np.where(ties[:, Action.HOLD], Action.HOLD, ties.argmax(axis=1))

    candidates = allowed if margin is None else allowed & (masked_q >= best - margin)
    n_candidates = candidates.sum(axis=1)
    explore = uniforms[:, 0] < epsilon
    pick = np.minimum((uniforms[:, 1] * n_candidates).astype(np.int64), n_candidates - 1)
    rank = np.cumsum(candidates, axis=1) - 1
    random_action = (candidates & (rank == pick[:, None])).argmax(axis=1)
    action = np.where(explore, random_action, greedy)

    propensity = epsilon / n_candidates + (1.0 - epsilon) * (action == greedy)
    only_hold = n_allowed == 1
    source = np.where(only_hold, Source.MASKED_HOLD, np.where(explore, Source.EXPLORE, Source.GREEDY))
    return action, source, propensity
