"""Confounder adjustment: the tier's effect on CTR with hour of day and load held fixed.

CTR moves with the hour of day and with load (the traffic mix changes), and the behaviour policy
picks tiers according to the same conditions: a large tier used mostly at peak hours collects the
peak hours' clicks. Comparing raw per-tier CTRs then credits the tier with the hour.

Two estimators, both over per-interval observations weighted by impressions:

- `stratified_tier_effects` (the primary estimate of a tier's effect): intervals are grouped
  into hour-of-day strata. Inside a stratum the tiers saw the same hour, and an
  impression-weighted least-squares fit of CTR on the tier and the load (centred on the
  stratum's mean load) removes the load difference between the tiers' intervals. The
  per-stratum CTRs at the stratum's mean load are averaged with the stratum's share of all
  impressions as weight (direct standardisation), which gives the average effect over the
  observed traffic mix. Only strata where both tiers served at least two intervals contribute;
  `overlap_share` reports which share of the impressions that covers. It assumes nothing about
  the shape of the daily cycle and lets the tier effect differ by hour. It does assume that CTR
  is linear in load and constant in time within one hour. A cycle that moves within the hour
  leaves sub-hour confounding, which hour-of-day strata cannot see.
- `regression_tier_effects`: weighted least squares of CTR on tier indicators, a Fourier series
  of the hour (`harmonics` sine/cosine pairs) and a quadratic in standardised load. It pools
  strength across strata, so it works on sparser logs, but it assumes additive effects: when the
  true lift is multiplicative it returns a variance-weighted average of the per-stratum lifts.
  `ConfounderAdjuster` keeps the fitted hour and load terms to adjust a single interval's CTR.

Intervals come from the records' position-corrected CTR when present (`TierObservations.from_records`),
so position bias is removed before confounding is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .records import LoggedDecision

HOURS_PER_DAY = 24


class InvalidObservationsError(ValueError):
    """Per-interval tier observations are missing, inconsistent or too few for the adjustment."""


@dataclass(frozen=True)
class TierObservations:
    """Per-interval observations: the serving tier, its conditions, impressions and CTR."""

    tier: np.ndarray
    hour_of_day: np.ndarray
    load_rps: np.ndarray
    impressions: np.ndarray
    ctr: np.ndarray

    def __post_init__(self) -> None:
        tier = np.asarray(self.tier).astype(str)
        hour = np.asarray(self.hour_of_day)
        arrays = {
            "load_rps": np.asarray(self.load_rps, dtype=float),
            "impressions": np.asarray(self.impressions, dtype=float),
            "ctr": np.asarray(self.ctr, dtype=float),
        }
        n = tier.shape[0]
        if n == 0:
            raise InvalidObservationsError("tier adjustment needs at least one interval, got none")
        for name, array in [("hour_of_day", hour), *arrays.items()]:
            if array.shape != (n,):
                raise InvalidObservationsError(f"{name} has shape {array.shape}, expected ({n},) like tier")
        if not np.issubdtype(hour.dtype, np.integer) or hour.min() < 0 or hour.max() >= HOURS_PER_DAY:
            raise InvalidObservationsError(
                f"hour_of_day must be integers in 0..23, got values from {hour.min().item()!r} to {hour.max().item()!r}"
            )
        for name, array in arrays.items():
            bad = ~np.isfinite(array) | (array < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InvalidObservationsError(f"{name} at interval {row} is {float(array[row])!r}; it must be finite and >= 0")
        object.__setattr__(self, "tier", tier)
        object.__setattr__(self, "hour_of_day", hour.astype(int))
        for name, array in arrays.items():
            object.__setattr__(self, name, array)

    @property
    def n(self) -> int:
        return int(self.tier.shape[0])

    @classmethod
    def from_records(cls, records: Iterable[LoggedDecision], *, use_corrected: bool = True) -> TierObservations:
        """Take each record's position-corrected CTR (raw CTR where it has none).

        Records without impressions carry no CTR and are left out.
        """
        rows = [record for record in records if record.impressions > 0]
        if not rows:
            raise InvalidObservationsError("no logged interval has impressions")

        def ctr_of(record: LoggedDecision) -> float:
            if use_corrected and record.ctr_corrected is not None:
                return record.ctr_corrected
            return record.clicks / record.impressions

        return cls(
            tier=np.array([record.tier for record in rows]),
            hour_of_day=np.array([record.context.hour_of_day for record in rows]),
            load_rps=np.array([record.context.load_rps for record in rows]),
            impressions=np.array([record.impressions for record in rows], dtype=float),
            ctr=np.array([ctr_of(record) for record in rows]),
        )


@dataclass(frozen=True)
class TierEffect:
    """A tier's CTR difference to the reference tier, naive and adjusted, with a bootstrap interval.

    `adjusted_ctr` and `reference_adjusted_ctr` are the standardised CTRs (stratified) or the
    model's predictions averaged over the observed hours and loads (regression). `overlap_share` is the
    share of impressions in strata where both tiers were served (1.0 for regression).
    """

    tier: str
    reference_tier: str
    method: str
    naive_difference: float
    adjusted_difference: float
    ci_low: float
    ci_high: float
    adjusted_ctr: float
    reference_adjusted_ctr: float
    overlap_share: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _check_tiers(observations: TierObservations, reference_tier: str, *, require_other: bool = True) -> list[str]:
    tiers = sorted(set(observations.tier.tolist()))
    if reference_tier not in tiers:
        raise InvalidObservationsError(f"reference tier {reference_tier!r} never served an interval; tiers seen: {tiers}")
    others = [tier for tier in tiers if tier != reference_tier]
    if not others and require_other:
        raise InvalidObservationsError(f"only the reference tier {reference_tier!r} served; there is nothing to compare")
    return others


def _naive_difference(observations: TierObservations, tier: str, reference_tier: str, weights: np.ndarray) -> float:
    def weighted_ctr(name: str) -> float:
        rows = observations.tier == name
        return float((weights[rows] * observations.ctr[rows]).sum() / weights[rows].sum())

    return weighted_ctr(tier) - weighted_ctr(reference_tier)


def _resample_weights(n: int, n_bootstrap: int, rng: np.random.Generator) -> Iterable[np.ndarray]:
    for _ in range(n_bootstrap):
        yield np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float)


def _interval(samples: Sequence[float], confidence: float) -> tuple[float, float]:
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def _hour_strata(observations: TierObservations, hour_bucket_hours: int) -> np.ndarray:
    if isinstance(hour_bucket_hours, bool) or not isinstance(hour_bucket_hours, int) or hour_bucket_hours < 1 or (
        HOURS_PER_DAY % hour_bucket_hours
    ):
        raise ValueError(f"hour_bucket_hours must be a whole number of hours dividing 24, got {hour_bucket_hours!r}")
    return observations.hour_of_day // hour_bucket_hours


@dataclass(frozen=True)
class _StratumFit:
    impressions: float
    tier_ctr: float
    reference_ctr: float


def _fit_stratum(
    is_tier: np.ndarray, load: np.ndarray, ctr: np.ndarray, weight: np.ndarray
) -> _StratumFit | None:
    """Weighted least squares of CTR on [1, is_tier, load - mean load] inside one hour stratum.

    Returns the two tiers' CTRs at the stratum's mean load, or None when either tier has fewer
    than two intervals (the stratum then lacks overlap and is left out).
    """
    tier_weight = weight[is_tier == 1.0].sum()
    reference_weight = weight[is_tier == 0.0].sum()
    if (is_tier == 1.0).sum() < 2 or (is_tier == 0.0).sum() < 2 or tier_weight == 0 or reference_weight == 0:
        return None
    centred_load = load - np.average(load, weights=weight)
    design = np.column_stack([np.ones(is_tier.shape[0]), is_tier, centred_load])
    intercept, tier_difference, _ = _weighted_least_squares(design, ctr, weight)
    return _StratumFit(float(weight.sum()), float(intercept + tier_difference), float(intercept))


def _standardised_difference(
    strata: np.ndarray,
    is_tier: np.ndarray,
    in_pair: np.ndarray,
    observations: TierObservations,
    row_weights: np.ndarray,
) -> tuple[float, float, float, float]:
    """(difference, tier CTR, reference CTR, overlap share) standardised over the hour strata."""
    weight = row_weights * observations.impressions
    total = weight.sum()
    fits: list[_StratumFit] = []
    for stratum in np.unique(strata):
        rows = (strata == stratum) & in_pair & (weight > 0)
        fit = _fit_stratum(is_tier[rows], observations.load_rps[rows], observations.ctr[rows], weight[rows])
        if fit is not None:
            # The stratum's weight is all its impressions, whichever tier served them.
            fits.append(_StratumFit(float(weight[strata == stratum].sum()), fit.tier_ctr, fit.reference_ctr))
    if not fits or total == 0:
        return float("nan"), float("nan"), float("nan"), 0.0
    stratum_weight = np.array([fit.impressions for fit in fits])
    tier_ctr = float(np.average([fit.tier_ctr for fit in fits], weights=stratum_weight))
    reference_ctr = float(np.average([fit.reference_ctr for fit in fits], weights=stratum_weight))
    return tier_ctr - reference_ctr, tier_ctr, reference_ctr, float(stratum_weight.sum() / total)


def stratified_tier_effects(
    observations: TierObservations,
    reference_tier: str,
    *,
    hour_bucket_hours: int = 1,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, TierEffect]:
    """Estimate each other tier's CTR difference to `reference_tier`, standardised over hour-of-day strata.

    Inside each stratum of `hour_bucket_hours` hours, an impression-weighted least-squares fit
    of CTR on the tier and the load (centred on the stratum's mean) gives both tiers' CTR at the
    same hour and load. The strata are averaged with their share of all impressions as weight.

    Example: if stratum A (60% of impressions) gives large 0.06 and small 0.05, and stratum B
    (40%) gives large 0.03 and small 0.025, the adjusted difference is
    0.6 * 0.01 + 0.4 * 0.005 = 0.008 whatever share of each stratum each tier served.
    Raises InvalidObservationsError when no stratum has both tiers at least twice.
    """
    others = _check_tiers(observations, reference_tier)
    strata = _hour_strata(observations, hour_bucket_hours)
    ones = np.ones(observations.n)
    rng = np.random.default_rng(seed)
    resamples = list(_resample_weights(observations.n, n_bootstrap, rng))

    effects: dict[str, TierEffect] = {}
    for tier in others:
        is_tier = (observations.tier == tier).astype(float)
        in_pair = (observations.tier == tier) | (observations.tier == reference_tier)
        args = (strata, is_tier, in_pair, observations)
        difference, tier_ctr, reference_ctr, overlap_share = _standardised_difference(*args, ones)
        if overlap_share == 0.0:
            raise InvalidObservationsError(
                f"tier {tier!r} and reference tier {reference_tier!r} never both served two intervals "
                f"of the same {hour_bucket_hours}-hour stratum; use wider strata or the regression method"
            )
        samples = [_standardised_difference(*args, weights)[0] for weights in resamples]
        ci_low, ci_high = _interval(samples, confidence)
        effects[tier] = TierEffect(
            tier=tier,
            reference_tier=reference_tier,
            method="stratified",
            naive_difference=_naive_difference(observations, tier, reference_tier, observations.impressions),
            adjusted_difference=difference,
            ci_low=ci_low,
            ci_high=ci_high,
            adjusted_ctr=tier_ctr,
            reference_adjusted_ctr=reference_ctr,
            overlap_share=overlap_share,
        )
    return effects


def _confounder_features(hour: np.ndarray, load_z: np.ndarray, harmonics: int) -> np.ndarray:
    angle = 2.0 * np.pi * hour / HOURS_PER_DAY
    columns = []
    for k in range(1, harmonics + 1):
        columns.append(np.sin(k * angle))
        columns.append(np.cos(k * angle))
    columns.append(load_z)
    columns.append(load_z**2)
    return np.column_stack(columns)


@dataclass(frozen=True)
class ConfounderAdjuster:
    """Hour-of-day and load terms of a fitted CTR regression, to adjust one interval's CTR.

    `adjust_ctr` subtracts the interval's confounder term minus its impression-weighted average
    over the fitted intervals, so an interval at a low-CTR hour is credited with what the same
    tier would have earned at an average hour and load.
    """

    harmonics: int
    load_mean: float
    load_std: float
    coefficients: tuple[float, ...]
    average_term: float

    def confounder_term(self, hour_of_day: int | np.ndarray, load_rps: float | np.ndarray) -> np.ndarray:
        hour = np.atleast_1d(np.asarray(hour_of_day, dtype=float))
        load_z = (np.atleast_1d(np.asarray(load_rps, dtype=float)) - self.load_mean) / self.load_std
        return _confounder_features(hour, load_z, self.harmonics) @ np.asarray(self.coefficients)

    def adjust_ctr(self, ctr: float, hour_of_day: int, load_rps: float) -> float:
        """Example: a term of -0.01 at 04:00 against an average of 0 turns a CTR of 0.03 into 0.04."""
        if not 0 <= hour_of_day < HOURS_PER_DAY:
            raise ValueError(f"hour_of_day must be in 0..23, got {hour_of_day!r}")
        if not np.isfinite(load_rps) or load_rps < 0:
            raise ValueError(f"load_rps must be finite and >= 0, got {load_rps!r}")
        term = float(self.confounder_term(hour_of_day, load_rps)[0])
        return float(ctr - (term - self.average_term))


def _design(observations: TierObservations, tiers: Sequence[str], harmonics: int, load_mean: float, load_std: float):
    load_z = (observations.load_rps - load_mean) / load_std
    confounders = _confounder_features(observations.hour_of_day.astype(float), load_z, harmonics)
    indicators = np.column_stack([(observations.tier == tier).astype(float) for tier in tiers]) if tiers else (
        np.empty((observations.n, 0))
    )
    return np.column_stack([np.ones(observations.n), indicators, confounders]), confounders


def _weighted_least_squares(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    root = np.sqrt(weights)
    coefficients, *_ = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)
    return coefficients


@dataclass(frozen=True)
class ConfounderRegression:
    """A fitted CTR regression: the reference tier's CTR at average conditions, each other
    tier's additive difference to it, and the adjuster built from the hour and load terms."""

    reference_tier: str
    reference_ctr_at_average: float
    tier_differences: dict[str, float]
    adjuster: ConfounderAdjuster


def fit_confounder_regression(
    observations: TierObservations, reference_tier: str, *, harmonics: int = 2
) -> ConfounderRegression:
    """Fit CTR ~ tier + hour Fourier terms + load + load^2 by impression-weighted least squares.

    With only the reference tier in the log there are no tier terms: the fit still gives the hour
    and load terms that `ConfounderAdjuster` needs, and `tier_differences` is empty.
    """
    if harmonics < 0:
        raise ValueError(f"harmonics must be >= 0, got {harmonics!r}")
    others = _check_tiers(observations, reference_tier, require_other=False)
    n_parameters = 1 + len(others) + 2 * harmonics + 2
    if observations.n <= n_parameters:
        raise InvalidObservationsError(
            f"regression with {n_parameters} parameters needs more than {n_parameters} intervals, got {observations.n}"
        )
    load_mean = float(np.average(observations.load_rps, weights=observations.impressions))
    load_std = float(observations.load_rps.std()) or 1.0
    design, confounders = _design(observations, others, harmonics, load_mean, load_std)
    coefficients = _weighted_least_squares(design, observations.ctr, observations.impressions)
    tier_coefficients = {tier: float(coefficients[1 + index]) for index, tier in enumerate(others)}
    confounder_coefficients = coefficients[1 + len(others) :]
    average_term = float(np.average(confounders @ confounder_coefficients, weights=observations.impressions))
    adjuster = ConfounderAdjuster(
        harmonics=harmonics,
        load_mean=load_mean,
        load_std=load_std,
        coefficients=tuple(float(c) for c in confounder_coefficients),
        average_term=average_term,
    )
    return ConfounderRegression(
        reference_tier=reference_tier,
        reference_ctr_at_average=float(coefficients[0]) + average_term,
        tier_differences=tier_coefficients,
        adjuster=adjuster,
    )


def regression_tier_effects(
    observations: TierObservations,
    reference_tier: str,
    *,
    harmonics: int = 2,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, TierEffect]:
    """Estimate each other tier's additive CTR difference to `reference_tier` by the confounder regression."""
    fit = fit_confounder_regression(observations, reference_tier, harmonics=harmonics)
    others = list(fit.tier_differences)
    design, _ = _design(observations, others, harmonics, fit.adjuster.load_mean, fit.adjuster.load_std)
    rng = np.random.default_rng(seed)
    samples = np.array(
        [
            _weighted_least_squares(design, observations.ctr, observations.impressions * weights)[1 : 1 + len(others)]
            for weights in _resample_weights(observations.n, n_bootstrap, rng)
        ]
    )
    effects: dict[str, TierEffect] = {}
    for index, tier in enumerate(others):
        ci_low, ci_high = _interval(samples[:, index], confidence)
        effects[tier] = TierEffect(
            tier=tier,
            reference_tier=reference_tier,
            method="regression",
            naive_difference=_naive_difference(observations, tier, reference_tier, observations.impressions),
            adjusted_difference=fit.tier_differences[tier],
            ci_low=ci_low,
            ci_high=ci_high,
            adjusted_ctr=fit.reference_ctr_at_average + fit.tier_differences[tier],
            reference_adjusted_ctr=fit.reference_ctr_at_average,
            overlap_share=1.0,
        )
    return effects
