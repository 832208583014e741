"""Position-bias correction of click rates under the examination model.

The examination model states P(click | item, position k) = theta_k * gamma_item: a user examines
position k with probability theta_k and clicks an examined item with its relevance gamma.
Items shown higher are clicked more whatever the tier, so a tier that happens to be measured on
traffic with more top-position impressions looks better than it is. Dividing each click at
position k by theta_k (inverse propensity weighting) removes that.

theta is relative to the first position (theta_1 = 1), so a corrected CTR reads as "the CTR had
every impression been at the first position". It comes from configuration
(`PositionBias.from_config`) or is estimated from a randomised slice of traffic:

- `estimate_from_swaps`: the server swaps two adjacent positions k and k+1 at random. Items
  from original rank k are then seen at k and at k+1 with the same relevance mix, so
      theta_{k+1} / theta_k = (ctr[k -> k+1] + ctr[k+1 -> k+1]) / (ctr[k -> k] + ctr[k+1 -> k])
  where ctr[i -> j] is the CTR of items of original rank i shown at position j. Pooling both
  directions uses every swapped impression and cancels the relevance of either rank.
- `estimate_from_randomized_positions`: items placed uniformly at random over positions (the
  Open Bandit Dataset's Random policy) give theta_k = ctr_k / ctr_1 directly.

Intervals are a parametric bootstrap: clicks are redrawn as Binomial(impressions, observed CTR)
per cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class InvalidPositionDataError(ValueError):
    """Position counts or configured examination probabilities are unusable."""


@dataclass(frozen=True)
class PositionBias:
    """Examination probability per position (index 0 is the first position), relative to it.

    `ci_low` and `ci_high` are bootstrap interval bounds per position when estimated, None when
    configured. Values above 1 are allowed: a later position may be examined more than the first
    one (for example a centre slot in a horizontal carousel).
    """

    examination: tuple[float, ...]
    source: str
    ci_low: tuple[float, ...] | None = None
    ci_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.examination) == 0:
            raise InvalidPositionDataError("examination must list at least one position")
        for position, value in enumerate(self.examination, start=1):
            if not np.isfinite(value) or value <= 0:
                raise InvalidPositionDataError(
                    f"examination probability of position {position} is {float(value)!r}; it must be positive and finite"
                )

    @classmethod
    def from_config(cls, examination: Sequence[float]) -> PositionBias:
        """Use configured examination probabilities, rescaled so the first position is 1."""
        values = [float(value) for value in examination]
        bias = cls(tuple(values), source="configured")
        return cls(tuple(value / values[0] for value in bias.examination), source="configured")

    @property
    def n_positions(self) -> int:
        return len(self.examination)

    def click_weights(self, position: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the inverse examination weight 1 / theta_k of each event's 0-based position."""
        position_index = np.asarray(position)
        if position_index.size and (position_index.min() < 0 or position_index.max() >= self.n_positions):
            bad = int(position_index[(position_index < 0) | (position_index >= self.n_positions)][0])
            raise InvalidPositionDataError(f"position {bad} is outside 0..{self.n_positions - 1}")
        return 1.0 / np.asarray(self.examination)[position_index]

    def corrected_ctr(
        self, impressions_by_position: Sequence[float], clicks_by_position: Sequence[float]
    ) -> float:
        """IPS-corrected CTR: sum_k clicks_k / theta_k over sum_k impressions_k.

        Example: theta = (1.0, 0.5), impressions (100, 100), clicks (10, 4) give
        (10 / 1.0 + 4 / 0.5) / 200 = 0.09, against a raw CTR of 0.07.
        """
        impressions, clicks = _check_counts(impressions_by_position, clicks_by_position, self.n_positions)
        total = impressions.sum()
        if total == 0:
            raise InvalidPositionDataError("corrected CTR needs at least one impression, got none")
        return float((clicks / np.asarray(self.examination)).sum() / total)


@dataclass(frozen=True)
class GroupCtr:
    """Raw and position-corrected CTR of one group (for example one tier)."""

    impressions: int
    clicks: int
    ctr_raw: float
    ctr_corrected: float


def corrected_ctr_by_group(
    group: Sequence[str] | np.ndarray,
    position: Sequence[int] | np.ndarray,
    click: Sequence[float] | np.ndarray,
    bias: PositionBias,
) -> dict[str, GroupCtr]:
    """Raw and IPS-corrected CTR per group from impression-level events (0-based positions)."""
    group_array = np.asarray(group)
    click_array = np.asarray(click, dtype=float)
    if not (group_array.shape[0] == click_array.shape[0] == np.asarray(position).shape[0]):
        raise InvalidPositionDataError("group, position and click must have the same length")
    weighted = click_array * bias.click_weights(position)
    result: dict[str, GroupCtr] = {}
    for name in np.unique(group_array):
        rows = group_array == name
        impressions = int(rows.sum())
        result[str(name)] = GroupCtr(
            impressions=impressions,
            clicks=int(click_array[rows].sum()),
            ctr_raw=float(click_array[rows].mean()),
            ctr_corrected=float(weighted[rows].sum() / impressions),
        )
    return result


def _check_counts(impressions: object, clicks: object, n_positions: int) -> tuple[np.ndarray, np.ndarray]:
    impressions_array = np.asarray(impressions, dtype=float)
    clicks_array = np.asarray(clicks, dtype=float)
    if impressions_array.shape != clicks_array.shape:
        raise InvalidPositionDataError(
            f"impressions shape {impressions_array.shape} differs from clicks shape {clicks_array.shape}"
        )
    if impressions_array.shape[0] != n_positions:
        raise InvalidPositionDataError(
            f"counts cover {impressions_array.shape[0]} positions but the bias has {n_positions}"
        )
    for name, array in (("impressions", impressions_array), ("clicks", clicks_array)):
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            cell = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidPositionDataError(f"{name} at {cell} is {float(array[cell])!r}; counts must be non-negative")
    over = clicks_array > impressions_array
    if over.any():
        cell = tuple(int(i) for i in np.argwhere(over)[0])
        raise InvalidPositionDataError(
            f"clicks at {cell} ({float(clicks_array[cell])!r}) exceed impressions ({float(impressions_array[cell])!r})"
        )
    return impressions_array, clicks_array


def swap_counts(
    original_position: Sequence[int] | np.ndarray,
    shown_position: Sequence[int] | np.ndarray,
    click: Sequence[float] | np.ndarray,
    n_positions: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks per (original rank, shown position) cell from randomised-slice events."""
    original = np.asarray(original_position)
    shown = np.asarray(shown_position)
    clicks = np.asarray(click, dtype=float)
    if not (original.shape == shown.shape == clicks.shape):
        raise InvalidPositionDataError("original_position, shown_position and click must have the same length")
    for name, array in (("original_position", original), ("shown_position", shown)):
        bad = (array < 0) | (array >= n_positions)
        if bad.any():
            raise InvalidPositionDataError(f"{name} {int(array[bad][0])} is outside 0..{n_positions - 1}")
    impressions = np.zeros((n_positions, n_positions))
    click_counts = np.zeros((n_positions, n_positions))
    np.add.at(impressions, (original, shown), 1.0)
    np.add.at(click_counts, (original, shown), clicks)
    return impressions, click_counts


def _swap_ratios(impressions: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """theta_{k+1} / theta_k for each adjacent pair; NaN where a pair has no clicks at all."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr = clicks / impressions
    n_positions = impressions.shape[0]
    ratios = np.empty(n_positions - 1)
    for k in range(n_positions - 1):
        numerator = ctr[k, k + 1] + ctr[k + 1, k + 1]
        denominator = ctr[k, k] + ctr[k + 1, k]
        ratios[k] = numerator / denominator if denominator > 0 else np.nan
    return ratios


def _examination_from_ratios(ratios: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], np.cumprod(ratios)])


def _parametric_bootstrap(
    impressions: np.ndarray,
    clicks: np.ndarray,
    statistic,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr = np.where(impressions > 0, clicks / impressions, 0.0)
    samples = np.array(
        [statistic(impressions, rng.binomial(impressions.astype(np.int64), ctr).astype(float)) for _ in range(n_bootstrap)]
    )
    tail = (1.0 - confidence) / 2.0
    low = np.nanquantile(samples, tail, axis=0)
    high = np.nanquantile(samples, 1.0 - tail, axis=0)
    return tuple(float(v) for v in low), tuple(float(v) for v in high)


def estimate_from_swaps(
    impressions: np.ndarray,
    clicks: np.ndarray,
    *,
    n_bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> PositionBias:
    """Estimate theta from adjacent-swap counts indexed [original rank, shown position].

    Raises InvalidPositionDataError naming the pair of positions that has no swapped
    impressions or no clicks, because its ratio is then undefined.
    """
    impressions = np.asarray(impressions, dtype=float)
    clicks = np.asarray(clicks, dtype=float)
    if impressions.ndim != 2 or impressions.shape[0] != impressions.shape[1]:
        raise InvalidPositionDataError(f"swap counts must be square (rank x position), got shape {impressions.shape}")
    n_positions = impressions.shape[0]
    for row in range(n_positions):
        _check_counts(impressions[row], clicks[row], n_positions)
    for k in range(n_positions - 1):
        cells = [(k, k), (k, k + 1), (k + 1, k), (k + 1, k + 1)]
        empty = [cell for cell in cells if impressions[cell] == 0]
        if empty:
            raise InvalidPositionDataError(
                f"positions {k + 1} and {k + 2} have no impressions in (rank, position) cells "
                f"{[(r + 1, p + 1) for r, p in empty]}; the randomised slice must swap this pair"
            )

    ratios = _swap_ratios(impressions, clicks)
    if np.isnan(ratios).any():
        k = int(np.flatnonzero(np.isnan(ratios))[0])
        raise InvalidPositionDataError(
            f"positions {k + 1} and {k + 2} have no clicks at position {k + 1} in the randomised slice; "
            "collect more swapped impressions"
        )

    def statistic(imp: np.ndarray, clk: np.ndarray) -> np.ndarray:
        return _examination_from_ratios(_swap_ratios(imp, clk))

    ci_low, ci_high = _parametric_bootstrap(
        impressions, clicks, statistic, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
    )
    examination = _examination_from_ratios(ratios)
    return PositionBias(tuple(float(v) for v in examination), source="swaps", ci_low=ci_low, ci_high=ci_high)


def estimate_from_randomized_positions(
    impressions_by_position: Sequence[float],
    clicks_by_position: Sequence[float],
    *,
    n_bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> PositionBias:
    """Estimate theta_k = ctr_k / ctr_1 when items were assigned to positions uniformly at random."""
    impressions = np.asarray(impressions_by_position, dtype=float)
    clicks = np.asarray(clicks_by_position, dtype=float)
    _check_counts(impressions, clicks, impressions.shape[0])
    if impressions[0] == 0 or clicks[0] == 0:
        raise InvalidPositionDataError("the first position needs impressions and clicks to anchor theta")
    for name, counts in (("impressions", impressions), ("clicks", clicks)):
        if (counts == 0).any():
            position = int(np.flatnonzero(counts == 0)[0]) + 1
            raise InvalidPositionDataError(f"position {position} has no {name}; theta needs both at every position")

    def statistic(imp: np.ndarray, clk: np.ndarray) -> np.ndarray:
        ctr = clk / imp
        return ctr / ctr[0] if ctr[0] > 0 else np.full(ctr.shape, np.nan)

    ci_low, ci_high = _parametric_bootstrap(
        impressions, clicks, statistic, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
    )
    examination = statistic(impressions, clicks)
    return PositionBias(
        tuple(float(v) for v in examination), source="randomized positions", ci_low=ci_low, ci_high=ci_high
    )
