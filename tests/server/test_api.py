"""The inference, management and metrics APIs of a real server process (small tier, real data)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.server.conftest import MODEL
from tierscale_server.ranking import propensity

PREDICT = f"/predictions/{MODEL}"


def predict(server, body: dict) -> httpx.Response:
    return httpx.post(server.inference + PREDICT, json=body, timeout=30)


def test_ping_is_healthy_when_loaded(server):
    response = httpx.get(server.inference + "/ping", timeout=10)

    assert response.status_code == 200
    assert response.json()["status"] == "Healthy"
    assert response.json()["tier"] == "small"


def test_prediction_by_user_id(server):
    response = predict(server, {"user_id": "196", "k": 10})

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == MODEL
    assert body["tier"] == "small"
    assert len(body["request_id"]) == 32
    items = body["items"]
    assert [item["position"] for item in items] == list(range(1, 11))
    assert sorted(item["rank"] for item in items) == list(range(1, 11))
    assert len({item["item_id"] for item in items}) == 10


def test_prediction_excludes_user_history(server):
    from tierscale_server.data import load_movielens

    data = load_movielens()
    user = data.user_index["196"]
    seen = {data.items[i - 1].token for i in data.sequences[user]}

    items = predict(server, {"user_id": "196", "k": 50}).json()["items"]

    assert not seen & {item["item_id"] for item in items}


def test_prediction_by_history_excludes_it(server):
    history = ["50", "172", "181", "174"]  # Star Wars trilogy and Raiders of the Lost Ark

    items = predict(server, {"history": history, "k": 20}).json()["items"]

    assert len(items) == 20
    assert not set(history) & {item["item_id"] for item in items}


def test_scores_fall_with_model_rank(server):
    items = predict(server, {"user_id": "1", "k": 10}).json()["items"]

    by_rank = sorted(items, key=lambda item: item["rank"])
    scores = [item["score"] for item in by_rank]
    assert scores == sorted(scores, reverse=True)


def test_swaps_are_adjacent_with_right_propensities(server):
    swapped_seen = 0
    for _ in range(40):
        body = predict(server, {"user_id": "42", "k": 5}).json()
        pair = body["swapped_positions"]
        for item in body["items"]:
            moved = pair is not None and item["position"] in pair
            assert abs(item["rank"] - item["position"]) == (1 if moved else 0)
            assert item["propensity"] == pytest.approx(propensity(item["rank"], item["position"], 5, 0.5), abs=1e-6)
        swapped_seen += pair is not None

    # With swap probability 0.5 the chance of no swap in 40 rankings is 2**-40.
    assert 0 < swapped_seen < 40


def test_feedback_counts_a_click_by_position(server):
    body = predict(server, {"user_id": "7", "k": 5}).json()
    before = server.metric("tierscale_clicks_total", model=MODEL, tier="small", position="3")

    response = httpx.post(server.inference + "/feedback",
                          json={"request_id": body["request_id"], "position": 3}, timeout=10)

    assert response.status_code == 200
    assert response.json()["item_id"] == body["items"][2]["item_id"]
    assert response.json()["propensity"] == body["items"][2]["propensity"]
    after = server.metric("tierscale_clicks_total", model=MODEL, tier="small", position="3")
    assert after == before + 1


def test_repeated_click_is_rejected_and_not_counted(server):
    body = predict(server, {"user_id": "8", "k": 3}).json()
    click = {"request_id": body["request_id"], "position": 1}
    httpx.post(server.inference + "/feedback", json=click, timeout=10)
    before = server.metric("tierscale_clicks_total", model=MODEL, tier="small", position="1")

    response = httpx.post(server.inference + "/feedback", json=click, timeout=10)

    assert response.status_code == 409
    assert "already recorded" in response.json()["message"]
    assert server.metric("tierscale_clicks_total", model=MODEL, tier="small", position="1") == before


def test_impressions_are_counted_by_position(server):
    before_1 = server.metric("tierscale_impressions_total", model=MODEL, tier="small", position="1")
    before_4 = server.metric("tierscale_impressions_total", model=MODEL, tier="small", position="4")

    predict(server, {"user_id": "9", "k": 3})

    assert server.metric("tierscale_impressions_total", model=MODEL, tier="small", position="1") == before_1 + 1
    assert server.metric("tierscale_impressions_total", model=MODEL, tier="small", position="4") == before_4


def test_metrics_follow_the_contract(server):
    predict(server, {"user_id": "10", "k": 5})
    text = httpx.get(server.metrics + "/metrics", timeout=10).text

    for name in ("tierscale_request_duration_seconds_bucket", "tierscale_requests_total",
                 "tierscale_impressions_total", "tierscale_batch_size_bucket",
                 "tierscale_queue_time_seconds_bucket", "tierscale_gpu_in_use", "tierscale_workers"):
        assert f'{name}{{' in text, name
    assert server.metric("tierscale_requests_total", model=MODEL, tier="small", code="200") >= 1
    assert server.metric("tierscale_gpu_in_use", model=MODEL, tier="small") == 0.0


def test_concurrent_requests_share_batches(server):
    before_count = server.metric("tierscale_batch_size_count", model=MODEL, tier="small")
    before_sum = server.metric("tierscale_batch_size_sum", model=MODEL, tier="small")

    async def burst():
        async with httpx.AsyncClient(base_url=server.inference, timeout=60) as client:
            bodies = [{"history": ["1", str(2 + i)], "k": 5} for i in range(32)]
            return await asyncio.gather(*(client.post(PREDICT, json=body) for body in bodies))

    responses = asyncio.run(burst())

    assert all(r.status_code == 200 for r in responses)
    batches = server.metric("tierscale_batch_size_count", model=MODEL, tier="small") - before_count
    requests = server.metric("tierscale_batch_size_sum", model=MODEL, tier="small") - before_sum
    assert requests == 32
    assert batches < 32  # at least one batch held more than one request


def test_models_list_the_served_tier(server):
    response = httpx.get(server.management + "/models", timeout=10)

    assert response.status_code == 200
    assert response.json()["models"] == [{"modelName": MODEL, "tier": "small", "status": "ready"}]


def test_model_description_shows_batching_and_workers(server):
    described = httpx.get(f"{server.management}/models/{MODEL}", timeout=10).json()

    assert described["tier"] == "small"
    assert described["status"] == "ready"
    assert described["batchSize"] == 8
    assert described["maxBatchDelayMs"] == 20.0
    assert described["workers"] == {"running": 1, "target": 1}
    assert described["encoders"] == ["bert-l2"]
    assert described["device"] == "cpu"


def test_scaling_workers_to_zero_and_back(server):
    scale = f"{server.management}/models/{MODEL}"
    try:
        assert httpx.put(scale, params={"min_worker": 0}, timeout=10).status_code == 202
        assert httpx.get(server.inference + "/ping", timeout=10).status_code == 503
        response = predict(server, {"user_id": "1", "k": 3})
        assert response.status_code == 503
        assert "worker" in response.json()["message"]

        assert httpx.put(scale, params={"min_worker": 2}, timeout=10).status_code == 202
        assert httpx.get(scale, timeout=10).json()["workers"] == {"running": 2, "target": 2}
        assert predict(server, {"user_id": "1", "k": 3}).status_code == 200
    finally:
        httpx.put(scale, params={"min_worker": 1}, timeout=10)
    assert httpx.get(server.inference + "/ping", timeout=10).status_code == 200


@pytest.mark.parametrize(("params", "message"), [
    ({}, "missing query parameter min_worker"),
    ({"min_worker": "two"}, "min_worker must be an integer"),
    ({"min_worker": "65"}, "outside 0..64"),
])
def test_scaling_rejects_bad_worker_counts(server, params, message):
    response = httpx.put(f"{server.management}/models/{MODEL}", params=params, timeout=10)

    assert response.status_code == 400
    assert message in response.json()["message"]
