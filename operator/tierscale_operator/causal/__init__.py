"""Causal adjustment of logged click rewards, and the off-policy gate.

The operator learns from clicks its own decisions produced. Those clicks are biased three ways,
and this package corrects each (numpy only; no torch, kopf or kubernetes imports):

1. Position bias (`position_bias`): items shown higher are clicked more whatever the tier.
   `PositionBias` contains examination probabilities per position, configured
   (`PositionBias.from_config([1.0, 0.7, 0.5])`) or estimated from a randomised slice of
   adjacent-position swaps (`swap_counts` then `estimate_from_swaps`).
   `bias.corrected_ctr(impressions_by_position, clicks_by_position)` is the IPS-corrected CTR
   of one tier's counts; `corrected_ctr_by_group` does the same per tier from events.

2. Confounding by hour of day and load (`confounding`): CTR follows the daily cycle and the
   traffic mix, and so do the policy's choices. `stratified_tier_effects(observations, "small")`
   estimates each tier's CTR difference to a reference tier within hour-of-day strata, with a
   load term inside each stratum; `fit_confounder_regression(...).adjuster.adjust_ctr(ctr, hour,
   load)` moves one interval's CTR to average conditions before the policy learns from it.
   Build `TierObservations.from_records(records)` from logged decisions.

3. Off-policy evaluation (`estimators`): the logs come from an exploring behaviour policy.
   `OffPolicyData.from_distributions(reward=, action=, propensity=, target_distribution=, q_hat=)`
   validates the arrays (a propensity that is missing, not positive or above 1 raises
   `InvalidLogError` naming the row); `estimate(data, "snips")` returns an `Estimate` with a
   percentile-bootstrap interval, Kish's effective sample size and the rows whose propensity is
   tiny (reported, never clipped unless `clip=` is given). Estimators: ips (optional clip),
   snips, dm, dr (optional clip), sndr, switch-dr, dr-os; `point_estimate` and the functions
   `ips`, `snips`, ... return the bare value.

The gate (`gate`) ties them together for the operator:

    decision = evaluate_candidate_on_log(
        records,                       # Sequence[LoggedDecision]
        actions=["scale_down", "hold", "scale_up", "tier_down", "tier_up"],
        candidate=lambda record: greedy_probabilities(record.state),
        config=GateConfig(estimator="snips", confidence=0.95, min_improvement=0.0),
    )
    if decision.passed: ...            # decision.reason is one log-ready sentence

It estimates the candidate's value off-policy and the behaviour policy's value as the logged
mean, on the same bootstrap resamples, and passes the candidate only when the one-sided lower
bound of the difference exceeds `min_improvement` and the candidate's effective sample size is
at least `min_effective_sample_size`.

Records (`records`): `LoggedDecision` is one control interval (context, state, action,
propensity, tier, impressions, clicks, position-corrected CTR, `RewardParts`); `DecisionLog`
keeps the newest records in a bounded buffer and persists them as gzip-compressed JSON within
a byte budget (`to_bytes(max_bytes)` / `from_bytes`).

`obd` reads the Open Bandit Dataset sample from the obp sdist and `synthetic` generates a
confounded trace with a known tier effect; both serve the checks, not the live loop.
"""

from .confounding import (
    ConfounderAdjuster,
    ConfounderRegression,
    InvalidObservationsError,
    TierEffect,
    TierObservations,
    fit_confounder_regression,
    regression_tier_effects,
    stratified_tier_effects,
)
from .estimators import (
    ESTIMATORS,
    Estimate,
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
from .gate import GateConfig, GateDecision, evaluate_candidate, evaluate_candidate_on_log
from .position_bias import (
    GroupCtr,
    InvalidPositionDataError,
    PositionBias,
    corrected_ctr_by_group,
    estimate_from_randomized_positions,
    estimate_from_swaps,
    swap_counts,
)
from .records import DecisionContext, DecisionLog, InvalidRecordError, LoggedDecision, RewardParts
from .reward_model import TabularRewardModel

__all__ = [
    "ESTIMATORS",
    "ConfounderAdjuster",
    "ConfounderRegression",
    "DecisionContext",
    "DecisionLog",
    "Estimate",
    "GateConfig",
    "GateDecision",
    "GroupCtr",
    "InvalidLogError",
    "InvalidObservationsError",
    "InvalidPositionDataError",
    "InvalidRecordError",
    "LoggedDecision",
    "OffPolicyData",
    "PositionBias",
    "RewardParts",
    "TabularRewardModel",
    "TierEffect",
    "TierObservations",
    "corrected_ctr_by_group",
    "dm",
    "dr",
    "dr_shrinkage",
    "effective_sample_size",
    "estimate",
    "estimate_from_randomized_positions",
    "estimate_from_swaps",
    "evaluate_candidate",
    "evaluate_candidate_on_log",
    "fit_confounder_regression",
    "ips",
    "point_estimate",
    "regression_tier_effects",
    "snips",
    "sndr",
    "stratified_tier_effects",
    "swap_counts",
    "switch_dr",
]
