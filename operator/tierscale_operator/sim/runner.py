"""Run controllers against the simulated cluster, side by side in one batch, and score them.

All controllers share one `ClusterEnv` batch: each owns a block of rows, and every row plays the
trace assigned to it. Scores use the model's values, not the noisy observations:

    utility = click_value x expected clicks - gpu_hour_cost x GPU-hours - slo_penalty x violating intervals

where expected clicks = served requests x CTR(tier, hour) and an interval violates the SLO when the
model's p95 exceeds it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.sim.controllers import Controller, slice_observation
from tierscale_operator.sim.env import ClusterEnv, EnvState
from tierscale_operator.sim.traffic import Trace


@dataclasses.dataclass
class Scores:
    """Totals per row over a run."""

    intervals: int
    interval_s: float
    click_value: np.ndarray
    gpu_cost: np.ndarray
    slo_penalty: np.ndarray
    gpu_hours: np.ndarray
    violations: np.ndarray
    requests: np.ndarray
    served: np.ndarray
    expected_clicks: np.ndarray
    scale_changes: np.ndarray
    tier_changes: np.ndarray
    tier_intervals: np.ndarray  # (n, n_tiers)

    @classmethod
    def zeros(cls, n: int, n_tiers: int, interval_s: float) -> Scores:
        z = lambda: np.zeros(n)  # noqa: E731
        return cls(0, interval_s, z(), z(), z(), z(), z(), z(), z(), z(), z(), z(), np.zeros((n, n_tiers)))

    @property
    def utility(self) -> np.ndarray:
        return self.click_value - self.gpu_cost - self.slo_penalty

    @property
    def days(self) -> float:
        return self.intervals * self.interval_s / 86400.0

    def rows(self, rows: slice) -> Scores:
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values[field.name] = value[rows] if isinstance(value, np.ndarray) else value
        return Scores(**values)

    def summary(self, tier_names: tuple[str, ...]) -> dict[str, Any]:
        """Means over the rows, as plain numbers for the report."""
        days = self.days
        return {
            "utility": float(self.utility.mean()),
            "utility_per_day": float(self.utility.mean() / days),
            "click_value": float(self.click_value.mean()),
            "gpu_cost": float(self.gpu_cost.mean()),
            "slo_penalty": float(self.slo_penalty.mean()),
            "gpu_hours": float(self.gpu_hours.mean()),
            "gpu_hours_per_day": float(self.gpu_hours.mean() / days),
            "slo_violation_share": float(self.violations.mean() / self.intervals),
            "mean_ctr": float((self.expected_clicks / np.maximum(self.served, 1)).mean()),
            "served_share": float((self.served / np.maximum(self.requests, 1)).mean()),
            "scale_changes_per_day": float(self.scale_changes.mean() / days),
            "tier_changes_per_day": float(self.tier_changes.mean() / days),
            "tier_share": {name: float(self.tier_intervals[:, i].mean() / self.intervals)
                           for i, name in enumerate(tier_names)},
        }


@dataclasses.dataclass
class Recording:
    """Per-tick series of one row, for plots."""

    tier: list[int] = dataclasses.field(default_factory=list)
    ready: list[int] = dataclasses.field(default_factory=list)
    gpus: list[int] = dataclasses.field(default_factory=list)
    arrival_rps: list[float] = dataclasses.field(default_factory=list)
    latency_p95_ms: list[float] = dataclasses.field(default_factory=list)
    utility: list[float] = dataclasses.field(default_factory=list)


def run(
    env: ClusterEnv,
    config: PolicyConfig,
    traces: list[Trace],
    controllers: list[tuple[Controller, list[int]]],
    *,
    initial_tier: int | np.ndarray,
    initial_replicas: int | np.ndarray,
    seed: int,
    record_rows: tuple[int, ...] = (),
    ticks: int | None = None,
) -> tuple[Scores, dict[int, Recording]]:
    """Run every controller on the rows it owns; `controllers` pairs a controller with trace indices.

    Row r of the batch plays traces[trace_index[r]]; controllers own consecutive blocks of rows in
    the order given. Every row starts settled at (initial_tier, initial_replicas), scalars or one
    value per row. Returns the scores per row and the recordings of `record_rows`.
    """
    trace_of_row = np.array([i for _, indices in controllers for i in indices], dtype=np.int64)
    n = trace_of_row.shape[0]
    lengths = {trace.n_intervals for trace in traces}
    if len(lengths) != 1:
        raise ValueError(f"traces must have the same length, got {sorted(lengths)}")
    total = lengths.pop() if ticks is None else ticks
    arrivals = np.stack([trace.arrival_rps for trace in traces])[trace_of_row]
    hours = np.stack([trace.hour_of_day for trace in traces])[trace_of_row]

    blocks = []
    start = 0
    for controller, indices in controllers:
        controller.reset(len(indices))
        blocks.append((controller, slice(start, start + len(indices))))
        start += len(indices)

    rng = np.random.default_rng(seed)
    state = EnvState.settled(np.broadcast_to(initial_tier, (n,)), np.broadcast_to(initial_replicas, (n,)))
    result = env.serve(state, arrivals[:, 0], hours[:, 0])
    state = env.advance(state)
    obs = env.observe(state, result, hours[:, 0], 0.0, rng)

    scores = Scores.zeros(n, len(env.profile.tiers), config.interval_s)
    recordings = {row: Recording() for row in record_rows}
    target_tier = np.empty(n, dtype=np.int64)
    target_replicas = np.empty(n, dtype=np.int64)
    interval_h = config.interval_s / 3600.0
    for tick in range(total):
        for controller, rows in blocks:
            target_tier[rows], target_replicas[rows] = controller.act(slice_observation(obs, rows), tick, hours[rows, tick])

        rolling_before = state.roll_tier >= 0
        desired_before = env.desired_replicas(state)
        state = env.apply(state, target_tier, target_replicas)
        tier_change = ~rolling_before & (state.roll_tier >= 0)
        scale_change = ~rolling_before & ~tier_change & (env.desired_replicas(state) != desired_before)

        result = env.serve(state, arrivals[:, tick], hours[:, tick])
        utility = _accumulate(scores, config, result, interval_h, tier_change, scale_change)
        for row, recording in recordings.items():
            recording.tier.append(int(result.tier[row]))
            recording.ready.append(int(result.ready[row]))
            recording.gpus.append(int(result.gpus[row]))
            recording.arrival_rps.append(float(result.arrival_rps[row]))
            recording.latency_p95_ms.append(float(result.latency_p95_ms[row]))
            recording.utility.append(float(utility[row]))

        state = env.advance(state)
        obs = env.observe(state, result, hours[:, tick], (tick + 1) * config.interval_s, rng)
    return scores, recordings


def _accumulate(scores: Scores, config: PolicyConfig, result: Any, interval_h: float, tier_change: np.ndarray,
                scale_change: np.ndarray) -> np.ndarray:
    """Add one interval to the totals; returns the interval's utility per row."""
    violation = result.latency_p95_ms > config.slo_latency_p95_ms
    click_value = config.click_value * result.expected_clicks
    gpu_cost = config.gpu_hour_cost * result.gpus * interval_h
    slo_penalty = config.slo_penalty * violation
    scores.intervals += 1
    scores.click_value += click_value
    scores.gpu_hours += result.gpus * interval_h
    scores.gpu_cost += gpu_cost
    scores.slo_penalty += slo_penalty
    scores.violations += violation
    scores.requests += result.arrival_rps * config.interval_s
    scores.served += result.served_rps * config.interval_s
    scores.expected_clicks += result.expected_clicks
    scores.scale_changes += scale_change
    scores.tier_changes += tier_change
    np.add.at(scores.tier_intervals, (np.arange(result.tier.shape[0]), result.tier), 1)
    return click_value - gpu_cost - slo_penalty
