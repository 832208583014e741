"""The local control plane is a real one: versions match, RBAC denies, the garbage collector runs."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support import wait_until


def test_kubectl_client_and_server_versions_match(cluster):
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)

    client_version = versions["clientVersion"]["gitVersion"]
    server_version = versions["serverVersion"]["gitVersion"]
    assert client_version == server_version
    assert client_version.startswith("v1.")


def test_service_account_without_role_is_denied_listing_pods(cluster, kube, namespace):
    kube.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="no-role"))
    )
    subject = f"system:serviceaccount:{namespace}:no-role"

    answer = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as={subject}", check=False
    )
    assert answer.stdout.strip() == "no"
    assert answer.returncode == 1

    # A real request with the ServiceAccount's own token is refused too.
    token = cluster.kubectl("create", "token", "no-role", "-n", namespace).stdout.strip()
    configuration = client.Configuration()
    configuration.host = cluster.config.apiserver_url
    configuration.ssl_ca_cert = str(cluster.config.pki_dir / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_service_account = client.CoreV1Api(client.ApiClient(configuration))
    with pytest.raises(ApiException) as refused:
        as_service_account.list_namespaced_pod(namespace)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert f'User "{subject}" cannot list resource "pods"' in message


def test_deleting_an_owner_deletes_its_children(kube, namespace):
    owner = kube.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    kube.core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[reference])),
    )

    kube.core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    names = lambda: {c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items}
    wait_until(lambda: "child" not in names(), timeout_s=60, what="the garbage collector to delete 'child'")
    assert "owner" not in names()
