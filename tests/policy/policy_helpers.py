"""Observation builders and a fake clock shared by the policy tests."""

from __future__ import annotations

import dataclasses

from tierscale_operator.policy import Observation


class FakeClock:
    """Ticks of the control interval; `now_s` starts at a fixed epoch-like value."""

    def __init__(self, interval_s: float = 30.0, start_s: float = 1_700_000_000.0) -> None:
        self.interval_s = interval_s
        self.now_s = start_s

    def tick(self) -> float:
        self.now_s += self.interval_s
        return self.now_s


def observe(at_s: float, **changes: object) -> Observation:
    """A settled, healthy observation of 2 small replicas at 100 rps; keyword arguments override fields."""
    values: dict[str, object] = {
        "at_s": at_s,
        "tier": "small",
        "replicas": 2,
        "ready_replicas": 2,
        "gpus_allocated": 2,
        "requests_per_second": 100.0,
        "latency_p95_ms": 20.0,
        "ctr_adjusted": 0.04,
        "metrics_at_s": at_s,
    }
    values.update(changes)
    return Observation(**values)  # type: ignore[arg-type]


def follow(observation: Observation, decision: object, at_s: float, **changes: object) -> Observation:
    """The next observation after a decision was applied, with pods ready at once unless overridden."""
    values = dataclasses.asdict(observation)
    values.update(
        at_s=at_s,
        metrics_at_s=at_s,
        tier=decision.target_tier,  # type: ignore[attr-defined]
        replicas=decision.target_replicas,  # type: ignore[attr-defined]
        ready_replicas=decision.target_replicas,  # type: ignore[attr-defined]
    )
    values.update(changes)
    return Observation(**values)  # type: ignore[arg-type]
