"""One port for all three APIs, as a pod with a single container port runs the server."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.server.conftest import MODEL, free_port, wait_until


def test_single_port_serves_all_apis_and_stops_on_sigterm(tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "tierscale_server", "serve", "--tier", "small", "--port", str(port),
               "--management-port", str(port), "--metrics-port", str(port), "--train-if-missing"]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/ping", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=1200, what="/ping on the single port", interval_s=1)

        assert httpx.post(f"{base}/predictions/{MODEL}", json={"user_id": "1", "k": 3}, timeout=30).status_code == 200
        assert httpx.get(f"{base}/models/{MODEL}", timeout=10).json()["tier"] == "small"
        assert "tierscale_requests_total{" in httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        process.terminate()
        returncode = process.wait(timeout=30)

    assert returncode == 0
    assert "received SIGTERM: stopping" in log_path.read_text()
