"""Discretisation of observations into Q-table state indices.

The state is five features, each binned by `StateBins` (see its docstring for the bin rule):

- load per ready replica, in requests per second times `PolicyConfig.load_scale`;
- p95 latency divided by the SLO target;
- the current tier (its index, cheapest first);
- the desired replica count;
- the load trend: request rate now over the rate one interval earlier.

The index is row-major over (load, p95 ratio, tier, replicas, trend).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tierscale_operator.policy.config import PolicyConfig


@dataclasses.dataclass(frozen=True)
class StateFeatures:
    """The bins of one state, with the index they map to."""

    index: int
    load_bin: int
    latency_ratio_bin: int
    tier: int
    replicas_bin: int
    trend_bin: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _bin(edges: tuple[float, ...], values: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(np.int64)


def state_index(
    config: PolicyConfig,
    requests_per_second: np.ndarray,
    latency_p95_ms: np.ndarray,
    tier: np.ndarray,
    replicas: np.ndarray,
    ready_replicas: np.ndarray,
    previous_requests_per_second: np.ndarray,
) -> np.ndarray:
    """Map a batch of observations to state indices, shape (n,).

    Inputs must be finite where the result is used; callers mask invalid rows out. A missing or
    zero previous rate gives the flat trend bin.
    """
    bins = config.bins
    n_load, n_latency, n_tier, n_replicas, n_trend = config.bin_counts
    rps = np.asarray(requests_per_second, dtype=np.float64)

    load = rps * config.load_scale / np.maximum(np.asarray(ready_replicas, dtype=np.float64), 1.0)
    load_bin = _bin(bins.load_rps_per_replica, load)

    ratio = np.asarray(latency_p95_ms, dtype=np.float64) / config.slo_latency_p95_ms
    latency_bin = _bin(bins.latency_p95_ratio, ratio)

    tier_bin = np.clip(np.asarray(tier, dtype=np.int64), 0, n_tier - 1)
    replicas_bin = _bin(bins.replicas, np.asarray(replicas, dtype=np.float64))

    previous = np.asarray(previous_requests_per_second, dtype=np.float64)
    has_previous = np.isfinite(previous) & (previous > 0)
    trend = np.divide(rps, previous, out=np.ones_like(rps), where=has_previous)
    trend_bin = _bin(bins.load_trend, trend)

    index = load_bin
    index = index * n_latency + latency_bin
    index = index * n_tier + tier_bin
    index = index * n_replicas + replicas_bin
    index = index * n_trend + trend_bin
    return index


def decode_state(config: PolicyConfig, index: int) -> StateFeatures:
    """Split a state index back into its bins."""
    n_load, n_latency, n_tier, n_replicas, n_trend = config.bin_counts
    if not 0 <= index < config.n_states:
        raise ValueError(f"state index must be in [0, {config.n_states}), got {index}")
    rest, trend_bin = divmod(int(index), n_trend)
    rest, replicas_bin = divmod(rest, n_replicas)
    rest, tier = divmod(rest, n_tier)
    load_bin, latency_bin = divmod(rest, n_latency)
    return StateFeatures(
        index=int(index),
        load_bin=load_bin,
        latency_ratio_bin=latency_bin,
        tier=tier,
        replicas_bin=replicas_bin,
        trend_bin=trend_bin,
    )
