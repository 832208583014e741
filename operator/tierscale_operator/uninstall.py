"""Deletes every RecommenderDeployment before the operator goes away, so nothing is left behind.

Run by the Helm chart's pre-delete hook (``python -m tierscale_operator.uninstall``) while the
operator still runs. Each resource carries kopf's finalizer; a running operator removes it as soon as
the resource is being deleted, and the garbage collector then deletes the resource's Deployments,
Service, state ConfigMap and Lease through their owner references. When the operator does not run
(its pod crashed, or its image cannot be pulled), nothing would remove the finalizer and the resource
would stay Terminating for ever: after ``--release-after`` seconds this module removes the finalizer
itself. That is safe because the operator has no deletion handler: the finalizer only exists because
kopf adds one to resources that have timers.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable

from kubernetes import client, config
from kubernetes.client.rest import ApiException

log = logging.getLogger("tierscale.uninstall")

GROUP = "tierscale.io"
VERSION = "v1alpha1"
PLURAL = "recommenderdeployments"
# Must equal settings.persistence.finalizer in handlers.configure (a unit test compares them).
FINALIZER = "tierscale.io/finalizer"
POLL_S = 1.0


class CleanupTimeout(RuntimeError):
    """Resources were still present when the time ran out; the message names them."""


def _key(item: dict) -> str:
    return f"{item['metadata']['namespace']}/{item['metadata']['name']}"


def list_resources(custom: client.CustomObjectsApi, namespaces: Iterable[str] | None) -> list[dict]:
    """Lists the RecommenderDeployments in the given namespaces, or in all of them for None."""
    if not namespaces:
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    items = []
    for namespace in namespaces:
        items.extend(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])
    return items


def remove_finalizer(custom: client.CustomObjectsApi, item: dict) -> bool:
    """Removes the operator's finalizer from one resource; returns whether a write was needed.

    The patch carries the resourceVersion that was read, so a finalizer another controller added in
    between is never dropped: a 409 is answered by reading the resource again (the caller's next round).
    """
    metadata = item["metadata"]
    finalizers = metadata.get("finalizers") or []
    if FINALIZER not in finalizers:
        return False
    patch = {
        "metadata": {
            "finalizers": [f for f in finalizers if f != FINALIZER],
            "resourceVersion": metadata["resourceVersion"],
        }
    }
    try:
        custom.patch_namespaced_custom_object(GROUP, VERSION, metadata["namespace"], PLURAL, metadata["name"], patch)
    except ApiException as error:
        if error.status in (404, 409):
            return False
        raise
    log.info("removed finalizer %s from %s", FINALIZER, _key(item))
    return True


def delete_all(
    custom: client.CustomObjectsApi,
    namespaces: Iterable[str] | None,
    *,
    release_after_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Deletes every resource and waits until they are gone; returns how many there were.

    Finalizers still present ``release_after_s`` seconds after the delete are removed here. Raises
    `CleanupTimeout` when resources remain after ``timeout_s`` seconds.
    """
    namespaces = list(namespaces or [])
    items = list_resources(custom, namespaces)
    for item in items:
        metadata = item["metadata"]
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, metadata["namespace"], PLURAL, metadata["name"])
        except ApiException as error:
            if error.status != 404:
                raise
        log.info("deleting %s", _key(item))

    started = clock()
    while True:
        remaining = list_resources(custom, namespaces)
        if not remaining:
            return len(items)

        waited_s = clock() - started
        if waited_s >= timeout_s:
            raise CleanupTimeout(
                f"{len(remaining)} RecommenderDeployments still exist after {timeout_s:g} s: "
                f"{', '.join(sorted(_key(i) for i in remaining))}; see `kubectl describe` for their finalizers"
            )
        if waited_s >= release_after_s:
            for item in remaining:
                if item["metadata"].get("deletionTimestamp"):
                    remove_finalizer(custom, item)
        sleep(POLL_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tierscale_operator.uninstall", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", action="append", default=[],
                        help="delete the resources of this namespace (repeatable); default: all namespaces")
    parser.add_argument("--release-after", type=float, default=20.0, metavar="SECONDS",
                        help="remove the operator's finalizer from resources still present after this many seconds "
                             "(default 20)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="fail when resources still exist after this many seconds (default 60)")
    args = parser.parse_args(argv)
    if args.release_after > args.timeout:
        parser.error(f"--release-after={args.release_after:g} must not exceed --timeout={args.timeout:g}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    custom = client.CustomObjectsApi()
    scope = ", ".join(args.namespace) if args.namespace else "all namespaces"
    try:
        count = delete_all(custom, args.namespace, release_after_s=args.release_after, timeout_s=args.timeout)
    except CleanupTimeout as error:
        log.error("%s", error)
        raise SystemExit(1) from error
    log.info("deleted %d RecommenderDeployments in %s", count, scope)


if __name__ == "__main__":
    main()
