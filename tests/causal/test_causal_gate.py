"""The off-policy gate on the synthetic confounded trace, where each candidate's true value is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tierscale_operator.causal import (
    GateConfig,
    InvalidLogError,
    LoggedDecision,
    OffPolicyData,
    TierObservations,
    evaluate_candidate,
    evaluate_candidate_on_log,
    fit_confounder_regression,
)
from tierscale_operator.causal.synthetic import TIERS, ConfoundedTrace, generate_confounded_trace

ACTIONS = list(TIERS)  # the trace's action is the tier it picked: "small" or "large"


@pytest.fixture(scope="module", params=[0, 1])
def trace(request) -> ConfoundedTrace:
    return generate_confounded_trace(seed=request.param)


@pytest.fixture(scope="module")
def adjusted_reward(trace):
    """Reward from the confounder-adjusted CTR, as the operator credits it."""
    adjuster = fit_confounder_regression(TierObservations.from_records(trace.records), "small").adjuster
    click_value = trace.parameters.click_value

    def reward(record: LoggedDecision) -> float:
        ctr = adjuster.adjust_ctr(record.ctr_raw, record.context.hour_of_day, record.context.load_rps)
        return click_value * ctr - record.reward.gpu_cost

    return reward


def always(tier: str):
    return lambda record: [1.0 if name == tier else 0.0 for name in ACTIONS]


def large_off_peak(record: LoggedDecision) -> list[float]:
    # Large at night and in the morning, small from 16:00: the opposite of where large pays most.
    return [0.0, 1.0] if record.context.hour_of_day < 16 else [1.0, 0.0]


def true_improvement(trace: ConfoundedTrace, probability_large: np.ndarray) -> float:
    return trace.true_value(probability_large) - trace.behaviour_true_value


@pytest.mark.parametrize("estimator", ["snips", "dr", "sndr"])
def test_truly_better_candidate_passes(trace, adjusted_reward, estimator):
    n = len(trace.records)
    assert true_improvement(trace, np.ones(n)) > 0
    decision = evaluate_candidate_on_log(
        trace.records, ACTIONS, always("large"), GateConfig(estimator=estimator), reward=adjusted_reward
    )
    assert decision.passed, decision.reason
    assert decision.improvement_lower_bound > 0
    assert decision.improvement == pytest.approx(true_improvement(trace, np.ones(n)), rel=0.25)


@pytest.mark.parametrize("estimator", ["snips", "dr", "sndr"])
@pytest.mark.parametrize("candidate_name", ["always small", "large off-peak"])
def test_truly_worse_candidate_fails(trace, adjusted_reward, estimator, candidate_name):
    n = len(trace.records)
    hours = np.array([record.context.hour_of_day for record in trace.records])
    candidate, probability_large = {
        "always small": (always("small"), np.zeros(n)),
        "large off-peak": (large_off_peak, (hours < 16).astype(float)),
    }[candidate_name]
    assert true_improvement(trace, probability_large) < 0
    decision = evaluate_candidate_on_log(
        trace.records, ACTIONS, candidate, GateConfig(estimator=estimator), reward=adjusted_reward
    )
    assert not decision.passed
    assert decision.improvement < 0
    assert "not above the required 0" in decision.reason


def test_behaviour_policy_itself_does_not_pass(trace, adjusted_reward):
    probability = {record.at_s: p for record, p in zip(trace.records, trace.probability_large)}

    def behaviour(record: LoggedDecision) -> list[float]:
        return [1.0 - probability[record.at_s], probability[record.at_s]]

    decision = evaluate_candidate_on_log(trace.records, ACTIONS, behaviour, GateConfig(), reward=adjusted_reward)
    assert not decision.passed
    assert decision.improvement == pytest.approx(0.0, abs=1e-9)


def test_low_effective_sample_size_fails_with_reason():
    # The candidate always takes action 1, which the behaviour policy took in 3 rows of 400.
    n = 400
    action = np.zeros(n, dtype=int)
    action[:3] = 1
    propensity = np.where(action == 1, 0.01, 0.99)
    reward = np.where(action == 1, 5.0, 1.0)
    data = OffPolicyData.from_distributions(
        reward=reward, action=action, propensity=propensity, target_distribution=np.array([0.0, 1.0])
    )
    decision = evaluate_candidate(data, GateConfig(min_effective_sample_size=30))
    assert not decision.passed
    assert "effective sample size 3.0 is below the minimum 30" in decision.reason


def test_candidate_never_matching_fails():
    data = OffPolicyData.from_distributions(
        reward=[1.0, 0.0], action=[0, 0], propensity=[0.9, 0.9], target_distribution=np.array([0.0, 1.0])
    )
    decision = evaluate_candidate(data, GateConfig(min_effective_sample_size=0))
    assert not decision.passed
    assert "never takes a logged action" in decision.reason


def test_required_improvement_is_enforced(trace, adjusted_reward):
    n = len(trace.records)
    margin = 2 * true_improvement(trace, np.ones(n))
    decision = evaluate_candidate_on_log(
        trace.records, ACTIONS, always("large"), GateConfig(min_improvement=margin), reward=adjusted_reward
    )
    assert not decision.passed


def test_uncredited_intervals_are_skipped_and_counted(trace, adjusted_reward):
    records = list(trace.records)
    records[5] = dataclasses.replace(records[5], reward=None)
    records[9] = dataclasses.replace(records[9], reward=None)
    decision = evaluate_candidate_on_log(records, ACTIONS, always("large"), GateConfig(), reward=adjusted_reward)
    assert decision.n_skipped == 2
    assert decision.candidate.n == len(records) - 2


def test_unknown_logged_action_is_rejected(trace):
    records = [dataclasses.replace(trace.records[0], action="tier_up")] + list(trace.records[1:10])
    with pytest.raises(InvalidLogError, match="logged action 'tier_up' at row 0 is not one of"):
        evaluate_candidate_on_log(records, ACTIONS, always("large"))


def test_candidate_with_wrong_action_count_is_rejected(trace):
    with pytest.raises(InvalidLogError, match=r"expected \(2,\)"):
        evaluate_candidate_on_log(trace.records[:10], ACTIONS, lambda record: [1.0, 0.0, 0.0])


def test_log_without_credited_interval_is_rejected(trace):
    records = [dataclasses.replace(record, reward=None) for record in trace.records[:3]]
    with pytest.raises(InvalidLogError, match="none of the 3 logged intervals was credited"):
        evaluate_candidate_on_log(records, ACTIONS, always("large"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"estimator": "ipw"}, "gate estimator 'ipw' is unknown"),
        ({"confidence": 1.0}, r"gate confidence must be in \[0.5, 1\), got 1.0"),
        ({"n_bootstrap": 10}, "n_bootstrap must be an integer >= 100, got 10"),
        ({"min_effective_sample_size": -1.0}, "min_effective_sample_size must be finite and >= 0"),
    ],
)
def test_gate_config_is_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        GateConfig(**overrides)


def test_decision_serialises(trace, adjusted_reward):
    decision = evaluate_candidate_on_log(trace.records, ACTIONS, always("large"), GateConfig(), reward=adjusted_reward)
    document = decision.as_dict()
    assert document["passed"] is True
    assert document["candidate"]["estimator"] == "snips"
    assert document["behaviour"]["estimator"] == "on-policy mean"
