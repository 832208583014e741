"""Runs the operator: ``python -m tierscale_operator [--namespace NS ...] [--metrics-port N]``.

Without ``--namespace`` it watches every namespace (cluster-wide RBAC needed). The Kubernetes
credentials come from the pod's ServiceAccount, else from ``KUBECONFIG`` / ``~/.kube/config``.
"""

from __future__ import annotations

import argparse
import logging

import kopf
from prometheus_client import start_http_server

from tierscale_operator import handlers  # noqa: F401  (registers the handlers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tierscale_operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch this namespace (repeatable); default: all namespaces")
    parser.add_argument("--metrics-port", type=int, default=8090,
                        help="port of the operator's own /metrics (default 8090; 0 turns it off)")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address the /metrics server binds (default: %(default)s)")
    parser.add_argument("--health-port", type=int, default=8091,
                        help="port of kopf's liveness endpoint /healthz (default 8091; 0 turns it off)")
    parser.add_argument("--health-host", default="0.0.0.0", help="address the liveness endpoint binds (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages (no-op decisions too)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf reports every timer run at info; the control step logs what it decided itself.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    liveness = f"http://{args.health_host}:{args.health_port}/healthz" if args.health_port else None
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        standalone=True,
    )


if __name__ == "__main__":
    main()
