"""A vectorised model of one recommender deployment on a GPU cluster, one row per environment.

Per control interval the environment applies the controllers' targets (tier, replicas), serves the
interval's arrivals with the ready replicas, and advances pod start-up and tier rollouts.

Pods and GPUs:
- A new pod needs `gpus_per_replica` GPUs. While the cluster has too few free GPUs it stays
  Pending (not billed), and it is scheduled as soon as GPUs free up.
- A scheduled pod starts (billed, not serving) for `warmup_intervals` = ceil(warmup_s / interval_s)
  intervals, then serves. Pods added while others start restart the shared countdown.
- Scaling down removes Pending pods first, then starting ones, then ready ones, at once.
- A tier switch is a rollout: the old tier keeps serving while new pods start, in waves of as many
  new pods as the free GPUs allow (each wave one warm-up long); with no free GPU, one old pod is
  taken down first, so capacity drops by one replica for the rollout. When the last wave is ready
  the new tier serves with the target count. Targets are ignored while a rollout runs.
  NOTE: pods of a finished wave do not serve before the whole rollout ends, which understates
  capacity during multi-wave rollouts.

Observations follow `tierscale_operator.policy.core.BatchObservation`: metrics describe the
interval just served. p95 carries lognormal noise, because a histogram estimate is noisy. The CTR
is sampled clicks per request received, divided by the known hour-of-day factor, which is what an
ideal confounder adjustment returns. With a small probability, metrics are missing altogether.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tierscale_operator.policy.core import BatchObservation
from tierscale_operator.sim.clicks import ClickModel
from tierscale_operator.sim.profile import ServiceProfile
from tierscale_operator.sim.queueing import LatencyModel


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    gpu_capacity: int = 8
    interval_s: float = 30.0
    warmup_s: float | None = None  # None: the profile's warmup_s
    max_pods: int = 16  # largest replica count the latency table covers
    timeout_ms: float = 2000.0
    latency_noise_sigma: float = 0.05
    metrics_missing_probability: float = 0.002


@dataclasses.dataclass
class EnvState:
    """Pods of every environment; all fields int64 arrays of shape (n,)."""

    tier: np.ndarray
    ready: np.ndarray
    starting: np.ndarray
    start_left: np.ndarray
    pending: np.ndarray
    roll_tier: np.ndarray  # -1 when no rollout runs
    roll_replicas: np.ndarray
    roll_left: np.ndarray
    roll_gpus: np.ndarray

    @classmethod
    def settled(cls, tier: np.ndarray, replicas: np.ndarray) -> EnvState:
        tier = np.asarray(tier, dtype=np.int64).copy()
        zeros = np.zeros_like(tier)
        return cls(tier=tier, ready=np.asarray(replicas, dtype=np.int64).copy(), starting=zeros.copy(),
                   start_left=zeros.copy(), pending=zeros.copy(), roll_tier=np.full_like(tier, -1),
                   roll_replicas=zeros.copy(), roll_left=zeros.copy(), roll_gpus=zeros.copy())

    def copy(self) -> EnvState:
        return EnvState(**{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)})

    def as_matrix(self) -> np.ndarray:
        """Fields stacked as columns, shape (n, 9); used as hashable keys by the oracle."""
        return np.stack([getattr(self, f.name) for f in dataclasses.fields(self)], axis=1)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> EnvState:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: matrix[:, i].astype(np.int64).copy() for i, name in enumerate(names)})


@dataclasses.dataclass
class IntervalResult:
    """The outcome of one interval, per environment."""

    tier: np.ndarray  # tier that served
    ready: np.ndarray  # replicas that served
    gpus: np.ndarray  # GPUs billed
    arrival_rps: np.ndarray
    served_rps: np.ndarray
    latency_p95_ms: np.ndarray  # model value, used for accounting
    expected_clicks: np.ndarray


class ClusterEnv:
    """Environment dynamics shared by every controller and by the oracle."""

    def __init__(self, profile: ServiceProfile, clicks: ClickModel, config: ClusterConfig) -> None:
        self.profile = profile
        self.clicks = clicks
        self.config = config
        self.gpus_per_replica = np.array([t.gpus_per_replica for t in profile.tiers], dtype=np.int64)
        warmup_s = profile.warmup_s if config.warmup_s is None else config.warmup_s
        self.warmup_intervals = int(math.ceil(warmup_s / config.interval_s - 1e-9))
        self.latency = LatencyModel(profile, config.max_pods, timeout_ms=config.timeout_ms)

    # Pods ------------------------------------------------------------------------------------

    def used_gpus(self, state: EnvState) -> np.ndarray:
        return (state.ready + state.starting) * self.gpus_per_replica[state.tier] + state.roll_gpus

    def desired_replicas(self, state: EnvState) -> np.ndarray:
        rolling = state.roll_tier >= 0
        return np.where(rolling, state.roll_replicas, state.ready + state.starting + state.pending)

    def apply(self, state: EnvState, target_tier: np.ndarray, target_replicas: np.ndarray) -> EnvState:
        """Apply targets at the start of an interval and schedule Pending pods; returns a new state."""
        state = state.copy()
        target_tier = np.asarray(target_tier, dtype=np.int64)
        target = np.clip(np.asarray(target_replicas, dtype=np.int64), 0, self.config.max_pods)
        idle = state.roll_tier < 0

        same = idle & (target_tier == state.tier)
        self._resize(state, same, target)
        switch = idle & (target_tier != state.tier)
        if switch.any():
            self._start_rollout(state, switch, target_tier, target)
        self._schedule(state)
        return state

    def _resize(self, state: EnvState, rows: np.ndarray, target: np.ndarray) -> None:
        total = state.ready + state.starting + state.pending
        remove = np.where(rows, np.maximum(total - target, 0), 0)
        from_pending = np.minimum(remove, state.pending)
        remove -= from_pending
        from_starting = np.minimum(remove, state.starting)
        remove -= from_starting
        state.pending -= from_pending
        state.starting -= from_starting
        state.ready -= np.minimum(remove, state.ready)
        state.start_left = np.where(state.starting > 0, state.start_left, 0)
        state.pending += np.where(rows, np.maximum(target - total, 0), 0)

    def _start_rollout(self, state: EnvState, rows: np.ndarray, target_tier: np.ndarray, target: np.ndarray) -> None:
        state.pending = np.where(rows, 0, state.pending)
        state.starting = np.where(rows, 0, state.starting)
        state.start_left = np.where(rows, 0, state.start_left)
        new_tier = np.clip(target_tier, 0, len(self.profile.tiers) - 1)
        gpus_new = self.gpus_per_replica[new_tier]
        free = self.config.gpu_capacity - state.ready * self.gpus_per_replica[state.tier]
        wave = np.minimum(target, np.maximum(free, 0) // gpus_new)
        no_room = rows & (wave == 0) & (target > 0)
        wave = np.where(no_room, 1, wave)
        state.ready = np.where(no_room, np.maximum(state.ready - 1, 0), state.ready)
        waves = np.where(wave > 0, -(-target // np.maximum(wave, 1)), 1)

        state.roll_tier = np.where(rows, new_tier, state.roll_tier)
        state.roll_replicas = np.where(rows, target, state.roll_replicas)
        state.roll_left = np.where(rows, np.maximum(self.warmup_intervals * waves, 1), state.roll_left)
        state.roll_gpus = np.where(rows, wave * gpus_new, state.roll_gpus)

    def _schedule(self, state: EnvState) -> None:
        idle = state.roll_tier < 0
        gpus = self.gpus_per_replica[state.tier]
        free = np.maximum(self.config.gpu_capacity - self.used_gpus(state), 0)
        scheduled = np.where(idle, np.minimum(state.pending, free // gpus), 0)
        state.pending -= scheduled
        if self.warmup_intervals == 0:
            state.ready += scheduled
            return
        state.starting += scheduled
        state.start_left = np.where(scheduled > 0, self.warmup_intervals, state.start_left)

    def advance(self, state: EnvState) -> EnvState:
        """Move pod start-up and rollouts on by one interval; returns a new state."""
        state = state.copy()
        starting = state.starting > 0
        state.start_left = np.where(starting, state.start_left - 1, state.start_left)
        done = starting & (state.start_left <= 0)
        state.ready = np.where(done, state.ready + state.starting, state.ready)
        state.starting = np.where(done, 0, state.starting)
        state.start_left = np.where(done, 0, state.start_left)

        rolling = state.roll_tier >= 0
        state.roll_left = np.where(rolling, state.roll_left - 1, state.roll_left)
        finished = rolling & (state.roll_left <= 0)
        state.tier = np.where(finished, state.roll_tier, state.tier)
        state.ready = np.where(finished, state.roll_replicas, state.ready)
        state.roll_tier = np.where(finished, -1, state.roll_tier)
        state.roll_replicas = np.where(finished, 0, state.roll_replicas)
        state.roll_left = np.where(finished, 0, state.roll_left)
        state.roll_gpus = np.where(finished, 0, state.roll_gpus)
        self._schedule(state)
        return state

    # Serving ---------------------------------------------------------------------------------

    def serve(self, state: EnvState, arrival_rps: np.ndarray, hour_of_day: np.ndarray) -> IntervalResult:
        """Serve one interval with the ready replicas of `state` (after `apply`)."""
        p95, served = self.latency.evaluate(state.tier, state.ready, arrival_rps)
        expected_clicks = served * self.config.interval_s * self.clicks.ctr(state.tier, hour_of_day)
        return IntervalResult(
            tier=state.tier.copy(),
            ready=state.ready.copy(),
            gpus=self.used_gpus(state),
            arrival_rps=np.asarray(arrival_rps, dtype=np.float64),
            served_rps=served,
            latency_p95_ms=p95,
            expected_clicks=expected_clicks,
        )

    def observe(self, state: EnvState, result: IntervalResult, hour_of_day: np.ndarray, at_s: float,
                rng: np.random.Generator) -> BatchObservation:
        """Build the observation of the tick after `result`'s interval; `state` is after `advance`."""
        n = state.tier.shape[0]
        noise = np.exp(rng.normal(0.0, self.config.latency_noise_sigma, size=n))
        p95 = np.minimum(result.latency_p95_ms * noise, self.config.timeout_ms)

        # Clicks per request received: requests that timed out were shown nothing and earn none.
        served = np.round(result.served_rps * self.config.interval_s).astype(np.int64)
        received = np.round(result.arrival_rps * self.config.interval_s)
        probability = np.clip(self.clicks.ctr(result.tier, hour_of_day), 0.0, 1.0)
        clicks = rng.binomial(served, probability)
        ctr_observed = np.divide(clicks, received, out=np.zeros(n), where=received > 0)
        ctr_adjusted = ctr_observed / self.clicks.hour_factor(hour_of_day)

        missing = rng.random(n) < self.config.metrics_missing_probability
        rps = np.where(missing, np.nan, result.arrival_rps)
        return BatchObservation(
            at_s=np.full(n, at_s),
            metrics_age_s=np.zeros(n),
            requests_per_second=rps,
            latency_p95_ms=np.where(missing, np.nan, p95),
            ctr_adjusted=np.where(missing, np.nan, ctr_adjusted),
            tier=state.tier.copy(),
            replicas=self.desired_replicas(state),
            ready_replicas=state.ready.copy(),
            pending_replicas=state.pending.copy(),
            tier_rollout=state.roll_tier >= 0,
            gpus_allocated=result.gpus.copy(),
            gpus_free=np.maximum(self.config.gpu_capacity - self.used_gpus(state), 0),
        )
