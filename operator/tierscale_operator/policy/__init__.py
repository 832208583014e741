"""The tabular Q-learning policy that picks replicas and tier every control interval.

Pure code: no Kubernetes calls, no torch, no hidden state. `decide` takes the config, the persisted
`PolicyState` and an `Observation`, and returns a `Decision` and the new state. The simulator calls
`core.step_batch`, the same step, for many environments at once.
"""

from tierscale_operator.policy.actions import ACTION_LABELS, Action, MaskReason
from tierscale_operator.policy.config import PolicyConfig, PolicyConfigError, StateBins, TierSpec
from tierscale_operator.policy.decision import Decision, Observation, ObservationError, decide
from tierscale_operator.policy.state import PolicyState, PolicyStateError, QTable

__all__ = [
    "ACTION_LABELS",
    "Action",
    "Decision",
    "MaskReason",
    "Observation",
    "ObservationError",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyState",
    "PolicyStateError",
    "QTable",
    "StateBins",
    "TierSpec",
    "decide",
]
