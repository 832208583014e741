"""The CRD upgrade path of docs/install.md: `helm upgrade` alone leaves the CRD as it was, and
`helm show crds CHART | kubectl apply --server-side --force-conflicts -f -` brings a new field in.

Runs on a copy of the chart whose CRD has a test-only group and kind, so the real CRD, which other
tests use at the same time, is never changed; the test CRD is deleted at the end.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from chart_fixtures import CHART, helm, install, release_name, uninstall

pytestmark = pytest.mark.timeout(300)

GROUP = "upgrade-test.tierscale.io"
PLURAL = "upgradeprobes"
CRD_NAME = f"{PLURAL}.{GROUP}"
NEW_FIELD = "upgradeProbeField"


def _chart_version(tmp_path, version: str, with_new_field: bool):
    """A copy of the chart whose CRD serves kind UpgradeProbe in the test group."""
    chart = tmp_path / version / "tierscale"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = version
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))

    source = next((chart / "crds").glob("*.yaml"))
    crd = yaml.safe_load(source.read_text())
    source.unlink()
    crd["metadata"]["name"] = CRD_NAME
    crd["spec"]["group"] = GROUP
    crd["spec"]["names"] = {"plural": PLURAL, "singular": "upgradeprobe", "kind": "UpgradeProbe",
                            "listKind": "UpgradeProbeList"}
    if with_new_field:
        spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec_schema["properties"][NEW_FIELD] = {"type": "string", "description": "Added by the upgrade."}
    (chart / "crds" / f"{CRD_NAME}.yaml").write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def _create_probe(cluster, namespace: str, name: str) -> subprocess.CompletedProcess:
    body = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "UpgradeProbe",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": "probe", "image": "probe:1"}, "tiers": [{"name": "small"}],
                 NEW_FIELD: "present"},
    }
    # --validate=strict makes the API server reject unknown fields instead of pruning them silently.
    return cluster.kubectl("create", "--validate=strict", "-f", "-", input=yaml.safe_dump(body), check=False)


def test_crd_upgrade_path_adds_field(cluster, kube, namespace, tmp_path):
    v1 = _chart_version(tmp_path, "0.1.0", with_new_field=False)
    v2 = _chart_version(tmp_path, "0.2.0", with_new_field=True)
    release = release_name("crdup")
    try:
        install(cluster, release, namespace, "--set", "replicaCount=0,cleanup.onUninstall=false", chart=v1)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
        before = _create_probe(cluster, namespace, "before")

        helm(cluster, "upgrade", release, str(v2), "--namespace", namespace, "--reuse-values",
             "--wait", "--timeout", "120s")
        after_helm_only = _create_probe(cluster, namespace, "helm-only")

        crds = helm(cluster, "show", "crds", str(v2)).stdout
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
        after_apply = _create_probe(cluster, namespace, "after")
        stored = kube.custom.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, PLURAL, "after")
    finally:
        uninstall(cluster, release, namespace)
        cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--timeout=60s")

    assert before.returncode != 0
    assert f'unknown field "spec.{NEW_FIELD}"' in before.stderr
    assert after_helm_only.returncode != 0, "helm upgrade changed the CRD; the documented extra step is stale"
    assert f'unknown field "spec.{NEW_FIELD}"' in after_helm_only.stderr
    assert after_apply.returncode == 0, after_apply.stderr
    assert stored["spec"][NEW_FIELD] == "present"
