"""A synthetic confounded trace with a known tier effect, for checking the adjustments.

Per control interval (15 minutes by default) over `n_days`:

- expected CTR of the small tier = base_ctr * (1 + hour_amplitude * cos(2 pi (hour - peak_hour) / 24))
  with the whole hour of day,
  * (1 - load_sensitivity * (load_ratio - 1)), where load_ratio is the interval's load over the
  typical load of that hour (busier than usual means a more casual traffic mix);
- the large tier multiplies that CTR by (1 + large_lift);
- load follows the same daily cycle as CTR, with day-level and interval-level noise;
- the behaviour policy picks the large tier with probability
  sigmoid(policy_hour_slope * cos(...) - policy_load_slope * (load_ratio - 1)): mostly at peak
  hours, and less when load is above the usual for the hour (no GPU headroom);
- clicks are Binomial(impressions, expected CTR).

So both the hour and the load confound the tier comparison. The true effect is the
impression-weighted average over intervals of E[ctr | large] - E[ctr | small], the quantity the
stratified estimator targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import DecisionContext, LoggedDecision, RewardParts

TIERS = ("small", "large")


@dataclass(frozen=True)
class TraceParameters:
    n_days: int = 21
    interval_s: float = 900.0
    base_ctr: float = 0.04
    hour_amplitude: float = 0.5
    peak_hour: float = 20.0
    load_sensitivity: float = 0.3
    large_lift: float = 0.10
    mean_load_rps: float = 200.0
    load_amplitude: float = 0.6
    impressions_per_request: float = 1.0
    policy_hour_slope: float = 2.5
    policy_load_slope: float = 3.0
    click_value: float = 100.0
    gpu_cost: tuple[float, float] = (0.2, 0.2)
    start_s: float = 1_700_000_000.0


@dataclass(frozen=True)
class ConfoundedTrace:
    """The logged records plus the generator's ground truth per interval.

    `expected_ctr` is (n_intervals, 2): the expected CTR of the small and the large tier in each
    interval's conditions. `probability_large` is the behaviour policy's probability of the large
    tier. State of a record: (hour // 3, load bucket 0-2 by load ratio).
    """

    records: list[LoggedDecision]
    expected_ctr: np.ndarray
    impressions: np.ndarray
    probability_large: np.ndarray
    parameters: TraceParameters

    @property
    def true_effect(self) -> float:
        difference = self.expected_ctr[:, 1] - self.expected_ctr[:, 0]
        return float(np.average(difference, weights=self.impressions))

    def expected_reward(self) -> np.ndarray:
        """Expected reward of each tier in each interval, (n_intervals, 2), in objective units."""
        cost = np.asarray(self.parameters.gpu_cost)
        return self.parameters.click_value * self.expected_ctr - cost

    def true_value(self, probability_large: np.ndarray) -> float:
        """Expected mean reward per interval of a policy choosing large with these probabilities."""
        distribution = np.column_stack([1.0 - probability_large, probability_large])
        return float((distribution * self.expected_reward()).sum(axis=1).mean())

    @property
    def behaviour_true_value(self) -> float:
        return self.true_value(self.probability_large)


def _load_bucket(load_ratio: float) -> int:
    if load_ratio < 0.9:
        return 0
    if load_ratio < 1.1:
        return 1
    return 2


def generate_confounded_trace(parameters: TraceParameters = TraceParameters(), *, seed: int = 0) -> ConfoundedTrace:
    rng = np.random.default_rng(seed)
    p = parameters
    intervals_per_day = int(round(86_400 / p.interval_s))
    n = p.n_days * intervals_per_day
    at_s = p.start_s + p.interval_s * np.arange(n)
    hour = ((np.arange(n) % intervals_per_day) * p.interval_s / 3600.0).astype(int)
    # The cycle moves in whole hours, matching the hour-of-day resolution the records carry.
    # A smooth cycle would leave sub-hour confounding that no hour-of-day adjustment removes.
    cycle = np.cos(2.0 * np.pi * (hour - p.peak_hour) / 24.0)

    typical_load = p.mean_load_rps * (1.0 + p.load_amplitude * cycle)
    day_noise = np.repeat(rng.lognormal(0.0, 0.15, size=p.n_days), intervals_per_day)
    load_ratio = day_noise * rng.lognormal(0.0, 0.1, size=n)
    load = typical_load * load_ratio

    ctr_small = p.base_ctr * (1.0 + p.hour_amplitude * cycle) * (1.0 - p.load_sensitivity * (load_ratio - 1.0))
    ctr_small = np.clip(ctr_small, 1e-4, 0.5)
    expected_ctr = np.column_stack([ctr_small, ctr_small * (1.0 + p.large_lift)])

    logit = p.policy_hour_slope * cycle - p.policy_load_slope * (load_ratio - 1.0)
    probability_large = 1.0 / (1.0 + np.exp(-logit))
    choose_large = rng.random(n) < probability_large
    impressions = rng.poisson(load * p.interval_s * p.impressions_per_request)
    tier_index = choose_large.astype(int)
    clicks = rng.binomial(impressions, expected_ctr[np.arange(n), tier_index])

    records = []
    for i in range(n):
        tier = TIERS[tier_index[i]]
        ctr = clicks[i] / impressions[i] if impressions[i] else 0.0
        click_value = p.click_value * ctr
        records.append(
            LoggedDecision(
                at_s=float(at_s[i]),
                context=DecisionContext(hour_of_day=int(hour[i]), load_rps=float(load[i])),
                state=(int(hour[i]) // 3, _load_bucket(float(load_ratio[i]))),
                action=tier,
                propensity=float(probability_large[i] if choose_large[i] else 1.0 - probability_large[i]),
                tier=tier,
                impressions=int(impressions[i]),
                clicks=int(clicks[i]),
                reward=RewardParts(
                    click_value_raw=click_value,
                    click_value_adjusted=click_value,
                    gpu_cost=p.gpu_cost[tier_index[i]],
                    slo_penalty=0.0,
                ),
            )
        )
    return ConfoundedTrace(
        records=records,
        expected_ctr=expected_ctr,
        impressions=impressions.astype(float),
        probability_large=probability_large,
        parameters=parameters,
    )
