"""The five actions and the action mask.

An action changes either the replica count or the tier, never both. The mask is computed for a
batch of environments at once (arrays of shape (n,)), so the simulator and the live loop share it.
Each masked action carries a bit field of reasons, so a decision can report why an action was not
allowed.
"""

from __future__ import annotations

import enum

import numpy as np

from tierscale_operator.policy.config import PolicyConfig


class Action(enum.IntEnum):
    SCALE_DOWN = 0
    HOLD = 1
    SCALE_UP = 2
    TIER_DOWN = 3
    TIER_UP = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


N_ACTIONS = len(Action)
ACTION_LABELS = tuple(a.label for a in Action)
CHANGE_ACTIONS = (Action.SCALE_DOWN, Action.SCALE_UP, Action.TIER_DOWN, Action.TIER_UP)
# Replica and tier delta of each action, indexed by action value.
REPLICA_DELTA = np.array([-1, 0, 1, 0, 0], dtype=np.int64)
TIER_DELTA = np.array([0, 0, 0, -1, 1], dtype=np.int64)


class MaskReason(enum.IntFlag):
    """Reasons an action is not allowed; several can apply at once."""

    MIN_REPLICAS = 1
    MAX_REPLICAS = 2
    GPU_BUDGET = 4
    PENDING_PODS = 8
    NO_FREE_GPUS = 16
    COOLDOWN = 32
    ROLLOUT = 64
    NO_SUCH_TIER = 128
    METRICS_INVALID = 256


MASK_REASON_TEXT = {
    MaskReason.MIN_REPLICAS: "at min replicas",
    MaskReason.MAX_REPLICAS: "at max replicas",
    MaskReason.GPU_BUDGET: "would exceed the GPU budget",
    MaskReason.PENDING_PODS: "pods are Pending (insufficient GPUs)",
    MaskReason.NO_FREE_GPUS: "no free GPUs in the cluster",
    MaskReason.COOLDOWN: "in cooldown",
    MaskReason.ROLLOUT: "rollout unfinished or not yet settled for a full interval",
    MaskReason.NO_SUCH_TIER: "no tier in that direction",
    MaskReason.METRICS_INVALID: "metrics missing, NaN or stale",
}


def describe_mask_reasons(bits: int) -> str:
    """Join the reasons in a bit field into one phrase, in a fixed order."""
    parts = [text for reason, text in MASK_REASON_TEXT.items() if bits & reason]
    return "; ".join(parts)


def apply_action(tier: np.ndarray, replicas: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the target (tier, replicas) that each action requests."""
    action = np.asarray(action, dtype=np.int64)
    return tier + TIER_DELTA[action], replicas + REPLICA_DELTA[action]


def structural_mask_reasons(config: PolicyConfig, tier: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """Reasons that follow from the spec alone: min/max replicas, tier range and GPU budget.

    Returns int64 bits of shape (n, N_ACTIONS); zero means allowed. These are the bounds the
    Q-update's bootstrap respects, because timers and Pending pods are transient.
    """
    tier = np.asarray(tier, dtype=np.int64)
    replicas = np.asarray(replicas, dtype=np.int64)
    gpus = np.asarray(config.gpus_per_replica(), dtype=np.int64)
    reasons = np.zeros((tier.shape[0], N_ACTIONS), dtype=np.int64)

    at_min = replicas <= config.min_replicas
    reasons[at_min, Action.SCALE_DOWN] |= MaskReason.MIN_REPLICAS

    at_max = replicas >= config.max_replicas
    reasons[at_max, Action.SCALE_UP] |= MaskReason.MAX_REPLICAS
    gpus_now = gpus[np.clip(tier, 0, config.n_tiers - 1)]
    over_budget_up = (replicas + 1) * gpus_now > config.gpu_budget
    reasons[over_budget_up, Action.SCALE_UP] |= MaskReason.GPU_BUDGET

    lowest = tier <= 0
    reasons[lowest, Action.TIER_DOWN] |= MaskReason.NO_SUCH_TIER
    highest = tier >= config.n_tiers - 1
    reasons[highest, Action.TIER_UP] |= MaskReason.NO_SUCH_TIER

    gpus_below = gpus[np.clip(tier - 1, 0, config.n_tiers - 1)]
    gpus_above = gpus[np.clip(tier + 1, 0, config.n_tiers - 1)]
    reasons[~lowest & (replicas * gpus_below > config.gpu_budget), Action.TIER_DOWN] |= MaskReason.GPU_BUDGET
    reasons[~highest & (replicas * gpus_above > config.gpu_budget), Action.TIER_UP] |= MaskReason.GPU_BUDGET
    return reasons


def cluster_mask_reasons(
    config: PolicyConfig,
    tier: np.ndarray,
    pending: np.ndarray,
    gpus_free: np.ndarray,
) -> np.ndarray:
    """Reasons that come from the cluster: Pending pods and, where known, free GPUs.

    `gpus_free` < 0 means unknown, and then only Pending pods block growth.
    """
    tier = np.asarray(tier, dtype=np.int64)
    pending = np.asarray(pending, dtype=np.int64)
    gpus_free = np.asarray(gpus_free, dtype=np.int64)
    gpus = np.asarray(config.gpus_per_replica(), dtype=np.int64)
    reasons = np.zeros((tier.shape[0], N_ACTIONS), dtype=np.int64)

    has_pending = pending > 0
    reasons[has_pending, Action.SCALE_UP] |= MaskReason.PENDING_PODS
    reasons[has_pending, Action.TIER_UP] |= MaskReason.PENDING_PODS

    known = gpus_free >= 0
    gpus_now = gpus[np.clip(tier, 0, config.n_tiers - 1)]
    reasons[known & (gpus_free < gpus_now), Action.SCALE_UP] |= MaskReason.NO_FREE_GPUS
    return reasons


def timer_mask_reasons(settled: np.ndarray, in_cooldown: np.ndarray) -> np.ndarray:
    """Reasons from timers: every change action waits for a settled deployment and the cooldown."""
    settled = np.asarray(settled, dtype=bool)
    in_cooldown = np.asarray(in_cooldown, dtype=bool)
    reasons = np.zeros((settled.shape[0], N_ACTIONS), dtype=np.int64)
    change = np.array(CHANGE_ACTIONS, dtype=np.int64)
    reasons[:, change] |= np.where(~settled, int(MaskReason.ROLLOUT), 0)[:, None]
    reasons[:, change] |= np.where(in_cooldown, int(MaskReason.COOLDOWN), 0)[:, None]
    return reasons
