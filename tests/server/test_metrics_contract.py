"""What the operator reads from the server's /metrics: idle series and the swapped (rank, position) cells."""

from __future__ import annotations

import httpx

from tests.server.test_api import predict
from tests.server.conftest import MODEL


def test_request_series_exist_before_any_request(tmp_path):
    from tests.server.conftest import start_server, stop_server

    idle = start_server(tmp_path)
    try:
        text = httpx.get(f"{idle.metrics}/metrics", timeout=10).text
    finally:
        stop_server(idle)

    assert f'tierscale_requests_total{{code="200",model="{MODEL}",tier="small"}} 0.0' in text
    assert f'tierscale_request_duration_seconds_count{{model="{MODEL}",tier="small"}} 0.0' in text


def test_click_on_a_swapped_item_is_counted_with_its_model_rank(server):
    for _ in range(60):
        body = predict(server, {"user_id": "11", "k": 5}).json()
        if body["swapped_positions"]:
            break
    first, second = body["swapped_positions"]
    labels = {"model": MODEL, "tier": "small", "position": str(first), "rank": str(second)}
    before_clicks = server.metric("tierscale_swapped_clicks_total", **labels)

    response = httpx.post(server.inference + "/feedback",
                          json={"request_id": body["request_id"], "position": first}, timeout=10)

    assert response.status_code == 200
    assert server.metric("tierscale_swapped_clicks_total", **labels) == before_clicks + 1
    assert server.metric("tierscale_swapped_impressions_total", **labels) >= 1
    shown = body["items"][first - 1]
    assert shown["rank"] == second
