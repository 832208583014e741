"""Command line of the local cluster: ``python -m tierscale_localcluster {up,down,status}``."""

from __future__ import annotations

import argparse
import logging
import sys

from . import cluster
from .config import ClusterConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierscale_localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    config = ClusterConfig()

    if args.command == "up":
        try:
            kubeconfig = cluster.up(config)
        except cluster.ClusterError as error:
            print(f"cluster-up failed: {error}", file=sys.stderr)
            return 1
        print(f"Prometheus: {config.prometheus_url}", file=sys.stderr)
        print(kubeconfig)  # the last line, for scripts: KUBECONFIG=$(make cluster-up | tail -1)
    elif args.command == "down":
        stopped = cluster.down(config)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}", file=sys.stderr)
    else:
        running = cluster.running_components(config)
        for name in cluster.COMPONENTS:
            print(f"{name:<24} {'running' if name in running else 'stopped'}")
        print(f"kubeconfig: {config.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
