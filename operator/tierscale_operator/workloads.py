"""The tier Deployments as the control loop sees them, and the replica changes it makes to them.

Replica writes go through the Deployment's scale subresource with the resourceVersion of a fresh
read. A 409 (someone, e.g. a user editing the Deployment, wrote in between) is retried on a new read
with the same absolute target, so an action is applied once however often it is retried.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from tierscale_operator import builders
from tierscale_operator.spec import RecommenderSpec

log = logging.getLogger("tierscale.workloads")

CONFLICT_RETRIES = 5


@dataclasses.dataclass(frozen=True)
class TierWorkload:
    tier: str
    desired: int  # spec.replicas of the tier's Deployment
    ready: int
    pending: int  # pods the scheduler cannot place
    pending_for_gpus: int  # of those, pods whose PodScheduled message names nvidia.com/gpu
    running_gpus: int  # GPUs requested by pods bound to a node


@dataclasses.dataclass(frozen=True)
class ClusterView:
    tiers: dict[str, TierWorkload]

    def desired(self, tier: str) -> int:
        return self.tiers[tier].desired if tier in self.tiers else 0

    @property
    def ready(self) -> int:
        return sum(t.ready for t in self.tiers.values())

    @property
    def pending(self) -> int:
        return sum(t.pending for t in self.tiers.values())

    @property
    def pending_for_gpus(self) -> int:
        return sum(t.pending_for_gpus for t in self.tiers.values())

    @property
    def gpus(self) -> int:
        return sum(t.running_gpus for t in self.tiers.values())


class ReplicaWriteFailed(RuntimeError):
    """The replica change was not applied; the message says why."""


def observe(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, name: str,
            spec: RecommenderSpec) -> ClusterView:
    """Reads every tier's Deployment and pods."""
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{builders.RECOMMENDER_LABEL}={name}"
    ).items
    tiers = {}
    for tier in spec.tiers:
        try:
            deployment = apps.read_namespaced_deployment(builders.deployment_name(name, tier.name), namespace)
            desired = deployment.spec.replicas or 0
        except ApiException as error:
            if error.status != 404:
                raise
            desired = 0
        tier_pods = [
            p for p in pods
            if (p.metadata.labels or {}).get(builders.TIER_LABEL) == tier.name
            and p.metadata.deletion_timestamp is None
        ]
        ready = sum(1 for p in tier_pods if _is_ready(p))
        unschedulable = [p for p in tier_pods if _unschedulable_message(p) is not None]
        for_gpus = sum(1 for p in unschedulable if builders.GPU_RESOURCE in _unschedulable_message(p))
        bound = sum(1 for p in tier_pods if p.spec.node_name)
        tiers[tier.name] = TierWorkload(
            tier=tier.name,
            desired=desired,
            ready=ready,
            pending=len(unschedulable),
            pending_for_gpus=for_gpus,
            running_gpus=bound * tier.gpus_per_replica,
        )
    return ClusterView(tiers=tiers)


def _is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _unschedulable_message(pod: client.V1Pod) -> str | None:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
            return condition.message or ""
    return None


def set_replicas(
    apps: client.AppsV1Api,
    namespace: str,
    deployment: str,
    replicas: int,
    *,
    before_write: Callable[[], None] | None = None,
) -> int:
    """Sets one Deployment's replicas to an absolute value; returns the number of 409 retries.

    ``before_write`` runs between the read and the write of every attempt (tests use it to make a
    concurrent edit happen at exactly that moment).
    """
    for attempt in range(CONFLICT_RETRIES):
        scale = apps.read_namespaced_deployment_scale(deployment, namespace)
        if scale.spec.replicas == replicas:
            return attempt
        if before_write is not None:
            before_write()
        scale.spec.replicas = replicas
        try:
            apps.replace_namespaced_deployment_scale(deployment, namespace, scale)
            return attempt
        except ApiException as error:
            if error.status != 409:
                raise ReplicaWriteFailed(
                    f"setting {namespace}/{deployment} to {replicas} replicas failed: "
                    f"HTTP {error.status} {error.reason}"
                ) from error
            log.info("conflict setting %s/%s replicas (attempt %d); reading it again",
                     namespace, deployment, attempt + 1)
    raise ReplicaWriteFailed(
        f"setting {namespace}/{deployment} to {replicas} replicas failed: "
        f"{CONFLICT_RETRIES} conflicting writes in a row"
    )
