"""Session fixtures: the local Kubernetes cluster, started once and stopped at the end.

A cluster that is already running (``make cluster-up``) is reused and left running. Set
``TIERSCALE_KEEP_CLUSTER=1`` to leave a cluster the tests started running as well.
Tests under ``tests/cluster/`` are marked ``cluster`` automatically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class LocalCluster:
    config: "object"
    tools: "object"
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        from tierscale_localcluster.cluster import kubectl

        return kubectl(self.config, self.tools, *args, input=input, check=check)

    @property
    def prometheus_url(self) -> str:
        return self.config.prometheus_url


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster():
    from tierscale_localcluster import cluster as local
    from tierscale_localcluster.config import ClusterConfig

    config = ClusterConfig()
    tools = local.Tools.build()
    already_running = local.running_components(config)
    kubeconfig = local.up(config, tools)
    yield LocalCluster(config=config, tools=tools, kubeconfig=kubeconfig)
    if not already_running and os.environ.get("TIERSCALE_KEEP_CLUSTER") != "1":
        local.down(config)


@pytest.fixture(scope="session")
def kube(cluster):
    """API clients for the local cluster (kubernetes package)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    return type(
        "Kube",
        (),
        {
            "api_client": api_client,
            "core": client.CoreV1Api(api_client),
            "apps": client.AppsV1Api(api_client),
            "custom": client.CustomObjectsApi(api_client),
            "extensions": client.ApiextensionsV1Api(api_client),
            "rbac": client.RbacAuthorizationV1Api(api_client),
        },
    )()


@pytest.fixture
def namespace(kube, request):
    """A fresh namespace per test, deleted afterwards."""
    from kubernetes import client

    # Namespace names are DNS labels: parametrised test ids ("[a-b]") and underscores are replaced.
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{os.urandom(2).hex()}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kube.core.delete_namespace(name)
