"""p95 latency per tier from an M/G/c queue, precomputed into a lookup table.

Model: the ready replicas of a tier form one M/G/c queue with c = replicas x servers_per_replica,
Poisson arrivals and lognormal service times with the profile's mean and coefficient of variation.
The waiting time uses the Allen-Cunneen approximation: a request waits with the Erlang C probability
P_wait(c, a), and the wait, when positive, is exponential with mean k / (c mu - lambda) where
k = (1 + cv^2) / 2. Response time is wait plus service, and its 95th percentile is solved
numerically over a quantile grid of the service time.

One shared queue is optimistic for a Kubernetes Service, which spreads connections at random over
pods. Random splitting behaves like c separate M/G/1 queues, which wait longer at the same load.

Utilisation at or above `max_utilisation` (default 0.98) counts as overload: the replicas serve at
their capacity, the rest of the requests time out, and p95 is the timeout.
"""

from __future__ import annotations

import statistics

import numpy as np

from tierscale_operator.sim.profile import ServiceProfile

_SERVICE_QUANTILES = 200
_BISECTION_STEPS = 50


def erlang_c(servers: np.ndarray, offered_load: np.ndarray) -> np.ndarray:
    """Probability of waiting in an M/M/c queue with `offered_load` = lambda / mu (needs a < c)."""
    servers = np.asarray(servers, dtype=np.int64)
    offered_load = np.asarray(offered_load, dtype=np.float64)
    servers, offered_load = np.broadcast_arrays(servers, offered_load)
    erlang_b = np.ones(offered_load.shape)
    for k in range(1, int(servers.max()) + 1):
        update = offered_load * erlang_b / (k + offered_load * erlang_b)
        erlang_b = np.where(k <= servers, update, erlang_b)
    utilisation = offered_load / servers
    return erlang_b / (1.0 - utilisation * (1.0 - erlang_b))


def lognormal_quantiles(mean: float, cv: float, count: int = _SERVICE_QUANTILES) -> np.ndarray:
    """Midpoint quantiles of a lognormal with the given mean and coefficient of variation."""
    if cv == 0:
        return np.full(count, mean)
    sigma2 = np.log1p(cv**2)
    mu = np.log(mean) - 0.5 * sigma2
    normal = statistics.NormalDist()
    z = np.array([normal.inv_cdf((i + 0.5) / count) for i in range(count)])
    return np.exp(mu + np.sqrt(sigma2) * z)


def response_p95_ms(service_ms: np.ndarray, cv: float, servers: np.ndarray, utilisation: np.ndarray) -> np.ndarray:
    """p95 of response time (ms) for M/G/c at the given utilisation (< 1), by bisection."""
    servers = np.asarray(servers, dtype=np.int64)
    utilisation = np.asarray(utilisation, dtype=np.float64)
    mean_ms = float(np.mean(service_ms))
    p_wait = erlang_c(servers, servers * utilisation)
    k = 0.5 * (1.0 + cv**2)
    # Rate of the exponential wait, per ms: (c mu - lambda) / k with mu = 1 / mean.
    theta = servers * (1.0 - utilisation) / (mean_ms * k)

    def tail(t: np.ndarray) -> np.ndarray:
        gap = t[..., None] - service_ms
        waiting = p_wait[..., None] * np.exp(-theta[..., None] * np.maximum(gap, 0.0))
        return np.where(gap < 0, 1.0, waiting).mean(axis=-1)

    low = np.zeros(utilisation.shape)
    high = np.full(utilisation.shape, float(service_ms.max()))
    high = high + np.where(p_wait > 0, np.log(np.maximum(p_wait, 1e-300) / 0.05) / theta, 0.0).clip(min=0.0)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        above = tail(middle) > 0.05
        low = np.where(above, middle, low)
        high = np.where(above, high, middle)
    return high


class LatencyModel:
    """Vectorised p95 latency and throughput per (tier, ready replicas, arrival rate)."""

    def __init__(self, profile: ServiceProfile, max_replicas: int, *, timeout_ms: float = 2000.0,
                 max_utilisation: float = 0.98, grid_points: int = 240) -> None:
        self.profile = profile
        self.max_replicas = max_replicas
        self.timeout_ms = timeout_ms
        self.max_utilisation = max_utilisation
        n_tiers = len(profile.tiers)
        self.capacity_rps = np.array([t.capacity_rps_per_replica for t in profile.tiers])
        self.servers_per_replica = np.array([t.servers_per_replica for t in profile.tiers])
        # Utilisation grid, denser near saturation where p95 bends upwards.
        self.grid = max_utilisation * (1.0 - np.geomspace(1.0, 1e-3, grid_points)) / (1.0 - 1e-3)
        self.table = np.empty((n_tiers, max_replicas + 1, grid_points))
        for i, tier in enumerate(profile.tiers):
            service = lognormal_quantiles(tier.service_ms_mean, tier.service_ms_cv)
            replicas = np.arange(1, max_replicas + 1)
            servers = replicas[:, None] * tier.servers_per_replica
            utilisation = np.broadcast_to(self.grid, (max_replicas, grid_points))
            self.table[i, 1:] = response_p95_ms(service, tier.service_ms_cv, np.broadcast_to(servers, utilisation.shape),
                                                utilisation)
            self.table[i, 0] = timeout_ms
        np.minimum(self.table, timeout_ms, out=self.table)

    def evaluate(self, tier: np.ndarray, replicas: np.ndarray, arrival_rps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (p95 in ms, served requests per second) for each row."""
        tier = np.asarray(tier, dtype=np.int64)
        replicas = np.clip(np.asarray(replicas, dtype=np.int64), 0, self.max_replicas)
        arrival_rps = np.asarray(arrival_rps, dtype=np.float64)
        capacity = replicas * self.capacity_rps[tier]
        utilisation = np.divide(arrival_rps, capacity, out=np.full(arrival_rps.shape, np.inf), where=capacity > 0)

        position = np.interp(utilisation, self.grid, np.arange(self.grid.shape[0]))
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, self.grid.shape[0] - 1)
        fraction = position - low
        p95 = self.table[tier, replicas, low] * (1.0 - fraction) + self.table[tier, replicas, high] * fraction

        overload = utilisation >= self.max_utilisation
        p95 = np.where(overload, self.timeout_ms, p95)
        served = np.where(overload, capacity * self.max_utilisation, arrival_rps)
        served = np.where(arrival_rps <= 0, 0.0, served)
        return p95, served
