"""Where the local cluster keeps its files and which loopback ports it listens on.

Every value has an environment override so two checkouts, or CI beside a developer's cluster,
can run side by side: ``TIERSCALE_CLUSTER_DIR``, ``TIERSCALE_CLUSTER_PORT_BASE``,
``TIERSCALE_GPU_NODES``, ``TIERSCALE_GPUS_PER_NODE`` and ``TIERSCALE_SCRAPE_INTERVAL_S``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_RUN_LABEL = "tierscale.io/local-run"
LOCAL_ADDRESS_ANNOTATION = "tierscale.io/local-address"
LOCAL_PORTS_ANNOTATION = "tierscale.io/local-ports"
SIMULATED_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"


def _cache_dir() -> Path:
    return Path(os.environ.get("TIERSCALE_CACHE", Path.home() / ".cache" / "tierscale"))


@dataclass(frozen=True)
class ClusterConfig:
    """Paths and ports of one local cluster; ``port_base`` shifts every port together."""

    state_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("TIERSCALE_CLUSTER_DIR", _cache_dir() / "cluster")
        )
    )
    port_base: int = field(
        default_factory=lambda: int(os.environ.get("TIERSCALE_CLUSTER_PORT_BASE", "16400"))
    )
    gpu_nodes: int = field(default_factory=lambda: int(os.environ.get("TIERSCALE_GPU_NODES", "2")))
    gpus_per_node: int = field(
        default_factory=lambda: int(os.environ.get("TIERSCALE_GPUS_PER_NODE", "4"))
    )
    scrape_interval_s: float = field(
        default_factory=lambda: float(os.environ.get("TIERSCALE_SCRAPE_INTERVAL_S", "1"))
    )

    def __post_init__(self) -> None:
        if not 1024 <= self.port_base <= 65000:
            raise ValueError(
                f"TIERSCALE_CLUSTER_PORT_BASE={self.port_base} is outside 1024..65000"
            )
        if self.gpu_nodes < 0 or self.gpus_per_node < 0:
            raise ValueError(
                f"TIERSCALE_GPU_NODES={self.gpu_nodes} and TIERSCALE_GPUS_PER_NODE="
                f"{self.gpus_per_node} must not be negative"
            )
        if self.scrape_interval_s <= 0:
            raise ValueError(
                f"TIERSCALE_SCRAPE_INTERVAL_S={self.scrape_interval_s} must be positive"
            )

    # Ports, all on 127.0.0.1.
    @property
    def etcd_client_port(self) -> int:
        return self.port_base

    @property
    def etcd_peer_port(self) -> int:
        return self.port_base + 1

    @property
    def apiserver_port(self) -> int:
        return self.port_base + 2

    @property
    def controller_manager_port(self) -> int:
        return self.port_base + 3

    @property
    def scheduler_port(self) -> int:
        return self.port_base + 4

    @property
    def kwok_port(self) -> int:
        return self.port_base + 5

    @property
    def prometheus_port(self) -> int:
        return self.port_base + 6

    # Paths.
    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def run_dir(self) -> Path:
        """Pid files of the cluster's own processes."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def pods_dir(self) -> Path:
        """Logs and pid files of the pod processes the kubelet stand-in runs."""
        return self.state_dir / "pods"

    @property
    def prometheus_dir(self) -> Path:
        return self.state_dir / "prometheus"

    @property
    def targets_dir(self) -> Path:
        """File-based service discovery: one JSON file per scrape target group."""
        return self.prometheus_dir / "targets"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"
