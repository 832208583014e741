"""Checks on the real Open Bandit Dataset sample read from the obp 0.5.7 sdist.

The sdist is fetched with pip into the cache on first use (PyPI must be reachable then).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierscale_operator.causal import OffPolicyData, estimate, ips, snips
from tierscale_operator.causal import obd


@pytest.fixture(scope="session")
def sdist() -> Path:
    return obd.download_obp_sdist()


@pytest.fixture(scope="session")
def logs(sdist):
    return {
        (policy, campaign): obd.load_obd_log(policy, campaign, path=sdist)
        for policy in obd.BEHAVIOUR_POLICIES
        for campaign in obd.CAMPAIGNS
    }


@pytest.mark.parametrize("campaign", obd.CAMPAIGNS)
def test_random_propensity_is_one_over_item_count(logs, campaign):
    log = logs[("random", campaign)]
    assert log.n_rows == 10_000
    assert (log.propensity == 1.0 / log.n_items).all()


@pytest.mark.parametrize("campaign", obd.CAMPAIGNS)
def test_logs_are_well_formed(logs, campaign):
    for policy in obd.BEHAVIOUR_POLICIES:
        log = logs[(policy, campaign)]
        assert set(np.unique(log.position)) == {0, 1, 2}
        assert set(np.unique(log.click)) <= {0.0, 1.0}
        assert ((log.propensity > 0) & (log.propensity <= 1)).all()
        assert log.action.min() >= 0
        assert log.action.max() < log.n_items
        # Timestamps share one format and time zone, so string order is time order.
        assert (log.timestamp[:-1] <= log.timestamp[1:]).all()


@pytest.mark.parametrize("campaign", obd.CAMPAIGNS)
def test_bts_prior_matches_item_count(logs, sdist, campaign):
    alpha, beta = obd.load_bts_prior(campaign, path=sdist)
    assert alpha.shape == beta.shape == (logs[("bts", campaign)].n_items,)


def test_bts_distribution_is_per_position_probability():
    alpha = np.array([1000.0, 10.0, 10.0, 10.0, 1.0])
    beta = np.array([1000.0, 990.0, 990.0, 990.0, 999.0])
    distribution = obd.bts_action_distribution(alpha, beta, n_samples=20_000, chunk=3_000)
    assert distribution.shape == (5, 3)
    assert distribution.sum(axis=0) == pytest.approx(np.ones(3))
    # Item 0 (mean 0.5) always wins the first position; item 4 (mean 0.001) almost never shows.
    assert distribution[0, 0] == 1.0
    assert distribution[4].sum() < 0.01


def test_on_policy_snips_is_mean_click(logs):
    log = logs[("random", "all")]
    data = OffPolicyData(reward=log.click, propensity=log.propensity, target_propensity=log.propensity)
    assert snips(data) == pytest.approx(log.click.mean())
    assert ips(data) == pytest.approx(log.click.mean())


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_random_value_from_bts_log_covers_truth(logs, estimator):
    bts_log, random_log = logs[("bts", "all")], logs[("random", "all")]
    data = OffPolicyData.from_distributions(
        reward=bts_log.click,
        action=bts_log.action,
        propensity=bts_log.propensity,
        target_distribution=np.full(bts_log.n_items, 1.0 / bts_log.n_items),
    )
    result = estimate(data, estimator, n_bootstrap=1000, seed=12345)
    truth = random_log.click.mean()
    assert result.ci_low <= truth <= result.ci_high
    # BTS logged some items with propensities far below 1/80: they are reported, not clipped.
    assert result.n_tiny_propensity == int((bts_log.propensity < 1e-3).sum()) > 0
    assert result.n_clipped == 0
    assert result.effective_sample_size < 0.5 * data.n


def test_missing_sdist_names_the_fix(tmp_path):
    with pytest.raises(obd.ObdDataError, match="run `make obd-data`"):
        obd.load_obd_log("random", "all", path=tmp_path / "absent.tar.gz")


def test_unknown_campaign_is_rejected(sdist):
    with pytest.raises(ValueError, match="campaign must be one of all, men, women, got 'kids'"):
        obd.load_obd_log("random", "kids", path=sdist)
