"""The Q-update, the crediting rules and learning, driven through `decide` with a fake clock."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from policy_helpers import follow, observe

from tierscale_operator.policy import Action, Observation, PolicyState, decide
from tierscale_operator.policy.core import BatchObservation, ControlState, TableState, step_batch
from tierscale_operator.policy.features import state_index


def index_of(config, obs, previous_rps=None):
    return int(state_index(
        config,
        np.array([obs.requests_per_second]),
        np.array([obs.latency_p95_ms]),
        np.array([config.tier_index(obs.tier)]),
        np.array([obs.replicas]),
        np.array([obs.ready_replicas]),
        np.array([np.nan if previous_rps is None else previous_rps]),
    )[0])


def test_q_update_matches_hand_computation(config, clock):
    config = config.replace(learning_rate=0.5, discount=0.9)
    first = observe(clock.tick(), latency_p95_ms=20.0)
    decision, state = decide(config, PolicyState.initial(config), first)
    assert decision.action == Action.HOLD
    s0 = decision.state.index

    second = observe(clock.tick(), latency_p95_ms=45.0)
    s1 = index_of(config, second, previous_rps=100.0)
    assert s1 != s0
    state.q[s0, Action.HOLD] = 2.0
    state.q[s1] = [1.0, 3.0, 5.0, 100.0, 4.0]  # tier-down (100) is not allowed from the smallest tier

    decision, state = decide(config, state, second)

    # r = 0.001 x 0.04 x 100 rps x 30 s - 2.0 x 2 GPUs x 30 / 3600 h - 0 = 0.12 - 0.0333...
    reward = 0.12 - 2.0 * 2 * 30 / 3600
    target = reward + 0.9 * 5.0
    assert decision.credit == "credited"
    assert decision.credited.reward == pytest.approx(reward)
    assert decision.credited.action == "hold"
    assert state.q[s0, Action.HOLD] == pytest.approx(2.0 + 0.5 * (target - 2.0))
    assert state.visits[s0, Action.HOLD] == 1
    assert state.updates == 1


def test_visit_averaged_rate_starts_at_one(config, clock):
    config = config.replace(learning_rate=0.1, learning_rate_schedule="visit-averaged", discount=0.0)
    _, state = decide(config, PolicyState.initial(config), observe(clock.tick()))
    s0 = index_of(config, observe(0.0))

    _, state = decide(config, state, observe(clock.tick()))

    assert state.q[s0, Action.HOLD] == pytest.approx(0.12 - 2.0 * 2 * 30 / 3600)


def test_shared_table_merges_same_entry(config):
    config = config.replace(learning_rate=0.5, discount=0.0)
    tables = TableState.zeros(config)
    control = ControlState.initial(2)
    control.pending_state[:] = 7
    control.pending_action[:] = Action.HOLD
    tables.q[0, 7, Action.HOLD] = 1.0
    obs = BatchObservation(
        at_s=np.array([30.0, 30.0]), metrics_age_s=np.zeros(2), requests_per_second=np.array([100.0, 200.0]),
        latency_p95_ms=np.array([20.0, 20.0]), ctr_adjusted=np.array([0.04, 0.04]), tier=np.zeros(2, dtype=int),
        replicas=np.full(2, 2), ready_replicas=np.full(2, 2), pending_replicas=np.zeros(2, dtype=int),
        tier_rollout=np.zeros(2, dtype=bool), gpus_allocated=np.full(2, 2), gpus_free=np.full(2, -1),
    )

    decision, tables, _ = step_batch(config, tables, control, obs, np.zeros((2, 2)), learn=True)

    rewards = decision.reward
    assert rewards.tolist() == pytest.approx([0.12 - 1 / 30, 0.24 - 1 / 30])
    # Two updates towards the mean target with rate 1 - (1 - 0.5)^2 = 0.75.
    assert tables.q[0, 7, Action.HOLD] == pytest.approx(1.0 + 0.75 * (rewards.mean() - 1.0))
    assert tables.visits[0, 7, Action.HOLD] == 2


def test_change_is_credited_after_a_settled_interval(config, clock):
    state = PolicyState.initial(config)
    state.q[:, Action.SCALE_UP] = 1.0
    first = observe(clock.tick())
    decision, state = decide(config, state, first)
    assert decision.action == Action.SCALE_UP

    starting = follow(first, decision, clock.tick(), ready_replicas=2, gpus_allocated=3)
    decision, state = decide(config, state, starting)
    assert decision.action == Action.HOLD
    assert decision.source == "masked"
    assert decision.credit == "waiting for a settled interval"
    assert "in cooldown" in decision.reason

    ready = follow(starting, decision, clock.tick(), replicas=3, ready_replicas=3)
    decision, state = decide(config, state, ready)
    assert decision.credit == "waiting for a settled interval"

    decision, state = decide(config, state, follow(ready, decision, clock.tick()))
    assert decision.credit == "credited"
    assert decision.credited.action == "scale-up"
    assert decision.credited.elapsed_intervals == 3
    assert state.log[-1].action == Action.SCALE_UP
    assert state.updates == 1

    # Three intervals: each earns the settled interval's clicks (0.12), each costs 3 GPUs for 30 s.
    gpu_cost = 2.0 * 3 * 30 / 3600
    credited = 0.12 * (1 + 0.9 + 0.81) - gpu_cost * (1 + 0.9 + 0.81)
    assert decision.credited.discounted_return == pytest.approx(credited)
    s0 = index_of(config, first)
    assert state.q[s0, Action.SCALE_UP] == pytest.approx(1.0 + 0.1 * (credited + 0.9**3 * 1.0 - 1.0))


@pytest.mark.parametrize(
    "bad",
    [
        {"latency_p95_ms": math.nan},
        {"latency_p95_ms": math.inf},
        {"requests_per_second": -math.inf},
        {"requests_per_second": None},
        {"ctr_adjusted": math.nan},
        {"ctr_adjusted": -0.1},
        {"metrics_at_s": None},
        {"metrics_at_s": 0.0},  # stale: far older than two intervals
    ],
)
def test_invalid_metrics_never_reach_table(config, clock, bad):
    _, state = decide(config, PolicyState.initial(config), observe(clock.tick()))
    decision, state = decide(config, state, observe(clock.tick(), **bad))

    assert decision.action == Action.HOLD
    assert decision.source == "metrics-invalid"
    assert decision.credit == "not credited: metrics missing, NaN or stale"
    assert decision.interval_reward is None
    assert state.updates == 0
    assert np.isfinite(state.q).all()
    assert not state.q.any()
    assert state.pending_state == -1

    decision, state = decide(config, state, observe(clock.tick()))
    assert decision.credit == "nothing pending"
    assert state.updates == 0


def test_frozen_modes_do_not_update(config, clock):
    for mode in ("act", "recommend"):
        frozen = config.replace(mode=mode)
        state = PolicyState.initial(frozen)
        for _ in range(3):
            decision, state = decide(frozen, state, observe(clock.tick()))

        assert decision.credit in ("nothing pending", "not credited: table frozen in this mode")
        assert state.updates == 0
        assert not state.q.any()


def test_recommend_mode_keeps_change_timers(config, clock):
    config = config.replace(mode="recommend")
    state = PolicyState.initial(config)
    state.q[:, Action.SCALE_UP] = 1.0

    decision, new_state = decide(config, state, observe(clock.tick()))

    assert decision.action == Action.SCALE_UP
    assert new_state.last_change_at_s is None
    assert new_state.settled_ticks == 2


def test_same_seed_gives_same_decisions(config, clock):
    config = config.replace(epsilon=0.5, epsilon_min=0.5)

    def run(seed):
        seeded = config.replace(seed=seed)
        state = PolicyState.initial(seeded)
        actions = []
        for tick in range(40):
            decision, state = decide(seeded, state, observe(1000.0 + 30.0 * tick, requests_per_second=50.0 + tick))
            actions.append(decision.action)
        return actions, state

    first, first_state = run(3)
    again, again_state = run(3)
    other, _ = run(4)

    assert first == again
    assert np.array_equal(first_state.q, again_state.q)
    assert first != other


def test_learns_scale_up_when_it_pays(config, clock):
    """More replicas always earn more here: CTR grows with replicas at a steady rate, GPUs cost nothing."""
    config = config.replace(gpu_hour_cost=0.0, cooldown_s=0.0, epsilon=0.3, epsilon_min=0.3,
                            learning_rate=0.2, discount=0.5, max_replicas=4, gpu_budget=4)
    state = PolicyState.initial(config)
    replicas = 1
    for tick in range(3000):
        obs = observe(clock.tick(), replicas=replicas, ready_replicas=replicas, gpus_allocated=replicas,
                      ctr_adjusted=0.01 * replicas, requests_per_second=120.0)
        decision, state = decide(config, state, obs)
        replicas = decision.target_replicas if decision.target_tier == "small" else replicas
        if tick % 200 == 199:
            replicas = 1  # restart low so every replica count keeps being visited

    greedy = config.replace(mode="act")
    settled = dataclasses.replace(state, settled_ticks=2, last_change_at_s=None)
    for count in (1, 2, 3):
        obs = observe(clock.tick(), replicas=count, ready_replicas=count, gpus_allocated=count,
                      ctr_adjusted=0.01 * count, requests_per_second=120.0)
        decision, _ = decide(greedy, settled, obs)
        assert decision.action == Action.SCALE_UP, (count, decision.reason)


def test_idle_interval_is_valid_but_credits_nothing(config, clock):
    _, state = decide(config, PolicyState.initial(config), observe(clock.tick()))

    idle = observe(clock.tick(), requests_per_second=0.0, latency_p95_ms=None, ctr_adjusted=None)
    decision, state = decide(config, state, idle)

    assert decision.metrics_valid
    assert decision.credit == "not credited: metrics missing, NaN or stale"
    assert decision.credited is None
    assert decision.interval_reward is None
    assert "scale-down" in decision.q_values
    assert np.isfinite(state.q).all()

def test_load_scale_moves_load_bin():
    from tierscale_operator.policy.features import decode_state
    from tierscale_operator.sim.scenario import default_scenario

    config = default_scenario().policy
    args = (np.array([30.0]), np.array([25.0]), np.array([0]), np.array([1]), np.array([1]), np.array([30.0]))

    plain = decode_state(config, int(state_index(config, *args)[0]))
    scaled = decode_state(config.replace(load_scale=5.0), int(state_index(config.replace(load_scale=5.0), *args)[0]))

    assert plain.load_bin == 1  # 30 requests/s: the 20 to 40 bin
    assert scaled.load_bin == 7  # 150 requests/s: the 140 to 160 bin
    assert scaled.latency_ratio_bin == plain.latency_ratio_bin


def _tables_with_visits(config, states):
    tables = TableState(q=np.zeros((1, config.n_states, 5)), visits=np.zeros((1, config.n_states, 5), dtype=np.int64),
                        updates=np.zeros(1, dtype=np.int64))
    for state, q_row in states.items():
        tables.q[0, state] = q_row
        tables.visits[0, state, 1] = 3
    return tables


def _with_load_bin(config, state, load_bin):
    stride = config.n_states // config.bin_counts[0]
    return state % stride + load_bin * stride


def test_unvisited_state_borrows_nearest_load_bin(config):
    from tierscale_operator.policy.core import nearest_visited

    base = int(state_index(config, np.array([10.0]), np.array([45.0]), np.array([0]), np.array([1]),
                           np.array([1]), np.array([10.0]))[0])
    far, near = _with_load_bin(config, base, 9), _with_load_bin(config, base, 4)
    tables = _tables_with_visits(config, {far: [0, 1, 2, 0, 0], near: [0, 1, 3, 0, 0]})

    chosen = nearest_visited(config, tables, np.array([0]), np.array([base]))

    assert chosen.tolist() == [near]


def test_visited_state_keeps_its_own_values(config):
    from tierscale_operator.policy.core import nearest_visited

    base = int(state_index(config, np.array([10.0]), np.array([45.0]), np.array([0]), np.array([1]),
                           np.array([1]), np.array([10.0]))[0])
    tables = _tables_with_visits(config, {base: [0, 1, 0, 0, 0], _with_load_bin(config, base, 3): [0, 0, 5, 0, 0]})

    assert nearest_visited(config, tables, np.array([0]), np.array([base])).tolist() == [base]


def test_borrowing_tie_goes_to_higher_load(config):
    from tierscale_operator.policy.core import nearest_visited

    state = _with_load_bin(config, 0, 3)
    lower, higher = _with_load_bin(config, 0, 2), _with_load_bin(config, 0, 4)
    tables = _tables_with_visits(config, {lower: [0, 1, 0, 0, 0], higher: [0, 0, 1, 0, 0]})

    assert nearest_visited(config, tables, np.array([0]), np.array([state])).tolist() == [higher]


def test_nothing_visited_leaves_state(config):
    from tierscale_operator.policy.core import nearest_visited

    tables = _tables_with_visits(config, {})

    assert nearest_visited(config, tables, np.array([0]), np.array([17])).tolist() == [17]


def test_decision_says_q_was_borrowed(config):
    state = PolicyState.initial(config.replace(epsilon=0.0, epsilon_min=0.0))
    obs = Observation(at_s=1000.0, tier="small", replicas=1, ready_replicas=1, gpus_allocated=1,
                      requests_per_second=10.0, latency_p95_ms=45.0, ctr_adjusted=0.05, metrics_at_s=1000.0)
    own = int(state_index(config, np.array([10.0]), np.array([45.0]), np.array([0]), np.array([1]),
                          np.array([1]), np.array([np.nan]))[0])
    borrowed = _with_load_bin(config, own, 8)
    q = state.q.copy()
    visits = state.visits.copy()
    q[borrowed] = [0.0, 0.1, 0.5, 0.0, 0.0]
    visits[borrowed, 2] = 4
    state = dataclasses.replace(state, q=q, visits=visits)

    decision, _ = decide(config.replace(epsilon=0.0, epsilon_min=0.0), state, obs)

    assert decision.action == Action.SCALE_UP
    assert decision.q_borrowed_from.load_bin == 8
    assert "state never visited: Q of load bin 8" in decision.reason
