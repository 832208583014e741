"""Bad input to a real server: a clear 4xx naming the problem, and the server keeps serving.

Nothing a rejected request does may count as an impression or a click.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MODEL

PREDICT = f"/predictions/{MODEL}"
JSON = {"content-type": "application/json"}


def counted(server) -> tuple[float, float]:
    impressions = sum(server.metric("tierscale_impressions_total", model=MODEL, tier="small", position=str(p))
                      for p in range(1, 21))
    clicks = sum(server.metric("tierscale_clicks_total", model=MODEL, tier="small", position=str(p))
                 for p in range(1, 21))
    return impressions, clicks


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    (PREDICT, b'{"user_id": "1", "k": ', 400, "not valid JSON"),
    (PREDICT, b'\xff\xfe{"user_id": "1"}', 400, "not valid UTF-8"),
    (PREDICT, b'["user_id", "1"]', 400, "must be a JSON object"),
    ("/predictions/imdb-bert", b'{"user_id": "1"}', 404, "model 'imdb-bert' not found"),
    (PREDICT, b'{"user_id": "999999"}', 404, "user_id '999999' not found and no history given"),
    (PREDICT, b'{"k": 5}', 422, "needs a user_id or a history"),
    (PREDICT, b'{"user_id": "1", "k": 0}', 422, "k 0 is out of range 1..1682"),
    (PREDICT, b'{"user_id": "1", "k": -3}', 422, "k -3 is out of range 1..1682"),
    (PREDICT, b'{"user_id": "1", "k": 1683}', 422, "k 1683 is out of range 1..1682"),
    (PREDICT, b'{"user_id": "1", "k": "ten"}', 422, "k must be an integer"),
    (PREDICT, b'{"history": []}', 422, "at least one item id"),
    (PREDICT, b'{"history": ["1", "no-such-item"]}', 422, "unknown item ids ['no-such-item']"),
    (PREDICT, b'{"user": "1"}', 422, "unknown field(s) ['user']"),
    (PREDICT, b'{"history": ["1"], "pad": "' + b"x" * 5000 + b'"}', 413, "exceeds the limit of 4096 bytes"),
    ("/feedback", b'{"request_id": "0123456789abcdef", "position": 1}', 404, "request_id '0123456789abcdef' not found"),
    ("/feedback", b'{"position": 1}', 422, "request_id must be a non-empty string"),
    ("/feedback", b'{"request_id": "x", "position": 1', 400, "not valid JSON"),
])
def test_bad_request_is_rejected_and_server_keeps_serving(server, path, body, status, message):
    before = counted(server)

    response = httpx.post(server.inference + path, content=body, headers=JSON, timeout=30)

    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert response.json()["code"] == status
    assert httpx.get(server.inference + "/ping", timeout=10).status_code == 200
    assert counted(server) == before


@pytest.mark.parametrize(("position", "message"), [
    (0, "position 0 was not shown"),
    (4, "position 4 was not shown"),
    ("2", "position must be an integer"),
])
def test_feedback_for_a_position_not_shown_is_rejected(server, position, message):
    shown = httpx.post(server.inference + PREDICT, json={"user_id": "3", "k": 3}, timeout=30).json()
    before = counted(server)

    response = httpx.post(server.inference + "/feedback",
                          json={"request_id": shown["request_id"], "position": position}, timeout=10)

    assert response.status_code == 422
    assert message in response.json()["message"]
    assert counted(server) == before


def test_rejected_requests_are_counted_by_code(server):
    before = server.metric("tierscale_requests_total", model=MODEL, tier="small", code="422")

    httpx.post(server.inference + PREDICT, json={"user_id": "1", "k": 0}, timeout=10)

    assert server.metric("tierscale_requests_total", model=MODEL, tier="small", code="422") == before + 1


def test_unknown_path_gets_a_json_404(server):
    response = httpx.get(server.inference + "/predict", timeout=10)

    assert response.status_code == 404
    assert response.json()["message"] == "path /predict not found"
