"""The control loop's state in the cluster: a ConfigMap owned by the resource.

Two keys: ``policy-state.json`` is the policy's own `PolicyState` (Q-table, visit counts, timers,
bounded decision log) and ``controller.json`` is the loop's bookkeeping (desired replicas per tier, a
tier switch in progress, the time of the last decision, position-bias counts). Writes use the
ConfigMap's resourceVersion, so two writers can never silently overwrite each other: the loser gets
a 409 and its tick is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tierscale_operator import builders
from tierscale_operator.policy import PolicyConfig, PolicyState, PolicyStateError, QTable

log = logging.getLogger("tierscale.persistence")

POLICY_KEY = "policy-state.json"
CONTROLLER_KEY = "controller.json"
TABLE_KEY = "q-table.json"


@dataclasses.dataclass
class Rollout:
    """A tier switch in progress: the new tier runs beside the old until it is ready."""

    from_tier: str
    to_tier: str
    replicas: int
    started_at_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ControllerState:
    tier_replicas: dict[str, int]
    rollout: Rollout | None = None
    last_tick_at_s: float | None = None
    # Position-bias evidence from the server's randomised adjacent swaps, summed over intervals.
    swapped_impressions: dict[str, float] = dataclasses.field(default_factory=dict)
    swapped_clicks: dict[str, float] = dataclasses.field(default_factory=dict)
    # The latest off-policy verdict on the greedy policy (see offpolicy.py), as status fields.
    off_policy: dict | None = None
    # Per-interval [tier, hour, load, corrected CTR, impressions] for the confounder regression.
    interval_history: list[list] = dataclasses.field(default_factory=list)
    # GPUs this resource's pods held when the scheduler last left one Pending for nvidia.com/gpu,
    # and until when that ceiling blocks scale-up (see Controller._gpu_ceiling).
    gpu_ceiling: int | None = None
    gpu_ceiling_until_s: float | None = None

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["rollout"] = self.rollout.to_dict() if self.rollout else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ControllerState":
        data = json.loads(text)
        rollout = Rollout(**data["rollout"]) if data.get("rollout") else None
        return cls(
            tier_replicas={k: int(v) for k, v in data["tier_replicas"].items()},
            rollout=rollout,
            last_tick_at_s=data.get("last_tick_at_s"),
            swapped_impressions=data.get("swapped_impressions", {}),
            swapped_clicks=data.get("swapped_clicks", {}),
            off_policy=data.get("off_policy"),
            interval_history=data.get("interval_history", []),
            gpu_ceiling=data.get("gpu_ceiling"),
            gpu_ceiling_until_s=data.get("gpu_ceiling_until_s"),
        )


@dataclasses.dataclass
class StoredState:
    policy: PolicyState
    controller: ControllerState
    resource_version: str | None  # None: not yet stored


class StateStore:
    """Loads and saves one resource's state ConfigMap."""

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str, uid: str):
        self.core = core
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.configmap = builders.state_configmap_name(name)

    def load(self, config: PolicyConfig, initial_tier: str, initial_table: QTable | None) -> StoredState:
        """Reads the stored state; a missing ConfigMap gives the initial state (not yet written)."""
        try:
            configmap = self.core.read_namespaced_config_map(self.configmap, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return self.initial(config, initial_tier, initial_table)

        data = configmap.data or {}
        try:
            policy = PolicyState.from_json(data[POLICY_KEY], config)
            controller = ControllerState.from_json(data[CONTROLLER_KEY])
        except (KeyError, ValueError, PolicyStateError) as error:
            # A table for another layout (tiers or bins changed) cannot be reused: start over from
            # the initial table, and say so.
            log.warning(
                "state in ConfigMap %s/%s is unusable (%s); starting from the initial table",
                self.namespace, self.configmap, error,
            )
            initial = self.initial(config, initial_tier, initial_table)
            initial.resource_version = configmap.metadata.resource_version
            return initial
        return StoredState(policy, controller, configmap.metadata.resource_version)

    @staticmethod
    def initial(config: PolicyConfig, initial_tier: str, initial_table: QTable | None) -> StoredState:
        tier_replicas = {t.name: 0 for t in config.tiers}
        tier_replicas[initial_tier] = config.min_replicas
        return StoredState(
            policy=PolicyState.initial(config, initial_table),
            controller=ControllerState(tier_replicas=tier_replicas),
            resource_version=None,
        )

    def save(self, state: StoredState) -> None:
        """Writes the state; raises ApiException 409 when someone else wrote it since it was read."""
        data = {POLICY_KEY: state.policy.to_json(), CONTROLLER_KEY: state.controller.to_json()}
        body = builders.state_configmap(self.name, self.uid, data)
        if state.resource_version is None:
            created = self.core.create_namespaced_config_map(self.namespace, body)
            state.resource_version = created.metadata.resource_version
            return
        body["metadata"]["resourceVersion"] = state.resource_version
        replaced = self.core.replace_namespaced_config_map(self.configmap, self.namespace, body)
        state.resource_version = replaced.metadata.resource_version
