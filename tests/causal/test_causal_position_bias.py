"""Position-bias correction under the examination model, on hand examples and simulated slices."""

from __future__ import annotations

import numpy as np
import pytest

from tierscale_operator.causal import (
    InvalidPositionDataError,
    PositionBias,
    corrected_ctr_by_group,
    estimate_from_randomized_positions,
    estimate_from_swaps,
    swap_counts,
)

TRUE_EXAMINATION = np.array([1.0, 0.6, 0.35])


def simulate_swap_slice(n_lists: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists of three ranked items; a third keep their order, a third swap positions 1-2, a third 2-3."""
    rng = np.random.default_rng(seed)
    relevance = rng.uniform(0.05, 0.3, size=(n_lists, 3)) * np.array([1.0, 0.8, 0.6])
    shown = np.tile(np.arange(3), (n_lists, 1))
    swap = rng.integers(0, 3, size=n_lists)
    pair_12, pair_23 = swap == 1, swap == 2
    shown[pair_12, 0], shown[pair_12, 1] = 1, 0
    shown[pair_23, 1], shown[pair_23, 2] = 2, 1
    click = rng.random((n_lists, 3)) < TRUE_EXAMINATION[shown] * relevance
    original = np.tile(np.arange(3), (n_lists, 1))
    return original.ravel(), shown.ravel(), click.ravel().astype(float)


def test_corrected_ctr_docstring_example():
    bias = PositionBias.from_config([1.0, 0.5])
    assert bias.corrected_ctr([100, 100], [10, 4]) == pytest.approx(0.09)


def test_from_config_rescales_to_first_position():
    bias = PositionBias.from_config([0.8, 0.4, 0.2])
    assert bias.examination == pytest.approx((1.0, 0.5, 0.25))
    assert bias.source == "configured"


@pytest.mark.parametrize("values", [[1.0, 0.0], [1.0, -0.5], [1.0, float("nan")], []])
def test_invalid_configured_examination_is_rejected(values):
    with pytest.raises(InvalidPositionDataError):
        PositionBias.from_config(values)


def test_counts_are_validated():
    bias = PositionBias.from_config([1.0, 0.5])
    with pytest.raises(InvalidPositionDataError, match="counts cover 3 positions but the bias has 2"):
        bias.corrected_ctr([1, 2, 3], [0, 0, 0])
    with pytest.raises(InvalidPositionDataError, match=r"clicks at \(1,\) \(5.0\) exceed impressions \(4.0\)"):
        bias.corrected_ctr([10, 4], [1, 5])
    with pytest.raises(InvalidPositionDataError, match="at least one impression"):
        bias.corrected_ctr([0, 0], [0, 0])
    with pytest.raises(InvalidPositionDataError, match="position 2 is outside 0..1"):
        bias.click_weights([0, 2])


def test_swap_estimate_recovers_examination():
    original, shown, click = simulate_swap_slice(300_000, seed=11)
    impressions, clicks = swap_counts(original, shown, click, n_positions=3)
    bias = estimate_from_swaps(impressions, clicks, n_bootstrap=300, seed=2)
    assert bias.source == "swaps"
    assert bias.examination[0] == 1.0
    for position in (1, 2):
        assert bias.examination[position] == pytest.approx(TRUE_EXAMINATION[position], rel=0.05)
        assert bias.ci_low[position] <= TRUE_EXAMINATION[position] <= bias.ci_high[position]


def test_naive_position_ctr_overstates_bias_under_ranking():
    # Without swaps, lower positions also hold less relevant items, so CTR ratios overstate
    # the examination drop; the swap estimate does not.
    original, shown, click = simulate_swap_slice(300_000, seed=12)
    unswapped = original == shown
    naive_ratio = click[unswapped & (shown == 2)].mean() / click[unswapped & (shown == 0)].mean()
    assert naive_ratio < 0.8 * TRUE_EXAMINATION[2]


def test_swap_estimate_names_unswapped_pair():
    impressions = np.array([[100.0, 50.0, 0.0], [50.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
    clicks = impressions * 0.1
    with pytest.raises(InvalidPositionDataError, match="positions 2 and 3 have no impressions"):
        estimate_from_swaps(impressions, clicks)


def test_swap_estimate_needs_clicks():
    impressions = np.full((2, 2), 100.0)
    with pytest.raises(InvalidPositionDataError, match="positions 1 and 2 have no clicks at position 1"):
        estimate_from_swaps(impressions, np.zeros((2, 2)))


def test_randomized_positions_estimate():
    rng = np.random.default_rng(5)
    position = rng.integers(0, 3, size=400_000)
    relevance = rng.uniform(0.02, 0.2, size=position.shape[0])
    click = (rng.random(position.shape[0]) < TRUE_EXAMINATION[position] * relevance).astype(float)
    impressions = np.bincount(position, minlength=3)
    clicks = np.bincount(position, weights=click, minlength=3)
    bias = estimate_from_randomized_positions(impressions, clicks, n_bootstrap=300)
    assert bias.examination == pytest.approx(tuple(TRUE_EXAMINATION), rel=0.05)


def test_randomized_positions_need_clicks_everywhere():
    with pytest.raises(InvalidPositionDataError, match="position 3 has no clicks"):
        estimate_from_randomized_positions([100, 100, 100], [5, 3, 0])


def test_corrected_ctr_by_group_removes_position_mix():
    # Two tiers with equal relevance: "top" is only ever shown at the first position, "mixed"
    # at all three. Raw CTRs differ by the examination drop; corrected CTRs agree.
    rng = np.random.default_rng(9)
    n = 200_000
    group = np.array(["top"] * n + ["mixed"] * n)
    position = np.concatenate([np.zeros(n, dtype=int), rng.integers(0, 3, size=n)])
    click = (rng.random(2 * n) < 0.1 * TRUE_EXAMINATION[position]).astype(float)
    bias = PositionBias.from_config(TRUE_EXAMINATION)
    result = corrected_ctr_by_group(group, position, click, bias)
    assert result["mixed"].ctr_raw == pytest.approx(0.1 * TRUE_EXAMINATION.mean(), rel=0.03)
    assert result["top"].ctr_corrected == pytest.approx(0.1, rel=0.03)
    assert result["mixed"].ctr_corrected == pytest.approx(0.1, rel=0.03)
    assert result["mixed"].impressions == n
