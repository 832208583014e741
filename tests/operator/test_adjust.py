"""Per-interval causal adjustment: position correction, and missing data left missing."""

from __future__ import annotations

import datetime
import math

import pytest

from tierscale_operator.adjust import (
    IntervalHistory,
    adjust_interval,
    corrected_ctr,
    diagonal_cells,
    position_bias,
)
from tierscale_operator.causal.position_bias import PositionBias

NOON = datetime.datetime(2026, 12, 4, 12, tzinfo=datetime.timezone.utc)


def test_corrected_ctr_divides_clicks_by_examination():
    bias = PositionBias.from_config([1.0, 0.5])

    # (10 / 1.0 + 4 / 0.5) / 200
    assert corrected_ctr({1: 100, 2: 100}, {1: 10, 2: 4}, bias) == pytest.approx(0.09)


def test_zero_impressions_leave_ctr_missing_not_zero():
    result = adjust_interval(
        impressions={}, clicks={}, tier="small", load_rps=0.0, at=NOON, bias=None,
        history=IntervalHistory(), tiers=["small"], use_confounders=True,
    )

    assert result.ctr_raw is None
    assert result.ctr_adjusted is None
    assert result.notes == ("no impressions in the interval (CTR is 0/0)",)


def test_estimated_bias_waits_for_swaps_and_says_why():
    bias, note = position_bias("estimate", (), {}, {})

    assert bias is None
    assert note == "position bias not yet estimated: no swapped impressions recorded"


def test_estimated_bias_from_adjacent_swaps():
    # Rank 1 and 2 swapped: theta_2 / theta_1 = (ctr[1->2] + ctr[2->2]) / (ctr[1->1] + ctr[2->1]).
    impressions = {"1,1": 1000, "1,2": 1000, "2,1": 1000, "2,2": 1000}
    clicks = {"1,1": 100, "1,2": 50, "2,1": 80, "2,2": 40}

    bias, note = position_bias("estimate", (), impressions, clicks)

    assert note is None
    assert bias.examination[0] == 1.0
    assert bias.examination[1] == pytest.approx((0.05 + 0.04) / (0.10 + 0.08))


def test_history_is_bounded():
    history = IntervalHistory()
    for i in range(600):
        history.add("small", i % 24, 10.0, 0.05, 100.0)

    assert len(history.rows) == 500


def test_confounder_adjustment_removes_the_hour_effect():
    # One tier, CTR 0.05 around midnight and 0.10 around noon, same load: a smooth daily cycle.
    history = IntervalHistory()
    for day in range(3):
        for hour in range(24):
            ctr = 0.075 - 0.025 * math.cos(2 * math.pi * hour / 24)
            history.add("small", hour, 20.0 + day, ctr, 1000.0)

    adjusted, note = history.adjust(0.10, "small", 12, 21.0, ["small"])

    assert note is None
    assert adjusted == pytest.approx(0.075, abs=0.003)


def test_confounder_adjustment_waits_for_history():
    history = IntervalHistory()
    for hour in range(10):
        history.add("small", hour, 20.0, 0.05, 1000.0)

    adjusted, note = history.adjust(0.10, "small", 12, 21.0, ["small"])

    assert adjusted == 0.10
    assert note == "confounder adjustment waits for 24 intervals of history (have 10)"


def test_unswapped_cells_are_totals_minus_swapped():
    impressions = {("small", 1): 100.0, ("small", 2): 100.0, ("medium", 1): 50.0}
    clicks = {("small", 1): 20.0, ("small", 2): 8.0}
    swapped_impressions = {"2,1": 10.0, "1,2": 10.0}
    swapped_clicks = {"2,1": 1.0, "1,2": 2.0}

    diagonal_impressions, diagonal_clicks = diagonal_cells(impressions, clicks, swapped_impressions, swapped_clicks)

    assert diagonal_impressions == {"1,1": 140.0, "2,2": 90.0}
    assert diagonal_clicks == {"1,1": 19.0, "2,2": 6.0}


def test_bias_uses_only_positions_with_swap_evidence():
    # Pair (1, 2) has all four cells; pair (2, 3) has no swapped impressions yet.
    impressions = {"1,1": 1000, "1,2": 1000, "2,1": 1000, "2,2": 1000, "3,3": 1000}
    clicks = {"1,1": 100, "1,2": 50, "2,1": 80, "2,2": 40, "3,3": 10}

    bias, note = position_bias("estimate", (), impressions, clicks)

    assert note is None
    assert bias.n_positions == 2


def test_pair_with_few_swapped_clicks_is_not_used():
    # Pair (2, 3) has every cell, but rank 3 shown at 2 drew only 3 clicks.
    impressions = {"1,1": 1000, "1,2": 1000, "2,1": 1000, "2,2": 1000, "2,3": 1000, "3,2": 1000, "3,3": 1000}
    clicks = {"1,1": 100, "1,2": 50, "2,1": 80, "2,2": 40, "2,3": 30, "3,2": 3, "3,3": 20}

    bias, note = position_bias("estimate", (), impressions, clicks)

    assert note is None
    assert bias.n_positions == 2


def test_bias_waits_for_swapped_clicks():
    impressions = {"1,1": 1000, "1,2": 1000, "2,1": 1000, "2,2": 1000}
    clicks = {"1,1": 100, "1,2": 9, "2,1": 80, "2,2": 40}

    bias, note = position_bias("estimate", (), impressions, clicks)

    assert bias is None
    assert note == ("position bias not yet estimated: positions 1 and 2 need swapped impressions and "
                    "10 clicks in each swapped cell")
