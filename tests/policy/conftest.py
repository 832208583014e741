"""Fixtures for the policy and simulator tests: a small config and a fake clock."""

from __future__ import annotations

import pytest

from policy_helpers import FakeClock

from tierscale_operator.policy import PolicyConfig, TierSpec


@pytest.fixture
def config() -> PolicyConfig:
    return PolicyConfig(
        tiers=(TierSpec("small"), TierSpec("medium"), TierSpec("large", gpus_per_replica=2)),
        min_replicas=1,
        max_replicas=4,
        gpu_budget=6,
        slo_latency_p95_ms=50.0,
        click_value=0.001,
        gpu_hour_cost=2.0,
        slo_penalty=1.0,
        interval_s=30.0,
        cooldown_s=60.0,
        epsilon=0.0,
        epsilon_min=0.0,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
