"""Causal adjustment of one interval's clicks before the policy is rewarded with them.

Two corrections, in this order:

1. Position bias (examination model): clicks at position k are divided by theta_k, the probability
   that position k is examined relative to the first. theta comes from ``spec.causal`` (configured)
   or is estimated from the server's randomised adjacent swaps, summed over all intervals so far.
   Positions are corrected down to the deepest one whose adjacent pairs each have
   ``MIN_SWAPPED_CLICKS`` clicks in both swapped cells; until positions 1 and 2 have them, no
   correction is applied and the reason is reported.
2. Confounders (hour of day, load): an impression-weighted regression of the corrected CTR on tier,
   hour-of-day Fourier terms and load, fitted on this resource's own interval history once it holds
   ``MIN_INTERVALS_FOR_CONFOUNDERS`` intervals; the interval's hour and load term is replaced by its
   average, so a tier that served at a low-CTR hour is not blamed for the hour.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence

import numpy as np

from tierscale_operator.causal.confounding import (
    InvalidObservationsError,
    TierObservations,
    fit_confounder_regression,
)
from tierscale_operator.causal.position_bias import (
    InvalidPositionDataError,
    PositionBias,
    estimate_from_swaps,
)

MAX_POSITIONS = 20
# Clicks each swapped cell of an adjacent pair needs before the pair's examination ratio is used.
# The ratio divides by these counts. In the first minutes of a demo run, a few clicks gave ratios
# that raised the corrected CTR above 1.
MIN_SWAPPED_CLICKS = 10
# The regression fits 1 + (tiers - 1) + 4 hour terms + 2 load terms parameters; 24 intervals is the
# least that leaves it over-determined for up to 8 tiers and can span every hour of a compressed day.
MIN_INTERVALS_FOR_CONFOUNDERS = 24
# Rows kept (and persisted in the state ConfigMap, about 50 bytes each).
MAX_HISTORY = 500


@dataclasses.dataclass(frozen=True)
class Adjusted:
    ctr_raw: float | None
    ctr_position_corrected: float | None
    ctr_adjusted: float | None
    impressions: float
    notes: tuple[str, ...]


def position_bias(
    method: str,
    configured: Sequence[float],
    swap_impressions: Mapping[str, float],
    swap_clicks: Mapping[str, float],
) -> tuple[PositionBias | None, str | None]:
    """Returns the examination model to use, or None and the reason there is none yet."""
    if method == "none":
        return None, "position-bias correction is off (spec.causal.positionBias: none)"
    if method == "configured":
        return PositionBias.from_config(configured), None

    n = _positions_seen(swap_impressions)
    if n < 2:
        return None, "position bias not yet estimated: no swapped impressions recorded"
    impressions = np.zeros((n, n))
    clicks = np.zeros((n, n))
    for key, value in swap_impressions.items():
        rank, shown = _cell(key)
        if rank < n and shown < n:
            impressions[rank, shown] = value
    for key, value in swap_clicks.items():
        rank, shown = _cell(key)
        if rank < n and shown < n:
            clicks[rank, shown] = min(value, impressions[rank, shown])
    usable = _usable_positions(impressions, clicks)
    if usable < 2:
        return None, (f"position bias not yet estimated: positions 1 and 2 need swapped impressions and "
                      f"{MIN_SWAPPED_CLICKS} clicks in each swapped cell")
    try:
        return estimate_from_swaps(impressions[:usable, :usable], clicks[:usable, :usable], n_bootstrap=200), None
    except InvalidPositionDataError as error:
        return None, f"position bias not yet estimated: {error}"


def _usable_positions(impressions: np.ndarray, clicks: np.ndarray) -> int:
    """Leading positions whose adjacent pairs all have the four cells the swap estimate needs."""
    n = 1
    for k in range(impressions.shape[0] - 1):
        cells = [(k, k), (k, k + 1), (k + 1, k), (k + 1, k + 1)]
        if any(impressions[c] <= 0 for c in cells):
            break
        if clicks[k, k + 1] < MIN_SWAPPED_CLICKS or clicks[k + 1, k] < MIN_SWAPPED_CLICKS:
            break
        n = k + 2
    return n


def diagonal_cells(
    impressions: Mapping[tuple[str, int], float],
    clicks: Mapping[tuple[str, int], float],
    swapped_impressions: Mapping[str, float],
    swapped_clicks: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, float]]:
    """Unswapped (rank k shown at k) cells: all counts at a position minus the swapped ones there."""
    diagonal_impressions: dict[str, float] = {}
    diagonal_clicks: dict[str, float] = {}
    for counts, swapped, target in (
        (impressions, swapped_impressions, diagonal_impressions),
        (clicks, swapped_clicks, diagonal_clicks),
    ):
        by_position: dict[int, float] = {}
        for (_, position), value in counts.items():
            by_position[position] = by_position.get(position, 0.0) + value
        for key, value in swapped.items():
            _, shown = _cell(key)
            by_position[shown + 1] = by_position.get(shown + 1, 0.0) - value
        for position, value in by_position.items():
            if position <= MAX_POSITIONS:
                target[f"{position},{position}"] = max(0.0, value)
    return diagonal_impressions, diagonal_clicks


def _cell(key: str) -> tuple[int, int]:
    rank, shown = key.split(",")
    return int(rank) - 1, int(shown) - 1


def _positions_seen(swap_impressions: Mapping[str, float]) -> int:
    positions = [max(_cell(key)) + 1 for key, value in swap_impressions.items() if value > 0]
    return min(MAX_POSITIONS, max(positions, default=0))


def corrected_ctr(
    impressions: Mapping[int, float], clicks: Mapping[int, float], bias: PositionBias | None
) -> float | None:
    """Clicks over impressions with clicks at position k divided by theta_k; None at 0/0."""
    shown = sum(impressions.values())
    if shown <= 0:
        return None
    total = 0.0
    for position, count in clicks.items():
        theta = 1.0
        if bias is not None:
            # Positions past the estimated ones keep the deepest estimate: conservative, since
            # examination only falls further down the list.
            theta = bias.examination[min(position, bias.n_positions) - 1]
        total += count / theta
    return total / shown


@dataclasses.dataclass
class IntervalHistory:
    """Per-interval (tier, hour, load, corrected CTR, impressions), bounded to MAX_HISTORY rows."""

    rows: list[list] = dataclasses.field(default_factory=list)

    def add(self, tier: str, hour: int, load_rps: float, ctr: float, impressions: float) -> None:
        if impressions <= 0 or not all(map(math.isfinite, (load_rps, ctr))):
            return
        self.rows.append([tier, hour, round(load_rps, 4), round(ctr, 6), round(impressions, 1)])
        del self.rows[:-MAX_HISTORY]

    def adjust(self, ctr: float, tier: str, hour: int, load_rps: float, tiers: Sequence[str]) -> tuple[float, str | None]:
        if len(self.rows) < MIN_INTERVALS_FOR_CONFOUNDERS:
            return ctr, (
                f"confounder adjustment waits for {MIN_INTERVALS_FOR_CONFOUNDERS} intervals of history "
                f"(have {len(self.rows)})"
            )
        observations = TierObservations(
            tier=np.array([r[0] for r in self.rows]),
            hour_of_day=np.array([r[1] for r in self.rows], dtype=int),
            load_rps=np.array([r[2] for r in self.rows]),
            impressions=np.array([r[4] for r in self.rows]),
            ctr=np.array([r[3] for r in self.rows]),
        )
        seen = [t for t in tiers if t in set(observations.tier.tolist())]
        try:
            fit = fit_confounder_regression(observations, reference_tier=seen[0])
        except (InvalidObservationsError, IndexError, ValueError) as error:
            return ctr, f"confounder adjustment skipped: {error}"
        return max(0.0, fit.adjuster.adjust_ctr(ctr, hour, max(0.0, load_rps))), None


def adjust_interval(
    *,
    impressions: Mapping[tuple[str, int], float],
    clicks: Mapping[tuple[str, int], float],
    tier: str,
    load_rps: float | None,
    at: datetime.datetime,
    bias: PositionBias | None,
    history: IntervalHistory,
    tiers: Sequence[str],
    use_confounders: bool,
) -> Adjusted:
    """Position-corrects and confounder-adjusts one interval's CTR, and records it in ``history``."""
    notes = []
    by_position_impressions: dict[int, float] = {}
    by_position_clicks: dict[int, float] = {}
    for (_, position), count in impressions.items():
        by_position_impressions[position] = by_position_impressions.get(position, 0.0) + count
    for (_, position), count in clicks.items():
        by_position_clicks[position] = by_position_clicks.get(position, 0.0) + count
    shown = sum(by_position_impressions.values())
    if shown <= 0:
        return Adjusted(None, None, None, 0.0, ("no impressions in the interval (CTR is 0/0)",))

    raw = sum(by_position_clicks.values()) / shown
    corrected = corrected_ctr(by_position_impressions, by_position_clicks, bias)
    adjusted = corrected
    if use_confounders and load_rps is not None and corrected is not None:
        adjusted, note = history.adjust(corrected, tier, at.hour, load_rps, tiers)
        if note:
            notes.append(note)
    if corrected is not None and load_rps is not None:
        history.add(tier, at.hour, load_rps, corrected, shown)
    return Adjusted(raw, corrected, adjusted, shown, tuple(notes))
