"""Level-based reconciliation of a RecommenderDeployment's children.

Every call recomputes the desired Deployments and Service from the spec and the stored replicas
per tier, creates what is missing, updates a pod template whose hash changed, and deletes the
Deployments of tiers that left the spec. It never changes the replicas of an existing Deployment:
those belong to the control loop. Safe to repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kubernetes import client
from kubernetes.client.rest import ApiException

from tierscale_operator import builders
from tierscale_operator.spec import RecommenderSpec

log = logging.getLogger("tierscale.reconcile")


def reconcile_children(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    uid: str,
    spec: RecommenderSpec,
    tier_replicas: Mapping[str, int],
) -> list[str]:
    """Brings the children in line with the spec; returns what changed, one line each."""
    changes = []
    for tier in spec.tiers:
        desired = builders.tier_deployment(spec, name, uid, tier, tier_replicas.get(tier.name, 0))
        deployment_name = desired["metadata"]["name"]
        try:
            existing = apps.read_namespaced_deployment(deployment_name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            apps.create_namespaced_deployment(namespace, desired)
            changes.append(f"created Deployment {deployment_name} with {desired['spec']['replicas']} replicas")
            continue
        wanted_hash = desired["metadata"]["annotations"][builders.TEMPLATE_HASH_ANNOTATION]
        current_hash = (existing.metadata.annotations or {}).get(builders.TEMPLATE_HASH_ANNOTATION)
        if current_hash != wanted_hash:
            patch = {
                "metadata": {
                    "labels": desired["metadata"]["labels"],
                    "annotations": desired["metadata"]["annotations"],
                },
                "spec": {"template": desired["spec"]["template"], "strategy": desired["spec"]["strategy"]},
            }
            apps.patch_namespaced_deployment(deployment_name, namespace, patch)
            changes.append(f"updated the pod template of Deployment {deployment_name}")

    wanted_tiers = {t.name for t in spec.tiers}
    owned = apps.list_namespaced_deployment(
        namespace, label_selector=f"{builders.RECOMMENDER_LABEL}={name}"
    ).items
    for deployment in owned:
        tier = (deployment.metadata.labels or {}).get(builders.TIER_LABEL)
        if tier not in wanted_tiers:
            apps.delete_namespaced_deployment(deployment.metadata.name, namespace)
            changes.append(f"deleted Deployment {deployment.metadata.name}: tier {tier!r} left the spec")

    service = builders.service(spec, name, uid)
    try:
        existing_service = core.read_namespaced_service(service["metadata"]["name"], namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_service(namespace, service)
        changes.append(f"created Service {service['metadata']['name']}")
    else:
        ports = [(p.name, p.port) for p in existing_service.spec.ports or []]
        if ports != [(p["name"], p["port"]) for p in service["spec"]["ports"]]:
            core.patch_namespaced_service(service["metadata"]["name"], namespace, {"spec": service["spec"]})
            changes.append(f"updated the ports of Service {service['metadata']['name']}")

    for change in changes:
        log.info("%s/%s: %s", namespace, name, change)
    return changes
