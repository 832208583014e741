"""Pure builders of the objects a RecommenderDeployment owns: one Deployment per tier, a Service and
the ConfigMap that keeps the policy's state.

Names are deterministic (``<name>-<tier>``, ``<name>``, ``<name>-policy-state``) and every object
carries a controller owner reference, so deleting the resource deletes them through the garbage
collector. The builders take plain values and return plain dicts; the handlers do the API calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tierscale_operator.spec import GROUP, KIND, VERSION, RecommenderSpec, Tier

GPU_RESOURCE = "nvidia.com/gpu"
RECOMMENDER_LABEL = "tierscale.io/recommender"
TIER_LABEL = "tierscale.io/tier"
TEMPLATE_HASH_ANNOTATION = "tierscale.io/template-hash"
COMPONENT = "model-server"


def deployment_name(recommender: str, tier: str) -> str:
    return f"{recommender}-{tier}"


def service_name(recommender: str) -> str:
    return recommender


def state_configmap_name(recommender: str) -> str:
    return f"{recommender}-policy-state"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(recommender: str, tier: str | None = None) -> dict[str, str]:
    labels = {RECOMMENDER_LABEL: recommender}
    if tier is not None:
        labels[TIER_LABEL] = tier
    return labels


def _common_labels(recommender: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tierscale-model-server",
        "app.kubernetes.io/instance": recommender,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "tierscale",
    }


def server_ports(spec: RecommenderSpec) -> dict[str, int]:
    """Container ports: inference on ``model.port``, management and metrics on the next two."""
    return {"http": spec.model.port, "management": spec.model.port + 1, "metrics": spec.model.port + 2}


def _resources(spec: RecommenderSpec, tier: Tier) -> dict[str, Any]:
    resources = json.loads(json.dumps(dict(spec.model.resources)))  # a deep copy of plain data
    if tier.gpus_per_replica > 0:
        for kind in ("requests", "limits"):
            resources.setdefault(kind, {})[GPU_RESOURCE] = str(tier.gpus_per_replica)
    return resources


def pod_template(spec: RecommenderSpec, recommender: str, tier: Tier) -> dict[str, Any]:
    ports = server_ports(spec)
    args = [
        "--tier", tier.name,
        "--model-name", spec.model.name,
        "--host", "0.0.0.0",
        "--port", str(ports["http"]),
        "--management-port", str(ports["management"]),
        "--metrics-port", str(ports["metrics"]),
        *spec.model.args,
    ]
    container = {
        "name": "server",
        "image": spec.model.image,
        "command": list(spec.model.command),
        "args": args,
        "env": [{"name": name, "value": value} for name, value in spec.model.env],
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports.items()],
        "readinessProbe": {
            "httpGet": {"path": "/ping", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": _resources(spec, tier),
    }
    labels = {**spec.pod_labels, **_common_labels(recommender), **selector_labels(recommender, tier.name)}
    annotations = {
        **spec.pod_annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports["metrics"]),
        "prometheus.io/path": "/metrics",
    }
    pod_spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 10}
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def tier_deployment(
    spec: RecommenderSpec, recommender: str, uid: str, tier: Tier, replicas: int
) -> dict[str, Any]:
    """The Deployment of one tier; ``replicas`` is the number the control loop wants for it."""
    template = pod_template(spec, recommender, tier)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(recommender, tier.name),
            "labels": {**_common_labels(recommender), **selector_labels(recommender, tier.name)},
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(template)},
            "ownerReferences": [owner_reference(recommender, uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(recommender, tier.name)},
            "template": template,
            # New pods must be ready before old ones go, so a template change never drops capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        },
    }


def service(spec: RecommenderSpec, recommender: str, uid: str) -> dict[str, Any]:
    """One Service over every tier's pods: clients keep one address through a tier switch."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(recommender),
            "labels": _common_labels(recommender),
            "ownerReferences": [owner_reference(recommender, uid)],
        },
        "spec": {
            "selector": selector_labels(recommender),
            "ports": [
                {"name": "http", "port": spec.model.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": spec.model.port + 2, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def state_configmap(recommender: str, uid: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": state_configmap_name(recommender),
            "labels": {**_common_labels(recommender), "app.kubernetes.io/component": "policy-state"},
            "ownerReferences": [owner_reference(recommender, uid)],
        },
        "data": dict(data),
    }
