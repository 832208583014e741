"""The off-policy gate on the live decision log: would the greedy Q-policy beat what ran?

Every `EVERY_STEPS` steps the controller estimates, from the policy's bounded log of credited
transitions (state, action, propensity, reward), the value of the current greedy policy with the
resource's estimator (``spec.causal.method``: ips, snips or dr) and compares it with the logged
behaviour's mean reward on the same bootstrap resamples. The verdict goes to
``status.policy.offPolicy`` and to the PolicyConverging condition's message.

NOTE: the candidate is greedy over all five actions of the logged state; the masks in force at
the time (cooldown, bounds, GPUs) are not logged, so a masked greedy action counts as a mismatch.
"""

from __future__ import annotations

import numpy as np

from tierscale_operator.causal.estimators import InvalidLogError, OffPolicyData
from tierscale_operator.causal.gate import GateConfig, evaluate_candidate
from tierscale_operator.causal.reward_model import TabularRewardModel
from tierscale_operator.policy import PolicyState

EVERY_STEPS = 20
MIN_ROWS = 30
N_BOOTSTRAP = 200


def evaluate_greedy(state: PolicyState, method: str) -> dict | None:
    """Returns the gate's verdict as status fields, or None when there is nothing to evaluate."""
    if method == "none" or len(state.log) < MIN_ROWS:
        return None
    states = np.array([entry.state for entry in state.log], dtype=int)
    actions = np.array([entry.action for entry in state.log], dtype=int)
    rewards = np.array([entry.reward for entry in state.log], dtype=float)
    propensities = np.array([entry.propensity for entry in state.log], dtype=float)
    n_actions = state.q.shape[1]

    greedy = np.argmax(state.q[states], axis=1)
    target = np.zeros((len(states), n_actions))
    target[np.arange(len(states)), greedy] = 1.0
    q_hat = None
    if method == "dr":
        q_hat = TabularRewardModel(n_actions).fit(states.tolist(), actions, rewards).predict(states.tolist())
    try:
        data = OffPolicyData.from_distributions(
            reward=rewards, action=actions, propensity=propensities, target_distribution=target, q_hat=q_hat
        )
        verdict = evaluate_candidate(data, GateConfig(estimator=method, n_bootstrap=N_BOOTSTRAP))
    except (InvalidLogError, ValueError) as error:
        return {"estimator": method, "rows": len(states), "passed": False, "reason": f"not evaluated: {error}"}
    return {
        "estimator": method,
        "rows": len(states),
        "candidateValue": _finite(verdict.candidate.value),
        "behaviourValue": _finite(verdict.behaviour.value),
        "improvementLowerBound": _finite(verdict.improvement_lower_bound),
        "effectiveSampleSize": _finite(verdict.candidate.effective_sample_size),
        "passed": bool(verdict.passed),
        "reason": verdict.reason,
    }


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
