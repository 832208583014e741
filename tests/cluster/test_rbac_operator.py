"""The operator's RBAC is least privilege: enough for every API call it makes, and nothing more.

Two checks on a release installed from the chart: `kubectl auth can-i` as its ServiceAccount for
each verb the operator uses and for a list it must not have; and the operator's own API-calling code
(reconcile, observe, scale, state, lease, initial table) run with that ServiceAccount's token.
The cluster-wide RBAC of manifests/rbac.yaml is the chart's default rendering (a test in
tests/chart compares them), so it is covered by the cluster-wide release here.
"""

from __future__ import annotations

import pytest
from kubernetes import client, config as kube_config

from chart_fixtures import CHART, can_i, helm, install, operator_names, release_name, uninstall
from operator_fixtures import create_recommender, read_recommender
from tierscale_localcluster import cluster as local
from tierscale_operator import builders, pretrained, workloads
from tierscale_operator.lease import LoopLease
from tierscale_operator.persistence import StateStore
from tierscale_operator.reconcile import reconcile_children
from tierscale_operator.spec import parse_spec

pytestmark = pytest.mark.timeout(300)

# (verb, resource) the operator calls in the namespaces it watches.
NAMESPACED_ALLOWED = [
    ("list", "recommenderdeployments.tierscale.io"),
    ("watch", "recommenderdeployments.tierscale.io"),
    ("patch", "recommenderdeployments.tierscale.io"),
    ("patch", "recommenderdeployments.tierscale.io/status"),
    ("get", "deployments.apps"),
    ("list", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("get", "deployments.apps/scale"),
    ("update", "deployments.apps/scale"),
    ("get", "services"),
    ("create", "services"),
    ("patch", "services"),
    ("get", "configmaps"),
    ("create", "configmaps"),
    ("update", "configmaps"),
    ("list", "pods"),
    ("get", "leases.coordination.k8s.io"),
    ("create", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
    ("create", "events"),
]
# (verb, resource) it must not have anywhere.
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("delete", "configmaps"),
    ("delete", "services"),
    ("delete", "recommenderdeployments.tierscale.io"),
    ("create", "recommenderdeployments.tierscale.io"),
    ("update", "recommenderdeployments.tierscale.io"),
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("patch", "nodes"),
    ("update", "nodes/status"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("deletecollection", "deployments.apps"),
    ("create", "jobs.batch"),
]
CLUSTER_ALLOWED = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
    ("watch", "namespaces"),
]


def _answers(cluster, account_namespace: str, account: str, checks, namespace: str | None) -> dict:
    return {(verb, resource): can_i(cluster, account_namespace, account, verb, resource, namespace)
            for verb, resource in checks}


@pytest.fixture
def namespaced_release(cluster, namespace):
    release = release_name("rbac")
    install(cluster, release, namespace, "--set", "replicaCount=0,cleanup.onUninstall=false")
    yield operator_names(release)
    uninstall(cluster, release, namespace)


def test_namespaced_rbac_allows_exactly_operator_verbs(cluster, kube, namespace, namespaced_release):
    account = namespaced_release["operator"]

    inside = _answers(cluster, namespace, account, NAMESPACED_ALLOWED + FORBIDDEN, namespace)
    elsewhere = _answers(cluster, namespace, account, NAMESPACED_ALLOWED, "default")
    cluster_wide = _answers(cluster, namespace, account, CLUSTER_ALLOWED + FORBIDDEN, None)

    assert [check for check in NAMESPACED_ALLOWED if not inside[check]] == []
    assert [check for check in FORBIDDEN if inside[check]] == []
    assert [check for check in NAMESPACED_ALLOWED if elsewhere[check]] == []
    assert [check for check in CLUSTER_ALLOWED if not cluster_wide[check]] == []
    assert [check for check in FORBIDDEN if cluster_wide[check]] == []


def test_cleanup_account_only_deletes_recommenders(cluster, namespace):
    release = release_name("rbacclean")
    account = operator_names(release)["cleanup"]
    install(cluster, release, namespace, "--set", "replicaCount=0")
    try:
        answers = _answers(cluster, namespace, account, [
            ("list", "recommenderdeployments.tierscale.io"),
            ("delete", "recommenderdeployments.tierscale.io"),
            ("patch", "recommenderdeployments.tierscale.io"),
        ], namespace)
        elsewhere = can_i(cluster, namespace, account, "delete", "recommenderdeployments.tierscale.io", "default")
        # Everything else the operator may not do, and the operator's own writes on Deployments.
        others = [c for c in FORBIDDEN if c[1] != "recommenderdeployments.tierscale.io"] + [("patch", "deployments.apps")]
        forbidden = _answers(cluster, namespace, account, others, namespace)
    finally:
        # Without the local-run label the hook's pod would never finish here, so skip the hook.
        uninstall(cluster, release, namespace, "--no-hooks")

    assert all(answers.values()), answers
    assert elsewhere is False
    assert [check for check, allowed in forbidden.items() if allowed] == []


def test_clusterwide_rbac_allows_operator_verbs(cluster, namespace):
    # No operator process runs (replicaCount=0), so a release that watches every namespace is safe here.
    release = release_name("rbacwide")
    names = operator_names(release)
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--set",
         "replicaCount=0,cleanup.onUninstall=false", "--wait", "--timeout", "120s")
    try:
        answers = _answers(cluster, namespace, names["operator"], NAMESPACED_ALLOWED + CLUSTER_ALLOWED + FORBIDDEN, None)
    finally:
        uninstall(cluster, release, namespace)

    assert [check for check in NAMESPACED_ALLOWED + CLUSTER_ALLOWED if not answers[check]] == []
    assert [check for check in FORBIDDEN if answers[check]] == []


def _stub_spec(prometheus_url: str) -> dict:
    return {
        "model": {"name": "rbac-bert", "image": "tierscale/model-server:test"},
        "tiers": [{"name": "small"}, {"name": "medium"}],
        "replicas": {"min": 1, "max": 3},
        "gpuBudget": 3,
        "prometheus": {"url": prometheus_url, "window": "10s", "timeoutSeconds": 2},
        "policy": {"interval": "5s", "cooldown": "5s", "initialTable": "rbac-table"},
    }


def test_operator_api_calls_succeed_as_service_account(cluster, kube, namespace, namespaced_release, tmp_path):
    """Each function that calls the API runs with the ServiceAccount's token; a 403 fails the test."""
    kubeconfig = local.service_account_kubeconfig(
        cluster.config, cluster.tools, namespace, namespaced_release["operator"], tmp_path / "sa.kubeconfig")
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    apps, core, coordination = client.AppsV1Api(api), client.CoreV1Api(api), client.CoordinationV1Api(api)
    body = create_recommender(kube, namespace, "rbac", _stub_spec(cluster.prometheus_url))
    uid = body["metadata"]["uid"]
    spec = parse_spec(body["spec"])

    # Children: create, then patch a changed pod template, then delete a tier that left the spec.
    created = reconcile_children(apps, core, namespace, "rbac", uid, spec, {"small": 1})
    changed = dict(body["spec"], model={**body["spec"]["model"], "image": "tierscale/model-server:other"})
    patched = reconcile_children(apps, core, namespace, "rbac", uid, parse_spec(changed), {"small": 1})
    one_tier = dict(changed, tiers=[{"name": "small"}])
    deleted = reconcile_children(apps, core, namespace, "rbac", uid, parse_spec(one_tier), {"small": 1})

    # Observation, a replica change through the scale subresource, state, lease, initial table.
    view = workloads.observe(apps, core, namespace, "rbac", spec)
    retries = workloads.set_replicas(apps, namespace, builders.deployment_name("rbac", "small"), 2)
    store = StateStore(core, namespace, "rbac", uid)
    state = store.load(spec.policy, spec.initial_tier, None)
    store.save(state)
    store.save(store.load(spec.policy, spec.initial_tier, None))
    lease = LoopLease(coordination, "rbac-test", duration_s=15)
    owner = builders.owner_reference("rbac", uid)
    first, renewed = lease.acquire(namespace, "rbac", owner), lease.acquire(namespace, "rbac", owner)
    with pytest.raises(pretrained.TableError) as no_table:
        pretrained.initial_table(core, namespace, spec)

    assert any(c.startswith("created Deployment rbac-small") for c in created)
    assert any("created Service rbac" == c for c in created)
    assert any(c.startswith("updated the pod template") for c in patched)
    assert any(c.startswith("deleted Deployment rbac-medium") for c in deleted)
    assert view.desired("small") == 1
    # The Deployment controller may update the object between the read and the write: a retried
    # 409 is fine here, only a 403 would be an RBAC gap.
    assert retries < workloads.CONFLICT_RETRIES
    assert kube.apps.read_namespaced_deployment("rbac-small", namespace).spec.replicas == 2
    assert state.resource_version is not None
    assert first is True
    assert renewed is True
    # 404, not 403: the ServiceAccount may read ConfigMaps, and this one does not exist.
    assert "HTTP 404" in str(no_table.value)
    assert read_recommender(kube, namespace, "rbac")["metadata"]["uid"] == uid
