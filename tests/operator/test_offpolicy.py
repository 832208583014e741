"""The live off-policy check of the greedy policy on the policy's own decision log."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tierscale_operator.offpolicy import evaluate_greedy
from tierscale_operator.policy import PolicyConfig, PolicyState, TierSpec
from tierscale_operator.policy.state import LogEntry


def _state(n_rows: int, best_action: int = 2) -> PolicyState:
    config = PolicyConfig(tiers=(TierSpec("small"), TierSpec("large")))
    state = PolicyState.initial(config)
    rng = np.random.default_rng(0)
    log = []
    for i in range(n_rows):
        action = int(rng.integers(0, 5))  # uniform behaviour: propensity 1/5
        log.append(LogEntry(at_s=float(i), state=i % 7, action=action, propensity=0.2,
                            reward=1.0 if action == best_action else 0.0, reward_clicks=0.0,
                            reward_gpu_cost=0.0, reward_slo_penalty=0.0, requests_per_second=10.0))
    q = state.q.copy()
    q[:, best_action] = 1.0
    return dataclasses.replace(state, q=q, log=tuple(log))


@pytest.mark.parametrize("method", ["ips", "snips", "dr"])
def test_greedy_policy_that_picks_the_rewarded_action_passes(method):
    verdict = evaluate_greedy(_state(400), method)

    assert verdict["passed"] is True
    assert verdict["candidateValue"] == pytest.approx(1.0, abs=0.15)
    assert verdict["behaviourValue"] == pytest.approx(0.2, abs=0.06)
    assert verdict["rows"] == 400


def test_greedy_policy_that_picks_an_unrewarded_action_fails():
    state = _state(400)
    q = np.zeros_like(state.q)
    q[:, 0] = 1.0  # greedy picks action 0, which earned nothing

    verdict = evaluate_greedy(dataclasses.replace(state, q=q), "snips")

    assert verdict["passed"] is False
    assert verdict["candidateValue"] == pytest.approx(0.0, abs=1e-9)


def test_short_log_or_method_none_is_not_evaluated():
    assert evaluate_greedy(_state(10), "snips") is None
    assert evaluate_greedy(_state(400), "none") is None
