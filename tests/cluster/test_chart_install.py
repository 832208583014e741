"""The Helm chart and the plain manifests on the real local cluster.

The operator pod of an installed release runs only where it carries the local-run label: the local
kubelet stand-in then starts `python -m tierscale_operator` as a process, which authenticates with its
ServiceAccount's token (a kubeconfig passed through extraEnv), as it would in a pod.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from kubernetes.client.rest import ApiException

from chart_fixtures import (
    CHART,
        REPO,
    can_i,
    helm,
    install,
    operator_names,
    pod_log,
    release_name,
    uninstall,
)
from operator_fixtures import create_recommender, read_recommender
from support import wait_until
from tierscale_localcluster import cluster as local
from tierscale_operator.spec import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.timeout(600)
CRD_NAME = "recommenderdeployments.tierscale.io"
# --set-string argument that adds the local-run label to the release's pods (helm needs the dot escaped).
LOCAL_RUN_LABEL_VALUE = "podLabels.tierscale\\.io/local-run=true"


def _server_dry_run(cluster, manifest: str) -> str:
    return cluster.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                           input=manifest).stdout


@pytest.mark.parametrize("values", [
    [],
    ["--set", "watchNamespaces={default,kube-public}"],
    ["--set", "metrics.service.enabled=true,grafanaDashboard.enabled=true,verbose=true"],
    ["--set", "serviceAccount.create=false,serviceAccount.name=existing,rbac.create=false,cleanup.onUninstall=false"],
], ids=["defaults", "watch-namespaces", "metrics-dashboard", "no-rbac"])
def test_template_passes_server_dry_run(cluster, values):
    # A server-side dry run creates nothing, so the shared namespace "default" is safe to name.
    manifest = helm(cluster, "template", "dry", str(CHART), "--namespace", "default", *values).stdout

    out = _server_dry_run(cluster, manifest)

    assert "deployment.apps/dry-tierscale-operator" in out
    assert "(server dry run)" in out


def test_manifests_pass_server_dry_run(cluster):
    # A server-side dry run cannot place objects in a namespace that does not exist yet.
    cluster.kubectl("apply", "-f", str(REPO / "manifests" / "namespace.yaml"))
    out = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts",
                          "-k", str(REPO / "manifests")).stdout

    for name in (f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME}", "namespace/tierscale-system",
                 "serviceaccount/tierscale-operator", "clusterrole.rbac.authorization.k8s.io/tierscale-operator",
                 "clusterrolebinding.rbac.authorization.k8s.io/tierscale-operator",
                 "deployment.apps/tierscale-operator"):
        assert name in out


def test_install_creates_crd_rbac_and_operator(cluster, kube, namespace):
    release = release_name("inst")
    names = operator_names(release)
    install(cluster, release, namespace, "--set", "replicaCount=0,cleanup.onUninstall=false")
    try:
        crd = kube.extensions.read_custom_resource_definition(CRD_NAME)
        assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)

        deployment = kube.apps.read_namespaced_deployment(names["operator"], namespace)
        pod = deployment.spec.template.spec
        container = pod.containers[0]
        assert pod.service_account_name == names["operator"]
        assert f"--namespace={namespace}" in container.args
        assert pod.security_context.run_as_non_root is True
        assert container.security_context.read_only_root_filesystem is True
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
        assert container.liveness_probe.http_get.path == "/healthz"
        assert container.liveness_probe.http_get.port == "health"

        kube.core.read_namespaced_service_account(names["operator"], namespace)
        kube.rbac.read_cluster_role(names["operator"])
        kube.rbac.read_cluster_role_binding(f"{names['operator']}-cluster")
        binding = kube.rbac.read_namespaced_role_binding(names["operator"], namespace)
        assert binding.role_ref.name == names["operator"]
        assert can_i(cluster, namespace, names["operator"], "patch", "deployments.apps", namespace)
    finally:
        uninstall(cluster, release, namespace)

    with pytest.raises(ApiException) as missing:
        kube.rbac.read_cluster_role(names["operator"])
    assert missing.value.status == 404


# (--set or --set-string argument, the value path the error must name)
INVALID_VALUES = [
    (["--set", "replicaCount=two"], "/replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "metricsPort=70000"], "/metricsPort"),
    (["--set-string", "watchNamespaces[0]=Bad_Name"], "/watchNamespaces/0"),
    (["--set-string", "cleanup.onUninstall=yes"], "/cleanup/onUninstall"),
    (["--set", "replica=1"], "replica"),
]


def test_install_rejects_invalid_values(cluster, namespace):
    for setting, named in INVALID_VALUES:
        release = release_name("bad")

        result = helm(cluster, "install", release, str(CHART), "--namespace", namespace, *setting, check=False)

        assert result.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
        assert named in result.stderr, result.stderr
        assert helm(cluster, "status", release, "--namespace", namespace, check=False).returncode != 0


def _operator_kubeconfigs(cluster, namespace: str, names: dict[str, str], directory) -> None:
    for account in ("operator", "cleanup"):
        local.service_account_kubeconfig(cluster.config, cluster.tools, namespace, names[account],
                                         directory / f"{account}.kubeconfig")


def _recommender_spec(prometheus_url: str) -> dict:
    # No local-run label on the model-server pods: kwok marks them Running without a process, which
    # is all this test needs (children, status, Events), and keeps it light.
    return {
        "model": {"name": "chart-bert", "image": "tierscale/model-server:test"},
        "tiers": [{"name": "small"}, {"name": "medium"}],
        "replicas": {"min": 1, "max": 2},
        "gpuBudget": 2,
        "prometheus": {"url": prometheus_url, "window": "10s", "timeoutSeconds": 2},
        "policy": {"interval": "5s", "cooldown": "5s"},
    }


def _owned_children(kube, namespace: str, name: str) -> dict[str, list[str]]:
    selector = f"tierscale.io/recommender={name}"
    return {
        "deployments": [d.metadata.name for d in kube.apps.list_namespaced_deployment(namespace, label_selector=selector).items],
        "configmaps": [c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items
                       if c.metadata.name.startswith(f"{name}-")],
        "services": [s.metadata.name for s in kube.core.list_namespaced_service(namespace).items if s.metadata.name == name],
        "recommenders": [r["metadata"]["name"] for r in kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL)["items"]],
    }


def test_operator_runs_then_uninstall_cleans_up(cluster, kube, namespace, tmp_path):
    """The chart's operator, with only its own RBAC, manages a resource; uninstall leaves nothing."""
    release = release_name("life")
    names = operator_names(release)
    env = [
        "--set-string", LOCAL_RUN_LABEL_VALUE,
        "--set", f"extraEnv[0].name=KUBECONFIG,extraEnv[0].value={tmp_path / 'operator.kubeconfig'}",
        "--set", f"cleanup.extraEnv[0].name=KUBECONFIG,cleanup.extraEnv[0].value={tmp_path / 'cleanup.kubeconfig'}",
        "--set", "cleanup.timeoutSeconds=30",
    ]
    # The ServiceAccounts exist only after the install, so the operator starts with the second revision.
    install(cluster, release, namespace, "--set", "replicaCount=0", *env)
    _operator_kubeconfigs(cluster, namespace, names, tmp_path)
    helm(cluster, "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
         "--set", "replicaCount=1", "--wait", "--timeout", "120s")

    create_recommender(kube, namespace, "rec", _recommender_spec(cluster.prometheus_url))
    wait_until(lambda: (read_recommender(kube, namespace, "rec").get("status") or {}).get("lastDecision"),
               timeout_s=90, what="a control step's status written by the chart's operator")
    body = read_recommender(kube, namespace, "rec")
    children = _owned_children(kube, namespace, "rec")
    events = {e.reason for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=rec").items}
    log = pod_log(cluster, namespace, names["operator"], "operator")

    assert "tierscale.io/finalizer" in body["metadata"]["finalizers"]
    assert sorted(children["deployments"]) == ["rec-medium", "rec-small"]
    assert children["configmaps"] == ["rec-policy-state"]
    assert children["services"] == ["rec"]
    assert "Reconciled" in events
    assert "Forbidden" not in log
    assert "Not enough permissions" not in log

    uninstall(cluster, release, namespace)

    assert _owned_children(kube, namespace, "rec")["recommenders"] == []
    wait_until(lambda: _owned_children(kube, namespace, "rec") == {
        "deployments": [], "configmaps": [], "services": [], "recommenders": []},
        timeout_s=60, what="the garbage collector deleting the resource's children")
    wait_until(lambda: not kube.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=cleanup").items,
        timeout_s=60, what="the succeeded cleanup hook's pod deleted with its Job")


def test_uninstall_without_operator_releases_finalizer(cluster, kube, namespace, tmp_path):
    """With the operator not running, the hook removes the finalizer itself and nothing stays Terminating."""
    release = release_name("orph")
    names = operator_names(release)
    install(cluster, release, namespace, "--set", "replicaCount=0,cleanup.timeoutSeconds=10",
            "--set-string", LOCAL_RUN_LABEL_VALUE,
            "--set", f"cleanup.extraEnv[0].name=KUBECONFIG,cleanup.extraEnv[0].value={tmp_path / 'cleanup.kubeconfig'}")
    _operator_kubeconfigs(cluster, namespace, names, tmp_path)
    spec = _recommender_spec(cluster.prometheus_url)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecommenderDeployment",
            "metadata": {"name": "left", "finalizers": ["tierscale.io/finalizer"]}, "spec": spec}
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    uninstall(cluster, release, namespace)

    assert _owned_children(kube, namespace, "left")["recommenders"] == []


def _manifests_overlay(directory, namespace: str, kubeconfig) -> None:
    """A kustomize overlay of manifests/ (RBAC and operator) renamed into the test's namespace.

    The operator watches only that namespace, runs locally (local-run label) with its
    ServiceAccount's kubeconfig, and starts with 0 replicas so the token can be made first.
    """
    for name in ("rbac.yaml", "operator.yaml"):
        shutil.copy(REPO / "manifests" / name, directory / name)
    operator_patch = [
        {"op": "replace", "path": "/spec/replicas", "value": 0},
        {"op": "add", "path": "/spec/template/metadata/labels/tierscale.io~1local-run", "value": "true"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": f"--namespace={namespace}"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBECONFIG", "value": str(kubeconfig)}},
    ]
    kustomization = {
        "namespace": namespace,
        "namePrefix": f"{namespace}-",
        "resources": ["rbac.yaml", "operator.yaml"],
        "patches": [{"target": {"kind": "Deployment", "name": "tierscale-operator"},
                     "patch": yaml.safe_dump(operator_patch)}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))


def test_manifests_delete_in_documented_order_cleans_up(cluster, kube, namespace, tmp_path):
    """kubectl path of docs/install.md: delete the resources first, then `kubectl delete -k manifests/`."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    kubeconfig = tmp_path / "operator.kubeconfig"
    _manifests_overlay(overlay, namespace, kubeconfig)
    operator = f"{namespace}-tierscale-operator"
    cluster.kubectl("apply", "--server-side", "-k", str(overlay))
    local.service_account_kubeconfig(cluster.config, cluster.tools, namespace, operator, kubeconfig)
    cluster.kubectl("scale", "deployment", operator, "--namespace", namespace, "--replicas=1")
    try:
        create_recommender(kube, namespace, "rec", _recommender_spec(cluster.prometheus_url))
        wait_until(lambda: (read_recommender(kube, namespace, "rec").get("status") or {}).get("lastDecision"),
                   timeout_s=90, what="a control step's status written by the operator of manifests/")
        log = pod_log(cluster, namespace, operator, "operator")

        cluster.kubectl("delete", "recdeploy", "--all", "--namespace", namespace, "--wait", "--timeout=60s")
    finally:
        cluster.kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait", "--timeout=60s")

    assert "Forbidden" not in log
    assert "Not enough permissions" not in log
    assert _owned_children(kube, namespace, "rec")["recommenders"] == []
    wait_until(lambda: _owned_children(kube, namespace, "rec") == {
        "deployments": [], "configmaps": [], "services": [], "recommenders": []},
        timeout_s=60, what="the garbage collector deleting the resource's children")
    with pytest.raises(ApiException) as missing:
        kube.rbac.read_cluster_role(operator)
    assert missing.value.status == 404


def test_kind_prometheus_manifest_passes_server_dry_run(cluster, namespace):
    # The dry run cannot see a namespace it would create, so the objects move to the test's namespace.
    text = (REPO / "hack" / "kind" / "prometheus.yaml").read_text().replace("tierscale-monitoring", namespace)
    objects = [o for o in yaml.safe_load_all(text) if o["kind"] != "Namespace"]

    out = _server_dry_run(cluster, yaml.safe_dump_all(objects))

    assert "deployment.apps/prometheus" in out
    assert "clusterrole.rbac.authorization.k8s.io/tierscale-kind-prometheus" in out
