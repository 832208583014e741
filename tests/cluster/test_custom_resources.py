"""CRDs with structural schemas are served, validated, and keep what the status subresource writes."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from support import wait_until

GROUP, VERSION, PLURAL = "test.tierscale.io", "v1", "widgets"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "observedSize": {"type": "integer"},
                                    "phase": {"type": "string"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widget_crd(kube):
    kube.extensions.create_custom_resource_definition(CRD)

    def established():
        crd = kube.extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_until(established, timeout_s=60, what="the Widget CRD to be established")
    yield
    kube.extensions.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")


def _widget(name: str, size) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": size}}


def test_object_violating_the_schema_is_rejected_naming_the_field(kube, namespace, widget_crd):
    with pytest.raises(ApiException) as rejected:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _widget("bad", "big")
        )

    status = json.loads(rejected.value.body)
    assert rejected.value.status == 422
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.size"]
    assert "spec.size in body must be of type integer" in status["message"]


def test_value_below_the_minimum_is_rejected_naming_the_field(kube, namespace, widget_crd):
    with pytest.raises(ApiException) as rejected:
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _widget("zero", 0))

    status = json.loads(rejected.value.body)
    assert rejected.value.status == 422
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.size"]
    assert "spec.size in body should be greater than or equal to 1" in status["message"]


def test_status_write_is_kept_and_unknown_status_fields_are_pruned(kube, namespace, widget_crd):
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _widget("good", 3))

    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "good",
        {"status": {"observedSize": 3, "phase": "Ready", "notInSchema": "dropped"}},
    )

    widget = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "good")
    assert widget["status"] == {"observedSize": 3, "phase": "Ready"}
    assert widget["spec"] == {"size": 3}
