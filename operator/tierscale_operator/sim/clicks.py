"""Click-through rate per tier, hour-of-day cycle and position bias.

The offline evaluation measures, per tier, HR@10 (the user's next item is in the top 10) and
NDCG@10 (with one relevant item: E[1 / log2(rank + 1)], zero outside the top 10). Read as a
position-based click model, NDCG@10 is exactly the click probability of a request whose user
examines position k with probability 1 / log2(k + 1) and clicks the relevant item when examined.
The simulator therefore uses

    CTR(tier, hour) = click_scale * NDCG@10(tier) * (1 + amplitude * cos(2 pi (hour - peak_hour) / 24))

`click_scale` is an assumption: it maps "the held-out next item" to "any item the user would click"
(the default 0.5 gives a CTR of a few percent). The hour factor averages to 1 over a day, and it is
a confounder: CTR and traffic both peak in the evening.

Clicks per position split the same total: the rank of the relevant item given a hit has
P(rank = k) proportional to k^-beta, with beta fitted so that E[1 / log2(rank + 1) | hit] equals
NDCG@10 / HR@10, and position k receives click_scale * HR@10 * P(rank = k) / log2(k + 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tierscale_operator.sim.profile import ServiceProfile

POSITIONS = 10
EXAMINATION = 1.0 / np.log2(np.arange(1, POSITIONS + 1) + 1.0)


def fit_rank_exponent(ndcg_over_hr: float) -> float:
    """Find beta with E[examination | hit] = ndcg_over_hr when P(rank = k) is proportional to k^-beta."""
    ranks = np.arange(1, POSITIONS + 1, dtype=np.float64)

    def mean_examination(beta: float) -> float:
        weights = ranks**-beta
        return float((weights * EXAMINATION).sum() / weights.sum())

    low, high = -20.0, 40.0
    if not mean_examination(low) <= ndcg_over_hr <= mean_examination(high):
        raise ValueError(
            f"NDCG@10 / HR@10 = {ndcg_over_hr:.4f} is outside what ranks 1-10 allow "
            f"({mean_examination(low):.4f} to {mean_examination(high):.4f})"
        )
    for _ in range(100):
        middle = 0.5 * (low + high)
        if mean_examination(middle) < ndcg_over_hr:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclasses.dataclass(frozen=True)
class ClickModel:
    """CTR per tier and hour, and per-position click probabilities."""

    ctr_by_tier: np.ndarray  # (n_tiers,) daily mean CTR
    position_click_probability: np.ndarray  # (n_tiers, POSITIONS), rows sum to ctr_by_tier
    hour_amplitude: float
    peak_hour: float

    @classmethod
    def from_profile(cls, profile: ServiceProfile, *, click_scale: float = 0.5, hour_amplitude: float = 0.2,
                     peak_hour: float = 21.0) -> ClickModel:
        if not 0 < click_scale <= 1:
            raise ValueError(f"click_scale must be in (0, 1], got {click_scale!r}")
        if not 0 <= hour_amplitude < 1:
            raise ValueError(f"hour_amplitude must be in [0, 1), got {hour_amplitude!r}")
        ctr = []
        positions = []
        ranks = np.arange(1, POSITIONS + 1, dtype=np.float64)
        for tier in profile.tiers:
            beta = fit_rank_exponent(tier.ndcg_at_10 / tier.hr_at_10)
            rank_probability = ranks**-beta / (ranks**-beta).sum()
            per_position = click_scale * tier.hr_at_10 * rank_probability * EXAMINATION
            positions.append(per_position)
            ctr.append(per_position.sum())
        return cls(
            ctr_by_tier=np.array(ctr),
            position_click_probability=np.array(positions),
            hour_amplitude=hour_amplitude,
            peak_hour=peak_hour,
        )

    def hour_factor(self, hour_of_day: np.ndarray) -> np.ndarray:
        angle = 2.0 * np.pi * (np.asarray(hour_of_day, dtype=np.float64) - self.peak_hour) / 24.0
        return 1.0 + self.hour_amplitude * np.cos(angle)

    def ctr(self, tier: np.ndarray, hour_of_day: np.ndarray) -> np.ndarray:
        return self.ctr_by_tier[np.asarray(tier, dtype=np.int64)] * self.hour_factor(hour_of_day)

    def clicks_by_position(self, rng: np.random.Generator, tier: np.ndarray, hour_of_day: np.ndarray,
                           impressions: np.ndarray) -> np.ndarray:
        """Sample clicks per position for `impressions` requests per row; shape (n, POSITIONS)."""
        probability = self.position_click_probability[np.asarray(tier, dtype=np.int64)]
        probability = probability * self.hour_factor(hour_of_day)[:, None]
        return rng.binomial(np.asarray(impressions, dtype=np.int64)[:, None], np.clip(probability, 0.0, 1.0))
