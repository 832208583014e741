"""Helpers for the chart and RBAC tests on the local cluster: helm, releases, ServiceAccount checks.

Every release a test installs watches only that test's namespace: a release that watches every
namespace would manage (and, through its uninstall hook, delete) the resources of other tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tierscale"
HELM_TIMEOUT_S = 180
LOCAL_RUN = "tierscale.io/local-run"


def helm(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the built helm against the local cluster; with ``check``, raises with its output."""
    result = subprocess.run(
        [str(cluster.tools.helm / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=HELM_TIMEOUT_S,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def release_name(prefix: str) -> str:
    return f"{prefix}-{os.urandom(2).hex()}"


def set_args(values: dict[str, str]) -> list[str]:
    args = []
    for key, value in values.items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return args


def install(cluster, release: str, namespace: str, *extra: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    """Installs a release that watches only ``namespace`` (see the module doc)."""
    return helm(
        cluster, "install", release, str(chart), "--namespace", namespace,
        "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s", *extra,
    )


def uninstall(cluster, release: str, namespace: str, *extra: str) -> None:
    helm(cluster, "uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait",
         "--timeout", "120s", *extra)


def operator_names(release: str) -> dict[str, str]:
    """Object names the chart gives a release (the chart's fullname rule for names without "tierscale")."""
    prefix = release if "tierscale" in release else f"{release}-tierscale"
    return {"operator": f"{prefix}-operator", "cleanup": f"{prefix}-cleanup", "fullname": prefix}


def can_i(cluster, account_namespace: str, account: str, verb: str, resource: str,
          namespace: str | None = None) -> bool:
    """`kubectl auth can-i` as a ServiceAccount; ``namespace`` None asks cluster-wide (--all-namespaces).

    ``resource`` may name a subresource as ``deployments.apps/scale``; it is passed as --subresource,
    because kubectl reads ``TYPE/NAME`` as an object name.
    """
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    resource, _, subresource = resource.partition("/")
    if subresource:
        scope.append(f"--subresource={subresource}")
    result = cluster.kubectl(
        "auth", "can-i", verb, resource, f"--as=system:serviceaccount:{account_namespace}:{account}", *scope,
        check=False,
    )
    answer = result.stdout.strip()
    if answer not in ("yes", "no"):
        raise AssertionError(f"kubectl auth can-i {verb} {resource} returned {answer!r}: {result.stderr.strip()}")
    return answer == "yes"


def rendered(cluster, *args: str) -> list[dict]:
    out = helm(cluster, "template", "rendered", str(CHART), *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_log(cluster, namespace: str, pod_prefix: str, container: str) -> str:
    """The log the local kubelet stand-in writes for a local-run pod's container ("" when none yet)."""
    logs = sorted((cluster.config.pods_dir / namespace).glob(f"{pod_prefix}*/{container}.log"))
    return "\n".join(path.read_text(errors="replace") for path in logs)
