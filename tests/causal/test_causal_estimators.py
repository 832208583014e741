"""Off-policy estimators on inputs small enough to add up by hand, plus validation and intervals."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tierscale_operator.causal import (
    InvalidLogError,
    OffPolicyData,
    dm,
    dr,
    dr_shrinkage,
    effective_sample_size,
    estimate,
    ips,
    point_estimate,
    snips,
    sndr,
    switch_dr,
)

# Four rows: weights w = target / propensity = [2, 2, 0, 0.5].
REWARD = [1.0, 0.0, 1.0, 0.0]
PROPENSITY = [0.5, 0.25, 0.5, 1.0]
TARGET = [1.0, 0.5, 0.0, 0.5]
# Residuals r - q at the logged action: [0.5, -0.2, 0.5, -0.5].
Q_LOGGED = [0.5, 0.2, 0.5, 0.5]
Q_TARGET = [0.4, 0.2, 0.6, 0.0]


@pytest.fixture
def data() -> OffPolicyData:
    return OffPolicyData(
        reward=REWARD,
        propensity=PROPENSITY,
        target_propensity=TARGET,
        q_hat_logged=Q_LOGGED,
        q_hat_target=Q_TARGET,
    )


def test_weights_are_target_over_propensity(data):
    assert data.weights.tolist() == [2.0, 2.0, 0.0, 0.5]


def test_ips_adds_weighted_rewards(data):
    # (2 * 1 + 2 * 0 + 0 * 1 + 0.5 * 0) / 4
    assert ips(data) == pytest.approx(0.5)


def test_ips_clipping_caps_only_large_weights(data):
    # Weights become [1.5, 1.5, 0, 0.5]: (1.5 * 1) / 4.
    assert ips(data, clip=1.5) == pytest.approx(0.375)
    # A threshold above every weight changes nothing.
    assert ips(data, clip=2.0) == pytest.approx(ips(data))


def test_ips_clipping_changes_only_rows_above_threshold():
    reward = np.array([1.0, 1.0, 1.0, 1.0])
    propensity = np.array([0.1, 0.5, 0.8, 1.0])
    target = np.array([1.0, 1.0, 1.0, 1.0])
    base = OffPolicyData(reward=reward, propensity=propensity, target_propensity=target)
    clipped_value = ips(base, clip=4.0)
    # Only the first row (weight 10) is above 4; the others keep 2, 1.25 and 1.
    assert clipped_value == pytest.approx((4.0 + 2.0 + 1.25 + 1.0) / 4)
    result = estimate(base, "ips", clip=4.0, n_bootstrap=100)
    assert result.n_clipped == 1
    assert result.max_weight == pytest.approx(4.0)


def test_snips_normalises_by_weight_sum(data):
    # (2 * 1) / (2 + 2 + 0 + 0.5)
    assert snips(data) == pytest.approx(2.0 / 4.5)


def test_snips_is_invariant_to_scaling_propensities(data):
    scaled = OffPolicyData(reward=REWARD, propensity=np.array(PROPENSITY) * 0.5, target_propensity=TARGET)
    assert snips(scaled) == pytest.approx(snips(data))
    # IPS is not: halving every propensity doubles it.
    assert ips(scaled) == pytest.approx(2 * ips(data))


def test_dm_averages_model_under_candidate(data):
    assert dm(data) == pytest.approx((0.4 + 0.2 + 0.6 + 0.0) / 4)


def test_dr_adds_weighted_residuals(data):
    # 0.3 + (2 * 0.5 + 2 * -0.2 + 0 * 0.5 + 0.5 * -0.5) / 4 = 0.3 + 0.35 / 4
    assert dr(data) == pytest.approx(0.3875)


def test_dr_clipping(data):
    # Clipped weights [1.5, 1.5, 0, 0.5]: 0.3 + (0.75 - 0.3 + 0 - 0.25) / 4
    assert dr(data, clip=1.5) == pytest.approx(0.35)


def test_sndr_normalises_residual_term(data):
    assert sndr(data) == pytest.approx(0.3 + 0.35 / 4.5)


def test_switch_dr_uses_model_above_threshold(data):
    # tau = 1 keeps rows with w <= 1 (rows 2 and 3): 0.3 + (0 * 0.5 + 0.5 * -0.5) / 4
    assert switch_dr(data, threshold=1.0) == pytest.approx(0.2375)
    # tau above every weight is plain DR.
    assert switch_dr(data, threshold=100.0) == pytest.approx(dr(data))


def test_dr_shrinkage_shrinks_weights(data):
    # lambda = 2: shrunk weights 2w / (w^2 + 2) = [2/3, 2/3, 0, 4/9].
    expected = 0.3 + (2 / 3 * 0.5 + 2 / 3 * -0.2 + 0.0 + 4 / 9 * -0.5) / 4
    assert dr_shrinkage(data, shrinkage=2.0) == pytest.approx(expected)


def test_estimators_equal_mean_reward_on_policy():
    rng = np.random.default_rng(3)
    propensity = rng.uniform(0.1, 1.0, size=50)
    reward = rng.binomial(1, 0.3, size=50).astype(float)
    same = OffPolicyData(reward=reward, propensity=propensity, target_propensity=propensity)
    assert ips(same) == pytest.approx(reward.mean())
    assert snips(same) == pytest.approx(reward.mean())


def test_from_distributions_picks_logged_action():
    distribution = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    q_hat = np.array([[0.1, 0.3], [0.2, 0.4], [0.6, 0.0]])
    data = OffPolicyData.from_distributions(
        reward=[1.0, 0.0, 1.0],
        action=[1, 0, 0],
        propensity=[0.5, 0.5, 0.5],
        target_distribution=distribution,
        q_hat=q_hat,
    )
    assert data.target_propensity.tolist() == [0.8, 1.0, 0.5]
    assert data.q_hat_logged.tolist() == [0.3, 0.2, 0.6]
    assert data.q_hat_target == pytest.approx([0.2 * 0.1 + 0.8 * 0.3, 0.2, 0.3])


def test_from_distributions_broadcasts_context_free_candidate():
    data = OffPolicyData.from_distributions(
        reward=[1.0, 0.0], action=[0, 1], propensity=[0.5, 0.5], target_distribution=np.array([0.25, 0.75])
    )
    assert data.target_propensity.tolist() == [0.25, 0.75]


def test_effective_sample_size_examples(data):
    assert effective_sample_size(np.ones(4)) == pytest.approx(4.0)
    assert effective_sample_size(np.array([4.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_sample_size(data.weights) == pytest.approx(4.5**2 / 8.25)
    assert effective_sample_size(np.zeros(3)) == 0.0


@pytest.mark.parametrize(
    ("propensity", "expected"),
    [
        ([0.5, 0.5, 0.0, 0.5], "propensity at row 2 is 0.0"),
        ([0.5, -0.1, 0.5, 0.5], "propensity at row 1 is -0.1"),
        ([0.5, 0.5, 0.5, float("nan")], "propensity at row 3 is missing"),
        ([None, 0.5, 0.5, 0.5], "propensity at row 0 is missing"),
        ([0.5, 1.5, 0.5, 0.5], "propensity at row 1 is 1.5"),
    ],
)
def test_bad_propensity_is_rejected_naming_row(propensity, expected):
    with pytest.raises(InvalidLogError, match=expected):
        OffPolicyData(reward=REWARD, propensity=propensity, target_propensity=TARGET)


def test_bad_target_probability_is_rejected():
    with pytest.raises(InvalidLogError, match="target_propensity at row 1 is 1.2"):
        OffPolicyData(reward=REWARD, propensity=PROPENSITY, target_propensity=[0.5, 1.2, 0.0, 0.0])


def test_nan_reward_is_rejected():
    with pytest.raises(InvalidLogError, match="reward at row 3 is nan"):
        OffPolicyData(reward=[1.0, 0.0, 1.0, float("nan")], propensity=PROPENSITY, target_propensity=TARGET)


def test_length_mismatch_is_rejected():
    with pytest.raises(InvalidLogError, match="propensity has 3 rows but reward has 4"):
        OffPolicyData(reward=REWARD, propensity=PROPENSITY[:3], target_propensity=TARGET)


def test_empty_log_is_rejected():
    with pytest.raises(InvalidLogError, match="at least one logged row"):
        OffPolicyData(reward=[], propensity=[], target_propensity=[])


def test_model_based_estimator_needs_reward_model():
    data = OffPolicyData(reward=REWARD, propensity=PROPENSITY, target_propensity=TARGET)
    with pytest.raises(InvalidLogError, match="'dr' needs reward-model predictions"):
        dr(data)


def test_unknown_estimator_and_bad_parameters_are_rejected(data):
    with pytest.raises(ValueError, match="unknown estimator 'ipw'"):
        point_estimate(data, "ipw")
    with pytest.raises(ValueError, match="clip must be a positive finite number, got 0"):
        ips(data, clip=0)
    with pytest.raises(ValueError, match="clip applies to 'ips' and 'dr' only"):
        point_estimate(data, "snips", clip=5.0)


def test_distribution_rows_must_sum_to_one():
    with pytest.raises(InvalidLogError, match="target_distribution at row 1 is not a probability distribution"):
        OffPolicyData.from_distributions(
            reward=[1.0, 0.0],
            action=[0, 1],
            propensity=[0.5, 0.5],
            target_distribution=np.array([[0.5, 0.5], [0.5, 0.6]]),
        )


def test_action_out_of_range_is_rejected():
    with pytest.raises(InvalidLogError, match="action at row 1 is 2, outside 0..1"):
        OffPolicyData.from_distributions(
            reward=[1.0, 0.0], action=[0, 2], propensity=[0.5, 0.5], target_distribution=np.array([0.5, 0.5])
        )


def test_tiny_propensities_are_reported_not_clipped(caplog):
    reward = np.array([1.0, 0.0, 1.0, 1.0])
    propensity = np.array([0.5, 1e-4, 0.5, 2e-4])
    target = np.array([0.5, 0.5, 0.5, 0.1])
    data = OffPolicyData(reward=reward, propensity=propensity, target_propensity=target)
    with caplog.at_level(logging.WARNING, logger="tierscale_operator.causal.estimators"):
        result = estimate(data, "ips", n_bootstrap=200, tiny_propensity=1e-3)
    assert result.n_tiny_propensity == 2
    assert result.tiny_propensity_rows == (1, 3)
    assert result.min_propensity == pytest.approx(1e-4)
    assert result.n_clipped == 0
    assert result.max_weight == pytest.approx(5000.0)
    assert result.value == pytest.approx(ips(data))
    assert "2 of 4 logged rows have a propensity below 0.001" in caplog.text


def test_interval_covers_truth_on_simulated_bandit():
    rng = np.random.default_rng(7)
    n, n_actions = 20_000, 3
    click_probability = np.array([0.02, 0.05, 0.08])
    action = rng.integers(0, n_actions, size=n)
    reward = rng.binomial(1, click_probability[action]).astype(float)
    candidate = np.array([0.1, 0.2, 0.7])
    truth = float(candidate @ click_probability)
    q_hat = np.tile(click_probability * 0.8, (n, 1))  # a deliberately biased reward model
    data = OffPolicyData.from_distributions(
        reward=reward, action=action, propensity=np.full(n, 1 / 3), target_distribution=candidate, q_hat=q_hat
    )
    for estimator in ("ips", "snips", "dr", "sndr"):
        result = estimate(data, estimator, n_bootstrap=500, seed=1)
        assert result.ci_low <= truth <= result.ci_high, estimator
        assert result.ci_low <= result.value <= result.ci_high, estimator
    biased_dm = estimate(data, "dm", n_bootstrap=500, seed=1)
    assert biased_dm.value == pytest.approx(0.8 * truth)


def test_bootstrap_is_reproducible_with_seed(data):
    first = estimate(data, "snips", n_bootstrap=300, seed=5)
    second = estimate(data, "snips", n_bootstrap=300, seed=5)
    assert (first.ci_low, first.ci_high) == (second.ci_low, second.ci_high)


def test_snips_is_undefined_when_candidate_never_matches():
    data = OffPolicyData(reward=[1.0, 0.0], propensity=[0.5, 0.5], target_propensity=[0.0, 0.0])
    assert np.isnan(snips(data))
    assert ips(data) == 0.0
