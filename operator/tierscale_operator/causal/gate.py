"""The off-policy gate: is a candidate policy better than the behaviour policy that wrote the logs?

The operator asks this before trusting a candidate (for example the greedy policy of a freshly
updated Q-table). From the logged decisions it estimates

- the behaviour policy's value: the mean logged reward (on-policy, no weights), and
- the candidate's value: an off-policy estimator (`GateConfig.estimator`, snips by default),

and evaluates both on the same bootstrap resamples of the logged rows, so their difference has a
paired interval. The candidate passes when the one-sided lower bound of that difference at
`confidence` exceeds `min_improvement` and the candidate's effective sample size is at least
`min_effective_sample_size`. Below that size the candidate mostly takes actions the behaviour
policy rarely took, and no interval can be trusted.

NOTE: the behaviour value is the mean over the whole log window. When the behaviour policy
changed inside the window (epsilon decay, table updates), that mean is the value of the mixture
of the policies that wrote the log, which is also what the logged propensities describe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from .estimators import (
    ESTIMATORS,
    MODEL_BASED_ESTIMATORS,
    Estimate,
    InvalidLogError,
    OffPolicyData,
    _bootstrap_values,
    _diagnosed_estimate,
    _estimator_terms,
    _on_policy_terms,
    percentile_interval,
)
from .records import LoggedDecision
from .reward_model import TabularRewardModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    """Settings of the gate: the estimator, its parameters and the confidence required.

    `clip` applies to ips and dr only; `switch_threshold` is Switch-DR's tau and `shrinkage`
    DR-OS's lambda. `tiny_propensity` is the threshold below which rows are reported.
    """

    estimator: str = "snips"
    confidence: float = 0.95
    min_improvement: float = 0.0
    min_effective_sample_size: float = 30.0
    clip: float | None = None
    switch_threshold: float = 10.0
    shrinkage: float = 10.0
    n_bootstrap: int = 1000
    seed: int = 0
    tiny_propensity: float = 1e-3

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"gate estimator {self.estimator!r} is unknown; choose one of {', '.join(ESTIMATORS)}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"gate confidence must be in [0.5, 1), got {self.confidence!r}")
        if not np.isfinite(self.min_improvement):
            raise ValueError(f"min_improvement must be finite, got {self.min_improvement!r}")
        if not np.isfinite(self.min_effective_sample_size) or self.min_effective_sample_size < 0:
            raise ValueError(f"min_effective_sample_size must be finite and >= 0, got {self.min_effective_sample_size!r}")
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 100:
            raise ValueError(f"n_bootstrap must be an integer >= 100, got {self.n_bootstrap!r}")


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with the numbers behind it.

    `improvement` is candidate minus behaviour value; `improvement_lower_bound` is its one-sided
    lower bound at the configured confidence; `reason` is one log-ready sentence.
    """

    passed: bool
    reason: str
    candidate: Estimate
    behaviour: Estimate
    improvement: float
    improvement_lower_bound: float
    improvement_ci_low: float
    improvement_ci_high: float
    n_skipped: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "candidate": self.candidate.as_dict(),
            "behaviour": self.behaviour.as_dict(),
            "improvement": self.improvement,
            "improvement_lower_bound": self.improvement_lower_bound,
            "improvement_ci_low": self.improvement_ci_low,
            "improvement_ci_high": self.improvement_ci_high,
            "n_skipped": self.n_skipped,
        }


def evaluate_candidate(data: OffPolicyData, config: GateConfig = GateConfig(), *, n_skipped: int = 0) -> GateDecision:
    """Run the gate on prepared arrays; `data.reward` is what the behaviour policy earned."""
    candidate_terms = _estimator_terms(
        data,
        config.estimator,
        clip=config.clip,
        switch_threshold=config.switch_threshold,
        shrinkage=config.shrinkage,
    )
    behaviour_terms = _on_policy_terms(data.reward)
    rng = np.random.default_rng(config.seed)
    samples = _bootstrap_values([candidate_terms, behaviour_terms], data.n, n_bootstrap=config.n_bootstrap, rng=rng)

    candidate = _diagnosed_estimate(
        data,
        config.estimator,
        candidate_terms,
        samples[:, 0],
        confidence=config.confidence,
        tiny_propensity=config.tiny_propensity,
    )
    behaviour = _diagnosed_estimate(
        data,
        "on-policy mean",
        behaviour_terms,
        samples[:, 1],
        confidence=config.confidence,
        tiny_propensity=0.0,
    )
    differences = samples[:, 0] - samples[:, 1]
    improvement = candidate.value - behaviour.value
    finite = differences[np.isfinite(differences)]
    lower_bound = float(np.quantile(finite, 1.0 - config.confidence)) if finite.size else float("nan")
    ci_low, ci_high = percentile_interval(differences, config.confidence)

    passed, reason = _verdict(candidate, behaviour, improvement, lower_bound, config)
    log = logger.info if passed else logger.debug
    log("off-policy gate %s: %s", "passed" if passed else "failed", reason)
    return GateDecision(
        passed=passed,
        reason=reason,
        candidate=candidate,
        behaviour=behaviour,
        improvement=improvement,
        improvement_lower_bound=lower_bound,
        improvement_ci_low=ci_low,
        improvement_ci_high=ci_high,
        n_skipped=n_skipped,
    )


def _verdict(
    candidate: Estimate, behaviour: Estimate, improvement: float, lower_bound: float, config: GateConfig
) -> tuple[bool, str]:
    percent = f"{config.confidence:.0%}"
    values = (
        f"candidate {candidate.value:.6g} [{candidate.ci_low:.6g}, {candidate.ci_high:.6g}] by {config.estimator}, "
        f"behaviour {behaviour.value:.6g} [{behaviour.ci_low:.6g}, {behaviour.ci_high:.6g}] on {candidate.n} intervals"
    )
    if not np.isfinite(candidate.value):
        return False, f"the candidate never takes a logged action, so {config.estimator} is undefined ({values})"
    if candidate.effective_sample_size < config.min_effective_sample_size:
        return False, (
            f"effective sample size {candidate.effective_sample_size:.1f} is below the minimum "
            f"{config.min_effective_sample_size:g}: the candidate mostly takes actions the behaviour policy "
            f"rarely took ({values})"
        )
    if not lower_bound > config.min_improvement:
        return False, (
            f"improvement {improvement:.6g} has a one-sided {percent} lower bound {lower_bound:.6g}, "
            f"not above the required {config.min_improvement:g} ({values})"
        )
    return True, (
        f"improvement {improvement:.6g} has a one-sided {percent} lower bound {lower_bound:.6g} "
        f"above the required {config.min_improvement:g}, ESS {candidate.effective_sample_size:.1f} ({values})"
    )


def _default_reward(record: LoggedDecision) -> float:
    assert record.reward is not None
    return record.reward.total_adjusted


def evaluate_candidate_on_log(
    records: Sequence[LoggedDecision],
    actions: Sequence[str],
    candidate: Callable[[LoggedDecision], Sequence[float]],
    config: GateConfig = GateConfig(),
    *,
    reward: Callable[[LoggedDecision], float] = _default_reward,
    state_key: Callable[[LoggedDecision], Hashable] = lambda record: record.state,
    reward_model_prior_strength: float = 2.0,
) -> GateDecision:
    """Run the gate on logged decisions.

    `actions` names the action of each index; `candidate(record)` returns the candidate's
    probability of each of them in the record's state (one-hot for a greedy policy, masked
    actions at 0). Records whose reward is None (uncredited intervals) are skipped and counted.
    The model-based estimators use a `TabularRewardModel` keyed by `state_key`, fitted on the
    same records.
    """
    credited = [record for record in records if record.reward is not None]
    n_skipped = len(records) - len(credited)
    if not credited:
        raise InvalidLogError(f"none of the {len(records)} logged intervals was credited with a reward")

    action_index = {name: index for index, name in enumerate(actions)}
    indices = np.empty(len(credited), dtype=int)
    for row, record in enumerate(credited):
        if record.action not in action_index:
            raise InvalidLogError(f"logged action {record.action!r} at row {row} is not one of {list(actions)}")
        indices[row] = action_index[record.action]

    distribution = np.array([np.asarray(candidate(record), dtype=float) for record in credited])
    if distribution.shape != (len(credited), len(actions)):
        raise InvalidLogError(
            f"candidate returned probabilities of shape {distribution.shape[1:]}, expected ({len(actions)},)"
        )
    rewards = np.array([reward(record) for record in credited])

    q_hat = None
    if config.estimator in MODEL_BASED_ESTIMATORS:
        states = [state_key(record) for record in credited]
        model = TabularRewardModel(n_actions=len(actions), prior_strength=reward_model_prior_strength)
        # NOTE: the reward model is fitted in-sample (no cross-fitting); with a few thousand
        # intervals over a small state space the overfitting bias is small, but it is not zero.
        q_hat = model.fit(states, indices, rewards).predict(states)

    data = OffPolicyData.from_distributions(
        reward=rewards,
        action=indices,
        propensity=[record.propensity for record in credited],
        target_distribution=distribution,
        q_hat=q_hat,
    )
    return evaluate_candidate(data, config, n_skipped=n_skipped)
