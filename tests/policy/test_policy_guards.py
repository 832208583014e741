"""Guardrails override the table and report it in the decision."""

from __future__ import annotations

from policy_helpers import follow, observe

from tierscale_operator.policy import Action, PolicyState, decide


def breach_twice(config, clock, state, **fields):
    first, state = decide(config, state, observe(clock.tick(), latency_p95_ms=80.0, **fields))
    second, state = decide(config, state, observe(clock.tick(), latency_p95_ms=80.0, **fields))
    return first, second, state


def test_sustained_breach_forces_scale_up(config, clock):
    state = PolicyState.initial(config)
    state.q[:, Action.SCALE_DOWN] = 10.0  # the table would scale down

    first, second, state = breach_twice(config, clock, state)

    assert first.guard is None
    assert second.action == Action.SCALE_UP
    assert second.source == "guard"
    assert second.guard == "slo-breach-scale-up"
    assert second.propensity == 1.0
    assert second.reason.startswith("scale-up: guard, p95 above the SLO of 50 ms")
    assert state.breach_streak == 0


def test_breach_at_max_replicas_forces_tier_down(config, clock):
    state = PolicyState.initial(config)

    _, second, _ = breach_twice(config, clock, state, tier="medium", replicas=4, ready_replicas=4,
                                gpus_allocated=4)

    assert second.action == Action.TIER_DOWN
    assert second.guard == "slo-breach-tier-down"
    assert second.target_tier == "small"
    assert second.target_replicas == 4


def test_blocked_guard_reports_insufficient_gpus(config, clock):
    state = PolicyState.initial(config)

    _, second, _ = breach_twice(config, clock, state, replicas=3, ready_replicas=2, pending_replicas=1)

    assert second.action == Action.HOLD
    assert second.guard == "slo-breach-blocked"
    assert second.scale_up_blocked_by_gpus
    assert "pods are Pending (insufficient GPUs)" in second.reason
    assert second.masked["scale-up"] == "pods are Pending (insufficient GPUs)"


def test_guard_waits_while_new_replicas_start(config, clock):
    state = PolicyState.initial(config)

    _, second, _ = breach_twice(config, clock, state, replicas=3, ready_replicas=2)

    assert second.action == Action.HOLD
    assert second.guard == "slo-breach-blocked"
    assert not second.scale_up_blocked_by_gpus
    assert "rollout unfinished" in second.reason


def test_tier_switch_that_breaks_slo_is_rolled_back(config, clock):
    state = PolicyState.initial(config)
    state.q[:, Action.TIER_UP] = 1.0
    before = observe(clock.tick())
    decision, state = decide(config, state, before)
    assert decision.action == Action.TIER_UP

    rolling = follow(before, decision, clock.tick(), tier="small", tier_rollout=True)
    decision, state = decide(config, state, rolling)
    assert decision.action == Action.HOLD

    switched = follow(rolling, decision, clock.tick(), tier="medium", tier_rollout=False, latency_p95_ms=70.0)
    decision, state = decide(config, state, switched)
    assert decision.guard is None  # the interval before this tick still ran the rollout

    decision, state = decide(config, state, follow(switched, decision, clock.tick()))
    assert decision.action == Action.TIER_DOWN
    assert decision.guard == "rollback-tier-switch"
    assert decision.target_tier == "small"
    assert "rolled back the last tier switch" in decision.reason
    assert state.switch_from_tier == -1


def test_tier_switch_keeping_slo_is_not_rolled_back(config, clock):
    state = PolicyState.initial(config)
    state.q[:, Action.TIER_UP] = 1.0
    before = observe(clock.tick())
    decision, state = decide(config, state, before)
    assert decision.action == Action.TIER_UP
    state.q[:, Action.TIER_UP] = 0.0  # one switch only

    switched = follow(before, decision, clock.tick())
    for _ in range(3):
        decision, state = decide(config, state, switched)
        switched = follow(switched, decision, clock.tick())

    assert decision.guard is None
    assert state.switch_from_tier == -1
