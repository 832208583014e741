"""The chart as helm renders it, without a cluster: lint, generated files, RBAC scope, options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import CHART, REPO, find

GENERATORS = ["values_schema.py", "dashboard.py", "crd_reference.py", "docs_numbers.py"]


def test_helm_lint_is_clean(helm):
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_chart_crd_is_manifests_crd():
    source = REPO / "manifests" / "crd" / "recommenderdeployments.tierscale.io.yaml"
    copy = CHART / "crds" / source.name

    assert copy.read_bytes() == source.read_bytes()
    assert [p.name for p in (CHART / "crds").iterdir()] == [source.name]


def test_manifests_match_chart(helm):
    """manifests/ (RBAC, operator, namespace) equal a fresh rendering of the chart."""
    result = subprocess.run([sys.executable, str(REPO / "hack" / "chart" / "render_manifests.py"), "--check",
                             "--helm", str(helm)], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("generator", GENERATORS)
def test_generated_file_is_current(generator):
    result = subprocess.run([sys.executable, str(REPO / "hack" / "chart" / generator), "--check"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr


def test_manifests_rbac_is_chart_default(render):
    """The ClusterRole of manifests/rbac.yaml has the rules of a default chart release."""
    manifests = list(yaml.safe_load_all((REPO / "manifests" / "rbac.yaml").read_text()))
    chart_role = find(render("--set", "cleanup.onUninstall=false"), "ClusterRole", "t-tierscale-operator")[0]
    manifests_role = find(manifests, "ClusterRole", "tierscale-operator")[0]

    assert manifests_role["rules"] == chart_role["rules"]


def _rule_pairs(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_has_no_wildcards_or_secrets(render):
    roles = find(render(), "ClusterRole")
    pairs = set().union(*(_rule_pairs(r["rules"]) for r in roles))

    assert roles
    assert not [p for p in pairs if "*" in p]
    assert not [p for p in pairs if p[1] in ("secrets", "nodes", "pods/exec", "serviceaccounts/token")]
    assert not [p for p in pairs if p[2] in ("escalate", "bind", "impersonate", "deletecollection")]


def test_watch_namespaces_binds_rules_per_namespace(render):
    objects = render("--set", "watchNamespaces={team-a,team-b}")
    deployment = find(objects, "Deployment", "t-tierscale-operator")[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    role_bindings = find(objects, "RoleBinding", "t-tierscale-operator")
    cluster_bindings = find(objects, "ClusterRoleBinding")
    cluster_rules = find(objects, "ClusterRole", "t-tierscale-operator-cluster")[0]["rules"]

    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    assert [b["roleRef"]["name"] for b in cluster_bindings] == ["t-tierscale-operator-cluster"]
    assert {r for _, r, _ in _rule_pairs(cluster_rules)} == {"customresourcedefinitions", "namespaces"}


def test_operator_pod_is_locked_down(render):
    deployment = find(render(), "Deployment", "t-tierscale-operator")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--health-port={ports['health']}" in container["args"]
    assert f"--metrics-port={ports['metrics']}" in container["args"]
    assert container["resources"]["limits"]["memory"]


def test_service_monitor_renders_when_enabled(render):
    objects = render("--set", "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prom")
    monitor = find(objects, "ServiceMonitor")[0]
    service = find(objects, "Service", "t-tierscale-operator-metrics")[0]

    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert all(service["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert find(render(), "ServiceMonitor") == []


def test_dashboard_configmap_carries_dashboard(render):
    configmap = find(render("--set", "grafanaDashboard.enabled=true"), "ConfigMap", "t-tierscale-dashboard")[0]
    dashboard = json.loads((CHART / "dashboards" / "tierscale.json").read_text())

    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["tierscale.json"]) == dashboard


def test_cleanup_hook_is_pre_delete_job(render):
    job = find(render(), "Job", "t-tierscale-cleanup")[0]
    container = job["spec"]["template"]["spec"]["containers"][0]

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert container["command"] == ["python", "-m", "tierscale_operator.uninstall"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "t-tierscale-cleanup"
    assert find(render("--set", "cleanup.onUninstall=false"), "Job") == []


def test_top_level_values_are_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [line.split(":")[0] for i, line in enumerate(lines)
                    if line and not line.startswith(("#", " ")) and not lines[i - 1].startswith("#")]

    assert undocumented == []
