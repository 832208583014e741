"""A real model server process on loopback, serving the small tier on real MovieLens-100K data.

The small tier's encoder is trained on first use (a few minutes on 2 CPU cores) and cached
under ``$TIERSCALE_CACHE``, so later runs load the checkpoint in seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until

MODEL = "movielens-bert"
STARTUP_TIMEOUT_S = 1200  # covers training the small tier on a fresh machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    inference: str
    management: str
    metrics: str
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        """Return the value of one sample on /metrics (0.0 when the series does not exist yet)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.metrics}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0


def start_server(tmp_dir: Path, *extra: str) -> RunningServer:
    ports = [free_port() for _ in range(3)]
    log_path = tmp_dir / f"server-{ports[0]}.log"
    command = [
        sys.executable, "-m", "tierscale_server", "serve", "--tier", "small", "--host", "127.0.0.1",
        "--port", str(ports[0]), "--management-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--train-if-missing", *extra,
    ]
    log_file = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    server = RunningServer(process, *(f"http://127.0.0.1:{p}" for p in ports), log_path=log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{server.inference}/ping", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, timeout_s=STARTUP_TIMEOUT_S, what="the model server's /ping to return 200", interval_s=1)
    return server


def stop_server(server: RunningServer) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: swaps on half the rankings (seeded) and batches within 20 ms."""
    running = start_server(
        tmp_path_factory.mktemp("server"),
        "--swap-probability", "0.5", "--seed", "7", "--max-batch-size", "8", "--max-batch-delay-ms", "20",
        "--max-body-bytes", "4096",
    )
    yield running
    stop_server(running)
