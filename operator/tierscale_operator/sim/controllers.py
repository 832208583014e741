"""Controllers the simulator runs side by side: the Q-learning policy and the baselines.

Every controller is vectorised over the rows (environments) it owns and returns a target
(tier, replicas) per row for each tick. The environment turns targets into pods.

- `QLearningController`: the policy in `tierscale_operator.policy.core`, unchanged.
- `StaticController`: a fixed tier and replica count.
- `ThresholdController`: the Kubernetes HPA algorithm on one metric, at a fixed tier.
  desired = ceil(current * metric / target), skipped within the 10% tolerance; scale-down takes
  the maximum recommendation of the last 300 s (HPA's default stabilisation window; scale-up has
  none); scale-up is limited per tick to max(2 x current, current + 4), HPA's default rate for one
  15 s period. With metric p95 latency it is the HPA-like rule; with metric request rate per
  replica (target in requests per second per replica) it is what KEDA configures on an HPA.
- `OneStepOptimiser`: knows the latency model and the CTR per tier and hour; each tick it picks the
  (tier, replicas) that maximises the utility of the next interval, assuming the last observed
  request rate continues. It may change tier and replicas in one step.
- `ReplayController`: plays a fixed sequence of targets (the oracle's plan).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import (
    BatchDecision,
    BatchObservation,
    ControlState,
    Guard,
    Source,
    TableState,
    step_batch,
)
from tierscale_operator.sim.clicks import ClickModel
from tierscale_operator.sim.queueing import LatencyModel


class Controller(Protocol):
    name: str

    def reset(self, n: int) -> None: ...

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def slice_observation(obs: BatchObservation, rows: slice) -> BatchObservation:
    return BatchObservation(**{f.name: getattr(obs, f.name)[rows] for f in dataclasses.fields(obs)})


def max_replicas_in_budget(config: PolicyConfig, tier: np.ndarray) -> np.ndarray:
    gpus = np.asarray(config.gpus_per_replica(), dtype=np.int64)[np.asarray(tier, dtype=np.int64)]
    return np.minimum(config.max_replicas, config.gpu_budget // gpus)


class StaticController:
    def __init__(self, name: str, config: PolicyConfig, tier: int, replicas: int) -> None:
        self.name = name
        self.config = config
        self.tier = tier
        self.replicas = replicas

    def reset(self, n: int) -> None:
        self.n = n

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = obs.at_s.shape[0]
        return np.full(n, self.tier, dtype=np.int64), np.full(n, self.replicas, dtype=np.int64)


class ThresholdController:
    """HPA algorithm on p95 latency ("latency") or on request rate per replica ("rate")."""

    TOLERANCE = 0.1
    SCALE_DOWN_WINDOW_S = 300.0

    def __init__(self, name: str, config: PolicyConfig, metric: str, tier: np.ndarray, target: np.ndarray) -> None:
        if metric not in ("latency", "rate"):
            raise ValueError(f"metric must be 'latency' or 'rate', got {metric!r}")
        self.name = name
        self.config = config
        self.metric = metric
        self.tier = np.asarray(tier, dtype=np.int64)
        self.target = np.asarray(target, dtype=np.float64)
        self.window = max(1, int(round(self.SCALE_DOWN_WINDOW_S / config.interval_s)))

    def reset(self, n: int) -> None:
        if self.tier.shape[0] != n:
            raise ValueError(f"{self.name} has parameters for {self.tier.shape[0]} rows, got {n}")
        self.history = np.zeros((self.window, n), dtype=np.int64)
        self.history_filled = 0

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        current = np.maximum(np.asarray(obs.replicas, dtype=np.int64), 1)
        if self.metric == "latency":
            value = obs.latency_p95_ms
        else:
            value = obs.requests_per_second / current
        valid = np.isfinite(value)
        ratio = np.where(valid, value, self.target) / self.target
        within = np.abs(ratio - 1.0) <= self.TOLERANCE
        desired = np.where(within, current, np.ceil(current * ratio - 1e-9).astype(np.int64))

        up_limit = np.maximum(2 * current, current + 4)
        desired = np.minimum(desired, up_limit)
        upper = max_replicas_in_budget(self.config, self.tier)
        desired = np.clip(desired, self.config.min_replicas, upper)

        self.history = np.roll(self.history, 1, axis=0)
        self.history[0] = desired
        self.history_filled = min(self.history_filled + 1, self.window)
        stabilised = self.history[: self.history_filled].max(axis=0)
        replicas = np.where(desired < current, np.minimum(stabilised, current), desired)
        return self.tier.copy(), replicas


class OneStepOptimiser:
    """Model-based: maximise next interval's utility over every (tier, replicas) in the budget."""

    def __init__(self, name: str, config: PolicyConfig, latency: LatencyModel, clicks: ClickModel) -> None:
        self.name = name
        self.config = config
        self.latency = latency
        self.clicks = clicks
        gpus = np.asarray(config.gpus_per_replica(), dtype=np.int64)
        tiers, replicas = np.meshgrid(np.arange(config.n_tiers), np.arange(config.min_replicas, config.max_replicas + 1),
                                      indexing="ij")
        tiers, replicas = tiers.ravel(), replicas.ravel()
        fits = replicas * gpus[tiers] <= config.gpu_budget
        self.candidate_tier = tiers[fits]
        self.candidate_replicas = replicas[fits]
        self.candidate_gpus = (replicas * gpus[tiers])[fits]

    def reset(self, n: int) -> None:
        self.n = n

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        n = obs.at_s.shape[0]
        m = self.candidate_tier.shape[0]
        rps = np.asarray(obs.requests_per_second, dtype=np.float64)
        valid = np.isfinite(rps)
        forecast = np.repeat(np.where(valid, rps, 0.0), m)
        tier = np.tile(self.candidate_tier, n)
        replicas = np.tile(self.candidate_replicas, n)
        p95, served = self.latency.evaluate(tier, replicas, forecast)
        hours = np.repeat(hour_of_day, m)
        value = c.click_value * served * c.interval_s * self.clicks.ctr(tier, hours)
        cost = c.gpu_hour_cost * np.tile(self.candidate_gpus, n) * c.interval_s / 3600.0
        penalty = c.slo_penalty * (p95 > c.slo_latency_p95_ms)
        utility = (value - cost - penalty).reshape(n, m)
        best = utility.argmax(axis=1)
        target_tier = np.where(valid, self.candidate_tier[best], obs.tier)
        target_replicas = np.where(valid, self.candidate_replicas[best], obs.replicas)
        return target_tier.astype(np.int64), target_replicas.astype(np.int64)


class ReplayController:
    def __init__(self, name: str, target_tier: np.ndarray, target_replicas: np.ndarray) -> None:
        self.name = name
        self.target_tier = np.asarray(target_tier, dtype=np.int64)  # (n, T)
        self.target_replicas = np.asarray(target_replicas, dtype=np.int64)

    def reset(self, n: int) -> None:
        if self.target_tier.shape[0] != n:
            raise ValueError(f"{self.name} has plans for {self.target_tier.shape[0]} rows, got {n}")

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.target_tier[:, tick], self.target_replicas[:, tick]


class QLearningController:
    """The policy's own step over a batch; counts guards and explorations for the report."""

    def __init__(self, name: str, config: PolicyConfig, tables: TableState, *, learn: bool,
                 epsilon: float | np.ndarray | None = None, seed: int = 0, shared_table: bool = False) -> None:
        self.name = name
        self.config = config
        self.initial_tables = tables
        self.learn = learn
        self.epsilon = epsilon
        self.seed = seed
        self.shared_table = shared_table

    def reset(self, n: int) -> None:
        if self.shared_table:
            self.tables = self.initial_tables.copy()
            table_index = np.zeros(n, dtype=np.int64)
        else:
            if self.initial_tables.q.shape[0] != 1:
                raise ValueError(f"{self.name}: give one table to copy per row, got {self.initial_tables.q.shape[0]}")
            self.tables = TableState(
                q=np.repeat(self.initial_tables.q, n, axis=0),
                visits=np.repeat(self.initial_tables.visits, n, axis=0),
                updates=np.repeat(self.initial_tables.updates, n),
            )
            table_index = np.arange(n)
        self.control = ControlState.initial(n, table_index)
        self.rng = np.random.default_rng(self.seed)
        self.counts = {"guard": np.zeros(n, dtype=np.int64), "explore": np.zeros(n, dtype=np.int64),
                       "rollback": np.zeros(n, dtype=np.int64), "guard_blocked": np.zeros(n, dtype=np.int64),
                       "metrics_hold": np.zeros(n, dtype=np.int64)}

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        decision = self.step(obs, tick)
        return decision.target_tier, decision.target_replicas

    def step(self, obs: BatchObservation, tick: int) -> BatchDecision:
        """Run the policy's step on these rows and count its overrides."""
        n = obs.at_s.shape[0]
        uniforms = self.rng.random((n, 2))
        epsilon = self.epsilon
        if callable(epsilon):
            epsilon = epsilon(tick)
        decision, self.tables, self.control = step_batch(
            self.config, self.tables, self.control, obs, uniforms, learn=self.learn, epsilon=epsilon, inplace=True
        )
        self.counts["guard"] += decision.source == Source.GUARD
        self.counts["explore"] += decision.source == Source.EXPLORE
        self.counts["metrics_hold"] += decision.source == Source.METRICS_HOLD
        self.counts["rollback"] += decision.guard == Guard.ROLLBACK_TIER
        self.counts["guard_blocked"] += decision.guard == Guard.SLO_BREACH_BLOCKED
        return decision
