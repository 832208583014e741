"""Locust load for the demo: MovieLens users replayed against the ready model-server pods.

Run by the demo (``python -m tierscale_demo``) as ``locust --headless -f this file``; it reads:

- ``DEMO_ENDPOINTS_FILE``: JSON list of ``host:port`` of the ready pods, rewritten by the demo as
  pods come and go (no kube-proxy runs on the local cluster, so the client balances itself);
- ``DEMO_MODEL``, ``DEMO_SECONDS``, ``DEMO_PEAK_RPS``, ``DEMO_FLOOR_RPS``, ``DEMO_SEED``.

Each simulated user sends at most one request per second, so the number of users is the offered
request rate. Clicks go to ``/feedback`` of the pod that served the ranking.
"""

from __future__ import annotations

import json
import math
import os
import random
import time

from locust import HttpUser, LoadTestShape, constant_throughput, task

from tierscale_demo.workload import DiurnalRate, Replay, clicked_positions, hour_of_day_shape
from tierscale_operator.sim.movielens import rating_timestamps
from tierscale_server.data import load_movielens

ENDPOINTS_FILE = os.environ["DEMO_ENDPOINTS_FILE"]
MODEL = os.environ.get("DEMO_MODEL", "movielens-bert")
SEED = int(os.environ.get("DEMO_SEED", "0"))

_data = load_movielens()
REPLAY = Replay([[_data.items[i - 1].token for i in seq] for seq in _data.sequences], seed=SEED)
RATE = DiurnalRate(
    shape=tuple(hour_of_day_shape(rating_timestamps())),
    duration_s=float(os.environ.get("DEMO_SECONDS", "600")),
    peak_rps=float(os.environ.get("DEMO_PEAK_RPS", "35")),
    floor_rps=float(os.environ.get("DEMO_FLOOR_RPS", "2")),
)
_endpoints: list[str] = []
_endpoints_read_at = 0.0


def endpoints() -> list[str]:
    global _endpoints, _endpoints_read_at
    if time.monotonic() - _endpoints_read_at > 1.0:
        try:
            with open(ENDPOINTS_FILE) as handle:
                _endpoints = json.load(handle)
        except (OSError, ValueError):
            pass  # keep the previous list while the demo rewrites the file
        _endpoints_read_at = time.monotonic()
    return _endpoints


class MovieLensUser(HttpUser):
    host = "http://127.0.0.1"
    wait_time = constant_throughput(1.0)

    def on_start(self) -> None:
        self.rng = random.Random(SEED + id(self))

    @task
    def recommend_and_click(self) -> None:
        targets = endpoints()
        if not targets:
            time.sleep(0.5)
            return
        endpoint = self.rng.choice(targets)
        moment = REPLAY.sample()
        with self.client.post(
            f"http://{endpoint}/predictions/{MODEL}",
            json={"history": moment.history, "k": 10},
            name="/predictions",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            body = response.json()
        for position in clicked_positions(body["items"], moment, self.rng):
            self.client.post(
                f"http://{endpoint}/feedback",
                json={"request_id": body["request_id"], "position": position},
                name="/feedback",
            )


class CompressedDay(LoadTestShape):
    """Users (= offered requests per second) follow one compressed MovieLens day."""

    def tick(self):
        t = self.get_run_time()
        if t >= RATE.duration_s:
            return None
        users = max(1, math.ceil(RATE.rps_at(t)))
        return users, max(1, users)


