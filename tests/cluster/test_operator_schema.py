"""The API server rejects invalid RecommenderDeployments with messages naming the field."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from operator_fixtures import create_recommender, install_crd, read_recommender, stub_spec


@pytest.fixture(scope="module", autouse=True)
def crd(cluster):
    install_crd(cluster)


def _rejection(kube, namespace, spec) -> dict:
    with pytest.raises(ApiException) as rejected:
        create_recommender(kube, namespace, "invalid", spec)
    assert rejected.value.status == 422
    return json.loads(rejected.value.body)


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"replicas": {"min": -1, "max": 4}}, "spec.replicas.min",
         "spec.replicas.min in body should be greater than or equal to 1"),
        ({"replicas": {"min": 5, "max": 2}}, "spec.replicas.min",
         "replicas.min must be less than or equal to replicas.max"),
        ({"initialTier": "huge"}, "spec.initialTier", "initialTier huge must name one of spec.tiers"),
        ({"slo": {"latencyP95Ms": "fast"}}, "spec.slo.latencyP95Ms",
         'spec.slo.latencyP95Ms in body must be of type number: "string"'),
        ({"gpuBudget": 1, "replicas": {"min": 2, "max": 4}}, "spec.gpuBudget",
         "gpuBudget must be at least replicas.min × gpusPerReplica for every tier"),
        ({"tiers": [{"name": "small"}, {"name": "small"}]}, "spec.tiers", "tier names must be unique"),
        ({"policy": {"mode": "yolo"}}, "spec.policy.mode", 'Unsupported value: "yolo"'),
        ({"replicas": {"min": 0, "max": 4}}, "spec.replicas.min",
         "spec.replicas.min in body should be greater than or equal to 1"),
        ({"tiers": [{"name": n} for n in ("a", "b", "c", "d")]}, "spec.tiers", "must have at most 3 items"),
        ({"policy": {"interval": "0s"}}, "spec.policy.interval", "should match '^[1-9][0-9]*(s|m|h)$'"),
        ({"prometheus": {"url": "http://127.0.0.1:1", "window": "0s"}}, "spec.prometheus.window",
         "should match '^[1-9][0-9]*(ms|s|m|h)$'"),
    ],
    ids=["negative-min", "max-below-min", "unknown-initial-tier", "string-p95", "budget-below-min",
         "duplicate-tiers", "unknown-mode", "zero-min", "four-tiers", "zero-interval", "zero-window"],
)
def test_invalid_resource_rejected_naming_field(kube, namespace, cluster, change, field, text):
    spec = stub_spec(cluster.prometheus_url, **change)

    status = _rejection(kube, namespace, spec)

    assert field in [cause.get("field") for cause in status["details"]["causes"]]
    assert text in status["message"]


def test_defaults_are_applied_and_status_fields_are_kept(kube, namespace, cluster):
    spec = stub_spec(cluster.prometheus_url)
    del spec["policy"]

    created = create_recommender(kube, namespace, "defaults", spec)

    assert created["spec"]["policy"]["mode"] == "learn"
    assert created["spec"]["policy"]["interval"] == "30s"
    assert created["spec"]["causal"]["confounders"] == ["hourOfDay", "load"]
    kube.custom.patch_namespaced_custom_object_status(
        "tierscale.io", "v1alpha1", namespace, "recommenderdeployments", "defaults",
        {"status": {"tier": "small", "tierReplicas": {"small": 2}, "observed": {"p95Ms": 42.5, "ctr": 0.05},
                    "lastDecision": {"action": "hold", "applied": False}, "policy": {"updates": 3}}},
    )
    status = read_recommender(kube, namespace, "defaults")["status"]
    assert status == {"tier": "small", "tierReplicas": {"small": 2}, "observed": {"p95Ms": 42.5, "ctr": 0.05},
                      "lastDecision": {"action": "hold", "applied": False}, "policy": {"updates": 3}}
