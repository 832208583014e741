"""Generates the plain manifests in manifests/ from the Helm chart, so the two never drift.

    python hack/chart/render_manifests.py [--check] [--helm PATH]

The CRD's source is manifests/crd/recommenderdeployments.tierscale.io.yaml; it is copied byte for
byte into charts/tierscale/crds/. The RBAC and the operator Deployment are `helm template` of the
chart as release "tierscale" in namespace "tierscale-system", without the uninstall hook (kubectl
runs no hooks) and without Helm's own labels. With --check nothing is written: the command fails,
naming the stale files, when a file differs from what it would write.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tierscale"
MANIFESTS = REPO / "manifests"
CRD_SOURCE = MANIFESTS / "crd" / "recommenderdeployments.tierscale.io.yaml"
CRD_COPY = CHART / "crds" / CRD_SOURCE.name
RELEASE = "tierscale"
NAMESPACE = "tierscale-system"
# Labels that mark an object as managed by Helm, which is wrong for objects created with kubectl apply.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
GENERATED = "# Generated from charts/tierscale by `make manifests`; edit the chart, not this file.\n"

NAMESPACE_YAML = GENERATED + yaml.safe_dump(
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "tierscale"}}},
    sort_keys=False,
)
KUSTOMIZATION_YAML = GENERATED + """\
# kubectl apply --server-side -k manifests/  installs the CRD, the namespace, the operator's RBAC and
# the operator. Delete every RecommenderDeployment before `kubectl delete -k manifests/` (see
# docs/install.md): the operator must still run to release their finalizers.
resources:
  - crd/recommenderdeployments.tierscale.io.yaml
  - namespace.yaml
  - rbac.yaml
  - operator.yaml
"""


def helm_binary() -> str:
    out = subprocess.run([str(REPO / "hack" / "build-tools.sh"), "--bindir"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    dirs = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return str(Path(dirs["helm"]) / "helm")


def helm_template(helm: str, *extra: str) -> list[dict]:
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--set", "cleanup.onUninstall=false", *extra],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"helm template failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _strip_helm_labels(obj: dict) -> dict:
    labels = obj["metadata"].get("labels") or {}
    for key in HELM_LABELS:
        labels.pop(key, None)
    return obj


def _dump(header: str, objects: list[dict]) -> str:
    return GENERATED + header + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def render(helm: str) -> dict[Path, str]:
    """Returns every generated file's path and content."""
    objects = [_strip_helm_labels(o) for o in helm_template(helm)]
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    unexpected = set(by_kind) - {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}
    if unexpected:
        raise SystemExit(f"helm template rendered kinds this script does not place: {sorted(unexpected)}")

    rbac = by_kind["ServiceAccount"] + by_kind["ClusterRole"] + by_kind["ClusterRoleBinding"]
    return {
        CRD_COPY: CRD_SOURCE.read_text(),
        MANIFESTS / "namespace.yaml": NAMESPACE_YAML,
        MANIFESTS / "kustomization.yaml": KUSTOMIZATION_YAML,
        MANIFESTS / "rbac.yaml": _dump(
            "# The operator's ServiceAccount and least-privilege RBAC: only the verbs it calls, in every namespace.\n",
            rbac,
        ),
        MANIFESTS / "operator.yaml": _dump("# The operator Deployment (image tierscale/operator).\n", by_kind["Deployment"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if a file is out of date")
    parser.add_argument("--helm", help="helm binary (default: the one hack/build-tools.sh built)")
    args = parser.parse_args(argv)

    files = render(args.helm or helm_binary())
    if args.check:
        stale = [str(p.relative_to(REPO)) for p, text in files.items() if not p.is_file() or p.read_text() != text]
        if stale:
            raise SystemExit(f"out of date: {', '.join(stale)}; run `make manifests`")
        return
    for path, text in files.items():
        path.write_text(text)
        print(path.relative_to(REPO), file=sys.stderr)


if __name__ == "__main__":
    main()
