"""Off-policy estimators: the value of a candidate policy from logs of a behaviour policy.

Notation, per logged row i: reward r_i, behaviour propensity p_i = pi_b(a_i | x_i) of the logged
action, candidate probability pi_e(a_i | x_i) of the same action, importance weight
w_i = pi_e(a_i | x_i) / p_i, and, for the model-based estimators, a reward model's prediction
q_i = q(x_i, a_i) at the logged action and its candidate-policy average
m_i = sum_a pi_e(a | x_i) q(x_i, a).

    ips        mean(w r), optionally with w clipped to min(w, clip)
    snips      sum(w r) / sum(w)
    dm         mean(m)
    dr         mean(m + w (r - q)), optionally clipped
    sndr       mean(m) + sum(w (r - q)) / sum(w)
    switch-dr  mean(m + [w <= tau] w (r - q))        (model only where weights exceed tau)
    dr-os      mean(m + w~ (r - q)), w~ = lambda w / (w^2 + lambda)   (optimistic shrinkage)

Every estimator has the form mean(base) + sum(numerator) / sum(denominator), which lets the
percentile bootstrap resample rows once and evaluate all of them on the same resamples (the gate
relies on that for a paired difference).

Propensities that are missing (NaN), not positive or above 1 are rejected with `InvalidLogError`
naming the row. Tiny propensities are valid but make weights explode: `estimate` reports how many
rows fall below `tiny_propensity` and which ones, and never clips unless asked to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch-dr", "dr-os")
MODEL_BASED_ESTIMATORS = frozenset({"dm", "dr", "sndr", "switch-dr", "dr-os"})

# Above this many resampled rows per bootstrap chunk, the index matrix is split to bound memory.
_BOOTSTRAP_CHUNK_CELLS = 2_000_000
_TINY_ROWS_REPORTED = 20


class InvalidLogError(ValueError):
    """Logged rows cannot be used for off-policy estimation (bad propensity, reward or shape)."""


def _as_float_array(name: str, values: object) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise InvalidLogError(f"{name} must be numeric: {error}") from error
    if array.ndim != 1:
        raise InvalidLogError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_propensity(propensity: np.ndarray) -> None:
    missing = np.isnan(propensity)
    if missing.any():
        row = _first_bad_row(missing)
        raise InvalidLogError(
            f"propensity at row {row} is missing (NaN); every logged action needs the "
            f"probability with which the behaviour policy chose it ({int(missing.sum())} rows affected)"
        )
    not_positive = propensity <= 0.0
    if not_positive.any():
        row = _first_bad_row(not_positive)
        raise InvalidLogError(
            f"propensity at row {row} is {float(propensity[row])!r}; propensities must be in (0, 1] "
            f"because the behaviour policy did take the logged action ({int(not_positive.sum())} rows affected)"
        )
    infinite_or_above_one = ~np.isfinite(propensity) | (propensity > 1.0 + 1e-9)
    if infinite_or_above_one.any():
        row = _first_bad_row(infinite_or_above_one)
        raise InvalidLogError(f"propensity at row {row} is {float(propensity[row])!r}; propensities must be in (0, 1]")


def _check_probability(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0 + 1e-9)
    if bad.any():
        row = _first_bad_row(bad)
        raise InvalidLogError(f"{name} at row {row} is {float(values[row])!r}; it must be a probability in [0, 1]")


def _check_finite(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first_bad_row(bad)
        raise InvalidLogError(f"{name} at row {row} is {float(values[row])!r}; it must be a finite number")


@dataclass(frozen=True)
class OffPolicyData:
    """Validated per-row arrays that every estimator reads.

    Only the model-based estimators (dm, dr, sndr, switch-dr, dr-os) need `q_hat_logged` and
    `q_hat_target`. `from_distributions` builds them from a reward model's prediction for
    every action.
    """

    reward: np.ndarray
    propensity: np.ndarray
    target_propensity: np.ndarray
    q_hat_logged: np.ndarray | None = None
    q_hat_target: np.ndarray | None = None

    def __post_init__(self) -> None:
        reward = _as_float_array("reward", self.reward)
        propensity = _as_float_array("propensity", self.propensity)
        target = _as_float_array("target_propensity", self.target_propensity)
        n = reward.shape[0]
        if n == 0:
            raise InvalidLogError("off-policy estimation needs at least one logged row, got none")
        for name, array in (("propensity", propensity), ("target_propensity", target)):
            if array.shape[0] != n:
                raise InvalidLogError(f"{name} has {array.shape[0]} rows but reward has {n}")
        _check_finite("reward", reward)
        _check_propensity(propensity)
        _check_probability("target_propensity", target)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "propensity", propensity)
        object.__setattr__(self, "target_propensity", target)

        if (self.q_hat_logged is None) != (self.q_hat_target is None):
            raise InvalidLogError("q_hat_logged and q_hat_target must be given together")
        for name in ("q_hat_logged", "q_hat_target"):
            values = getattr(self, name)
            if values is None:
                continue
            array = _as_float_array(name, values)
            if array.shape[0] != n:
                raise InvalidLogError(f"{name} has {array.shape[0]} rows but reward has {n}")
            _check_finite(name, array)
            object.__setattr__(self, name, array)

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    @property
    def weights(self) -> np.ndarray:
        """Importance weights pi_e(a_i | x_i) / pi_b(a_i | x_i)."""
        return self.target_propensity / self.propensity

    @property
    def has_reward_model(self) -> bool:
        return self.q_hat_logged is not None

    def subset(self, rows: np.ndarray) -> OffPolicyData:
        """Return the same data restricted to `rows` (indices or a boolean mask)."""
        return OffPolicyData(
            reward=self.reward[rows],
            propensity=self.propensity[rows],
            target_propensity=self.target_propensity[rows],
            q_hat_logged=None if self.q_hat_logged is None else self.q_hat_logged[rows],
            q_hat_target=None if self.q_hat_target is None else self.q_hat_target[rows],
        )

    @classmethod
    def from_distributions(
        cls,
        *,
        reward: Sequence[float] | np.ndarray,
        action: Sequence[int] | np.ndarray,
        propensity: Sequence[float] | np.ndarray,
        target_distribution: np.ndarray,
        q_hat: np.ndarray | None = None,
    ) -> OffPolicyData:
        """Build the arrays from the candidate's full action distribution.

        `action` contains action indices. `target_distribution` is (n_rows, n_actions), or
        (n_actions,) for a context-free candidate, and each row sums to 1. `q_hat`, when given,
        is the reward model's (n_rows, n_actions) prediction for every action.
        """
        try:
            action_index = np.asarray(action)
            if action_index.ndim != 1 or not np.issubdtype(action_index.dtype, np.integer):
                raise InvalidLogError(f"action must be a one-dimensional integer array, got dtype {action_index.dtype}")
        except (TypeError, ValueError) as error:
            raise InvalidLogError(f"action must be integer action indices: {error}") from error
        n = action_index.shape[0]

        distribution = np.asarray(target_distribution, dtype=float)
        if distribution.ndim == 1:
            distribution = np.broadcast_to(distribution, (n, distribution.shape[0]))
        if distribution.ndim != 2 or distribution.shape[0] != n:
            raise InvalidLogError(
                f"target_distribution must have shape (n_rows={n}, n_actions), got {distribution.shape}"
            )
        n_actions = distribution.shape[1]
        out_of_range = (action_index < 0) | (action_index >= n_actions)
        if out_of_range.any():
            row = _first_bad_row(out_of_range)
            raise InvalidLogError(f"action at row {row} is {action_index[row]}, outside 0..{n_actions - 1}")
        bad_probability = ~np.isfinite(distribution).all(axis=1) | (distribution < 0.0).any(axis=1)
        bad_sum = np.abs(distribution.sum(axis=1) - 1.0) > 1e-6
        if (bad_probability | bad_sum).any():
            row = _first_bad_row(bad_probability | bad_sum)
            raise InvalidLogError(
                f"target_distribution at row {row} is not a probability distribution "
                f"(sum {distribution[row].sum()!r}, min {distribution[row].min()!r})"
            )

        rows = np.arange(n)
        q_hat_logged = q_hat_target = None
        if q_hat is not None:
            q_matrix = np.asarray(q_hat, dtype=float)
            if q_matrix.shape != distribution.shape:
                raise InvalidLogError(f"q_hat must have shape {distribution.shape}, got {q_matrix.shape}")
            q_hat_logged = q_matrix[rows, action_index]
            q_hat_target = (distribution * q_matrix).sum(axis=1)
        return cls(
            reward=reward,
            propensity=propensity,
            target_propensity=distribution[rows, action_index],
            q_hat_logged=q_hat_logged,
            q_hat_target=q_hat_target,
        )


@dataclass(frozen=True)
class _Terms:
    """An estimator as mean(base) + sum(numerator) / sum(denominator); None parts are absent.

    A None denominator with a numerator means the row count, so the ratio is a plain mean.
    `weights` are the importance weights the estimator actually applies, for the effective
    sample size.
    """

    base: np.ndarray | None
    numerator: np.ndarray | None
    denominator: np.ndarray | None
    weights: np.ndarray | None
    n_clipped: int = 0


def _require_reward_model(data: OffPolicyData, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    if data.q_hat_logged is None or data.q_hat_target is None:
        raise InvalidLogError(
            f"estimator {estimator!r} needs reward-model predictions; build the data with "
            "OffPolicyData.from_distributions(..., q_hat=...)"
        )
    return data.q_hat_logged, data.q_hat_target


def _check_positive_parameter(name: str, value: float | None, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if value is None or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _estimator_terms(
    data: OffPolicyData,
    estimator: str,
    *,
    clip: float | None = None,
    switch_threshold: float = 10.0,
    shrinkage: float = 10.0,
) -> _Terms:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    _check_positive_parameter("clip", clip, allow_none=True)
    weights = data.weights
    n_clipped = 0
    if clip is not None and estimator in ("ips", "dr"):
        n_clipped = int((weights > clip).sum())
        weights = np.minimum(weights, clip)
    elif clip is not None:
        raise ValueError(f"clip applies to 'ips' and 'dr' only, not {estimator!r}")

    if estimator == "ips":
        return _Terms(None, weights * data.reward, None, weights, n_clipped)
    if estimator == "snips":
        return _Terms(None, weights * data.reward, weights, weights)

    q_logged, q_target = _require_reward_model(data, estimator)
    residual = data.reward - q_logged
    if estimator == "dm":
        return _Terms(q_target, None, None, None)
    if estimator == "dr":
        return _Terms(q_target, weights * residual, None, weights, n_clipped)
    if estimator == "sndr":
        return _Terms(q_target, weights * residual, weights, weights)
    if estimator == "switch-dr":
        _check_positive_parameter("switch_threshold", switch_threshold, allow_none=False)
        switched = np.where(weights <= switch_threshold, weights, 0.0)
        return _Terms(q_target, switched * residual, None, switched)
    _check_positive_parameter("shrinkage", shrinkage, allow_none=False)
    shrunk = shrinkage * weights / (weights**2 + shrinkage)
    return _Terms(q_target, shrunk * residual, None, shrunk)


def _terms_value(terms: _Terms, n: int) -> float:
    value = 0.0
    if terms.base is not None:
        value += float(terms.base.mean())
    if terms.numerator is not None:
        denominator = float(n) if terms.denominator is None else float(terms.denominator.sum())
        if denominator == 0.0:
            return float("nan")
        value += float(terms.numerator.sum()) / denominator
    return value


def point_estimate(
    data: OffPolicyData,
    estimator: str,
    *,
    clip: float | None = None,
    switch_threshold: float = 10.0,
    shrinkage: float = 10.0,
) -> float:
    """Compute the estimator's value on all rows, without an interval.

    Returns NaN for a self-normalised estimator whose weights sum to zero (the candidate never
    takes any logged action).
    """
    terms = _estimator_terms(data, estimator, clip=clip, switch_threshold=switch_threshold, shrinkage=shrinkage)
    return _terms_value(terms, data.n)


def ips(data: OffPolicyData, *, clip: float | None = None) -> float:
    return point_estimate(data, "ips", clip=clip)


def snips(data: OffPolicyData) -> float:
    return point_estimate(data, "snips")


def dm(data: OffPolicyData) -> float:
    return point_estimate(data, "dm")


def dr(data: OffPolicyData, *, clip: float | None = None) -> float:
    return point_estimate(data, "dr", clip=clip)


def sndr(data: OffPolicyData) -> float:
    return point_estimate(data, "sndr")


def switch_dr(data: OffPolicyData, *, threshold: float) -> float:
    return point_estimate(data, "switch-dr", switch_threshold=threshold)


def dr_shrinkage(data: OffPolicyData, *, shrinkage: float) -> float:
    return point_estimate(data, "dr-os", shrinkage=shrinkage)


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2; 0 when every weight is 0.

    Example: weights [1, 1, 1, 1] give 4.0; weights [4, 0, 0, 0] give 1.0.
    """
    weights = np.asarray(weights, dtype=float)
    square_sum = float((weights**2).sum())
    if square_sum == 0.0:
        return 0.0
    return float(weights.sum()) ** 2 / square_sum


@dataclass(frozen=True)
class Estimate:
    """A policy value with its percentile-bootstrap interval and the diagnostics behind it.

    `effective_sample_size` is Kish's ESS of the importance weights the estimator applies (the
    row count for dm and for on-policy means). `tiny_propensity_rows` lists at most the first 20
    rows whose behaviour propensity is below the `tiny_propensity` threshold given to `estimate`;
    `n_tiny_propensity` counts all of them.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    effective_sample_size: float
    max_weight: float
    n_clipped: int
    min_propensity: float
    n_tiny_propensity: int
    tiny_propensity_rows: tuple[int, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n": self.n,
            "effective_sample_size": self.effective_sample_size,
            "max_weight": self.max_weight,
            "n_clipped": self.n_clipped,
            "min_propensity": self.min_propensity,
            "n_tiny_propensity": self.n_tiny_propensity,
            "tiny_propensity_rows": list(self.tiny_propensity_rows),
        }


def _check_bootstrap_parameters(confidence: float, n_bootstrap: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")


def _bootstrap_values(
    terms_list: Sequence[_Terms], n: int, *, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Evaluate every estimator on the same `n_bootstrap` row resamples; returns (n_bootstrap, k).

    Resamples are drawn as index matrices and turned into row counts, so each resample costs
    one matrix-vector product per term.
    """
    values = np.empty((n_bootstrap, len(terms_list)))
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // n)
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=size * n).reshape(size, n).astype(float)
        for column, terms in enumerate(terms_list):
            value = np.zeros(size)
            if terms.base is not None:
                value += counts @ terms.base / n
            if terms.numerator is not None:
                numerator = counts @ terms.numerator
                denominator = np.full(size, float(n)) if terms.denominator is None else counts @ terms.denominator
                with np.errstate(divide="ignore", invalid="ignore"):
                    value += np.where(denominator > 0.0, numerator / denominator, np.nan)
            values[start : start + size, column] = value
    return values


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap samples, ignoring NaN resamples."""
    tail = (1.0 - confidence) / 2.0
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _tiny_rows(data: OffPolicyData, tiny_propensity: float) -> np.ndarray:
    return np.flatnonzero(data.propensity < tiny_propensity)


def _diagnosed_estimate(
    data: OffPolicyData,
    estimator: str,
    terms: _Terms,
    samples: np.ndarray,
    *,
    confidence: float,
    tiny_propensity: float,
) -> Estimate:
    tiny = _tiny_rows(data, tiny_propensity)
    if tiny.size:
        logger.warning(
            "%d of %d logged rows have a propensity below %g (smallest %g); their weights are "
            "not clipped, so expect a wide interval",
            tiny.size,
            data.n,
            tiny_propensity,
            float(data.propensity.min()),
        )
    ci_low, ci_high = percentile_interval(samples, confidence)
    weights = terms.weights
    return Estimate(
        estimator=estimator,
        value=_terms_value(terms, data.n),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        n=data.n,
        effective_sample_size=float(data.n) if weights is None else effective_sample_size(weights),
        max_weight=0.0 if weights is None else float(weights.max()),
        n_clipped=terms.n_clipped,
        min_propensity=float(data.propensity.min()),
        n_tiny_propensity=int(tiny.size),
        tiny_propensity_rows=tuple(int(row) for row in tiny[:_TINY_ROWS_REPORTED]),
    )


def estimate(
    data: OffPolicyData,
    estimator: str,
    *,
    clip: float | None = None,
    switch_threshold: float = 10.0,
    shrinkage: float = 10.0,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int | np.random.Generator = 0,
    tiny_propensity: float = 1e-3,
) -> Estimate:
    """Estimate the candidate's value with a percentile-bootstrap interval and diagnostics.

    `clip` caps importance weights for ips and dr; `switch_threshold` is Switch-DR's tau;
    `shrinkage` is DR-OS's lambda. Rows with a propensity below `tiny_propensity` are counted
    and logged at warning, never clipped implicitly.
    """
    _check_bootstrap_parameters(confidence, n_bootstrap)
    terms = _estimator_terms(data, estimator, clip=clip, switch_threshold=switch_threshold, shrinkage=shrinkage)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    samples = _bootstrap_values([terms], data.n, n_bootstrap=n_bootstrap, rng=rng)[:, 0]
    return _diagnosed_estimate(
        data, estimator, terms, samples, confidence=confidence, tiny_propensity=tiny_propensity
    )


def _on_policy_terms(reward: np.ndarray) -> _Terms:
    """Build the terms of the behaviour policy's own value, the plain mean of logged rewards."""
    return _Terms(np.asarray(reward, dtype=float), None, None, None)
