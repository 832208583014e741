from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_helpers import observe

from tierscale_operator.policy import Action, MaskReason, PolicyState, decide
from tierscale_operator.policy.actions import (
    apply_action,
    cluster_mask_reasons,
    describe_mask_reasons,
    structural_mask_reasons,
    timer_mask_reasons,
)


def reasons_for(config, tier, replicas):
    return structural_mask_reasons(config, np.array([tier]), np.array([replicas]))[0]


@pytest.mark.parametrize(
    ("tier", "replicas", "action", "reason"),
    [
        (0, 1, Action.SCALE_DOWN, MaskReason.MIN_REPLICAS),
        (0, 4, Action.SCALE_UP, MaskReason.MAX_REPLICAS),
        (2, 3, Action.SCALE_UP, MaskReason.GPU_BUDGET),  # 4 x 2 GPUs > budget 6
        (1, 4, Action.TIER_UP, MaskReason.GPU_BUDGET),  # 4 x 2 GPUs > budget 6
        (0, 2, Action.TIER_DOWN, MaskReason.NO_SUCH_TIER),
        (2, 1, Action.TIER_UP, MaskReason.NO_SUCH_TIER),
    ],
)
def test_structural_mask_blocks_action(config, tier, replicas, action, reason):
    assert reasons_for(config, tier, replicas)[action] & reason


@pytest.mark.parametrize(("tier", "replicas"), [(0, 2), (1, 3), (2, 2)])
def test_structural_mask_allows_actions_within_bounds(config, tier, replicas):
    reasons = reasons_for(config, tier, replicas)

    assert reasons[Action.HOLD] == 0
    assert reasons[Action.SCALE_DOWN] == 0
    assert reasons[Action.SCALE_UP] == 0 or (tier == 2 and replicas == 3)


def test_pending_pods_block_growth_only(config):
    reasons = cluster_mask_reasons(config, np.array([0]), np.array([1]), np.array([-1]))[0]

    assert reasons[Action.SCALE_UP] == MaskReason.PENDING_PODS
    assert reasons[Action.TIER_UP] == MaskReason.PENDING_PODS
    assert reasons[Action.SCALE_DOWN] == 0
    assert reasons[Action.TIER_DOWN] == 0


def test_free_gpu_count_blocks_scale_up(config):
    reasons = cluster_mask_reasons(config, np.array([2, 2]), np.array([0, 0]), np.array([1, 2]))

    assert reasons[0, Action.SCALE_UP] == MaskReason.NO_FREE_GPUS  # large needs 2 GPUs
    assert reasons[1, Action.SCALE_UP] == 0


def test_timers_mask_every_change_but_hold():
    reasons = timer_mask_reasons(np.array([False, True]), np.array([True, False]))

    for action in (Action.SCALE_DOWN, Action.SCALE_UP, Action.TIER_DOWN, Action.TIER_UP):
        assert reasons[0, action] == MaskReason.ROLLOUT | MaskReason.COOLDOWN
        assert reasons[1, action] == 0
    assert reasons[0, Action.HOLD] == 0


def test_mask_reasons_read_as_text():
    text = describe_mask_reasons(int(MaskReason.MAX_REPLICAS | MaskReason.PENDING_PODS))

    assert text == "at max replicas; pods are Pending (insufficient GPUs)"


def test_scale_down_masked_while_new_replicas_start(config, clock):
    state = PolicyState.initial(config)
    state.q[:, Action.SCALE_DOWN] = 10.0  # the table wants to scale down everywhere

    decision, _ = decide(config, state, observe(clock.tick(), replicas=3, ready_replicas=2))

    assert decision.action == Action.HOLD
    assert "scale-down" in decision.masked
    assert "rollout unfinished" in decision.masked["scale-down"]


# The config fixture is frozen, so sharing it across generated inputs is safe.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tier=st.integers(0, 2),
    replicas=st.integers(1, 4),
    pending=st.integers(0, 2),
    gpus_free=st.integers(-1, 6),
    q_row=st.lists(st.floats(-100, 100, allow_nan=False), min_size=5, max_size=5),
    epsilon=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_decision_never_leaves_bounds(config, tier, replicas, pending, gpus_free, q_row, epsilon, seed):
    config = config.replace(epsilon=epsilon, epsilon_min=0.0, seed=seed)
    gpus = config.tiers[tier].gpus_per_replica
    if replicas * gpus > config.gpu_budget:
        replicas = config.gpu_budget // gpus
    state = PolicyState.initial(config)
    state.q[:] = np.array(q_row)
    obs = observe(1000.0, tier=config.tiers[tier].name, replicas=replicas, ready_replicas=replicas,
                  pending_replicas=pending, gpus_free=None if gpus_free < 0 else gpus_free,
                  latency_p95_ms=120.0, gpus_allocated=replicas * gpus)

    decision, _ = decide(config, state, obs)

    target_tier = config.tier_index(decision.target_tier)
    target_gpus = config.tiers[target_tier].gpus_per_replica
    assert 0 <= target_tier < config.n_tiers
    assert config.min_replicas <= decision.target_replicas <= config.max_replicas
    assert decision.target_replicas * target_gpus <= config.gpu_budget
    changes_tier = target_tier != tier
    changes_replicas = decision.target_replicas != replicas
    assert not (changes_tier and changes_replicas)
    if pending:
        assert decision.target_replicas <= replicas
        assert target_tier <= tier


def test_apply_action_changes_one_dimension():
    tier, replicas = apply_action(np.array([1] * 5), np.array([3] * 5), np.arange(5))

    assert tier.tolist() == [1, 1, 1, 0, 2]
    assert replicas.tolist() == [2, 3, 4, 3, 3]


@pytest.mark.parametrize(("margin", "candidates"), [(None, 4), (0.5, 2), (0.0, 1)])
def test_exploration_skips_actions_rated_far_below(config, clock, margin, candidates):
    # Allowed from small at 2 replicas: scale-down, hold, scale-up, tier-up.
    config = config.replace(epsilon=0.2, epsilon_min=0.2, slo_penalty=1.0, exploration_margin_penalties=margin)
    state = PolicyState.initial(config)
    state.q[:] = [0.0, 1.0, 0.7, 0.0, -5.0]  # scale-up is 0.3 below hold, tier-up 6 below
    explored = set()
    for seed in range(200):
        decision, _ = decide(config.replace(seed=seed), state, observe(clock.tick()))
        if decision.source == "explore":
            explored.add(decision.action)
        if decision.action == Action.HOLD:
            assert decision.propensity == pytest.approx(0.2 / candidates + 0.8)

    assert len(explored) == candidates
    assert (Action.TIER_UP in explored) == (margin is None)
