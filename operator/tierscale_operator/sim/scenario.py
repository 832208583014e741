"""The simulated deployment that pretraining and the benchmark share.

Economics are assumptions, stated here once: a GPU-hour costs 2.5 (about an on-demand cloud GPU in
US dollars), a click is worth 0.0008, and every interval whose p95 breaks the 50 ms SLO costs 1.0.
With the measured profile the larger tiers earn up to 7.6 % more clicks per request and need up
to 20 % more replicas; the benchmark's oracle serves the large tier 82 % of the time.
"""

from __future__ import annotations

import dataclasses

from tierscale_operator.policy.config import PolicyConfig, TierSpec
from tierscale_operator.sim.clicks import ClickModel
from tierscale_operator.sim.env import ClusterConfig, ClusterEnv
from tierscale_operator.sim.movielens import rating_timestamps
from tierscale_operator.sim.profile import ServiceProfile, load_profile
from tierscale_operator.sim.traffic import TrafficConfig, WeeklyShape, train_test_shapes


@dataclasses.dataclass(frozen=True)
class Scenario:
    profile: ServiceProfile
    policy: PolicyConfig
    cluster: ClusterConfig
    traffic: TrafficConfig
    click_scale: float = 0.5
    hour_amplitude: float = 0.2
    peak_hour: float = 21.0

    def click_model(self) -> ClickModel:
        return ClickModel.from_profile(self.profile, click_scale=self.click_scale, hour_amplitude=self.hour_amplitude,
                                       peak_hour=self.peak_hour)

    def env(self) -> ClusterEnv:
        return ClusterEnv(self.profile, self.click_model(), self.cluster)


def default_policy_config(profile: ServiceProfile, **overrides: object) -> PolicyConfig:
    values: dict[str, object] = {
        "tiers": tuple(TierSpec(t.name, t.gpus_per_replica) for t in profile.tiers),
        "min_replicas": 1,
        "max_replicas": 8,
        "gpu_budget": 8,
        "slo_latency_p95_ms": 50.0,
        "click_value": 0.0008,
        "gpu_hour_cost": 2.5,
        "slo_penalty": 1.0,
        "interval_s": 30.0,
        "cooldown_s": 60.0,
        # Online, each entry averages its samples until the rate falls to 0.01. A constant 0.1
        # lets sampling noise flip near-tied actions, which flaps between tiers (docs/policy.md).
        "learning_rate": 0.01,
        "learning_rate_schedule": "visit-averaged",
        "discount": 0.9,
        "epsilon": 0.05,
        "epsilon_min": 0.01,
        "epsilon_decay": 0.9999,
    }
    values.update(overrides)
    return PolicyConfig(**values)  # type: ignore[arg-type]


def default_scenario(profile_path: str | None = None, **traffic_overrides: object) -> Scenario:
    profile = load_profile(profile_path)
    policy = default_policy_config(profile)
    traffic = TrafficConfig(interval_s=policy.interval_s, **traffic_overrides)  # type: ignore[arg-type]
    cluster = ClusterConfig(gpu_capacity=8, interval_s=policy.interval_s)
    return Scenario(profile=profile, policy=policy, cluster=cluster, traffic=traffic)


def movielens_shapes() -> tuple[WeeklyShape, WeeklyShape]:
    """Training and test traffic shapes from the MovieLens-100K timestamps (downloads once)."""
    return train_test_shapes(rating_timestamps())
