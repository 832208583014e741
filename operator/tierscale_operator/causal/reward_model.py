"""A tabular reward model for the model-based estimators (dm, dr, sndr, switch-dr, dr-os).

The operator's states and actions are small discrete sets, so the reward model is a table of
mean immediate rewards per (state, action). A pair seen only a few times is shrunk towards its
action's mean reward, and an action never logged gets the overall mean. The table predicts
the immediate reward, not the Q-value, because the estimators need E[r | x, a].
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TabularRewardModel:
    """Mean reward per (state, action) with shrinkage of strength `prior_strength` pseudo-rows.

    Example: with prior_strength 2, a pair seen twice with rewards 1.0 and 0.0 whose action
    averages 0.2 over all states predicts (1.0 + 0.0 + 2 * 0.2) / (2 + 2) = 0.35.
    """

    n_actions: int
    prior_strength: float = 2.0
    _sums: dict[tuple[Hashable, int], float] = field(default_factory=dict, repr=False)
    _counts: dict[tuple[Hashable, int], int] = field(default_factory=dict, repr=False)
    _action_means: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {self.n_actions!r}")
        if not np.isfinite(self.prior_strength) or self.prior_strength < 0:
            raise ValueError(f"prior_strength must be finite and >= 0, got {self.prior_strength!r}")

    def fit(
        self, states: Sequence[Hashable], actions: Sequence[int] | np.ndarray, rewards: Sequence[float] | np.ndarray
    ) -> TabularRewardModel:
        action_array = np.asarray(actions, dtype=int)
        reward_array = np.asarray(rewards, dtype=float)
        if not (len(states) == action_array.shape[0] == reward_array.shape[0]):
            raise ValueError("states, actions and rewards must have the same length")
        if len(states) == 0:
            raise ValueError("the reward model needs at least one logged row")
        if not np.isfinite(reward_array).all():
            row = int(np.flatnonzero(~np.isfinite(reward_array))[0])
            raise ValueError(f"reward at row {row} is {float(reward_array[row])!r}; it must be finite")
        bad_action = (action_array < 0) | (action_array >= self.n_actions)
        if bad_action.any():
            row = int(np.flatnonzero(bad_action)[0])
            raise ValueError(f"action at row {row} is {action_array[row]}, outside 0..{self.n_actions - 1}")

        overall_mean = float(reward_array.mean())
        action_means = np.full(self.n_actions, overall_mean)
        for action in range(self.n_actions):
            rows = action_array == action
            if rows.any():
                action_means[action] = reward_array[rows].mean()
        self._action_means = action_means
        self._sums.clear()
        self._counts.clear()
        for state, action, reward in zip(states, action_array.tolist(), reward_array.tolist()):
            key = (state, action)
            self._sums[key] = self._sums.get(key, 0.0) + reward
            self._counts[key] = self._counts.get(key, 0) + 1
        return self

    def predict(self, states: Sequence[Hashable]) -> np.ndarray:
        """Predicted mean reward of every action in each state, shape (len(states), n_actions)."""
        if self._action_means is None:
            raise RuntimeError("TabularRewardModel.predict called before fit")
        predictions = np.tile(self._action_means, (len(states), 1))
        for row, state in enumerate(states):
            for action in range(self.n_actions):
                count = self._counts.get((state, action), 0)
                if count:
                    total = self._sums[(state, action)] + self.prior_strength * self._action_means[action]
                    predictions[row, action] = total / (count + self.prior_strength)
        return predictions
