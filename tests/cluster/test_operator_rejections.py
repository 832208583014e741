"""Resources the schema accepts but the operator cannot run: one condition, one Event each."""

from __future__ import annotations

import time

import pytest

from operator_fixtures import create_recommender, read_recommender, start_operator, stub_spec
from support import wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def operator(cluster, namespace, tmp_path):
    running = start_operator(cluster, namespace, tmp_path)
    yield running
    cluster.kubectl("delete", "recdeploy", "--all", "-n", namespace, "--timeout=60s", check=False)
    running.kill()
    print(running.log_path.read_text()[-3000:])


def _spec(cluster, **overrides) -> dict:
    spec = stub_spec(cluster.prometheus_url, **overrides)
    spec["podTemplate"] = {}  # kwok runs the pods; no local process is needed here
    return spec


def _ready(kube, namespace, name) -> dict:
    conditions = (read_recommender(kube, namespace, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _warnings(kube, namespace, name, reason) -> list:
    events = kube.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in events if e.reason == reason]


def test_shared_model_name_is_rejected(kube, namespace, cluster, operator):
    create_recommender(kube, namespace, "first", _spec(cluster))
    wait_until(lambda: _ready(kube, namespace, "first").get("reason") not in (None, "ModelNameInUse"),
               timeout_s=60, what="the first resource to be handled")
    create_recommender(kube, namespace, "second", _spec(cluster))

    wait_until(lambda: _ready(kube, namespace, "second").get("reason") == "ModelNameInUse",
               timeout_s=60, what="Ready=False ModelNameInUse on the second resource")
    time.sleep(5)  # the timer runs every second; the Event must still be posted once

    ready = _ready(kube, namespace, "second")
    assert ready["status"] == "False"
    assert "spec.model.name='stub-bert' is already used by RecommenderDeployment first" in ready["message"]
    assert len(_warnings(kube, namespace, "second", "ModelNameInUse")) == 1
    assert _ready(kube, namespace, "first").get("reason") != "ModelNameInUse"


def test_missing_initial_table_is_reported_once(kube, namespace, cluster, operator):
    spec = _spec(cluster)
    spec["policy"]["initialTable"] = "no-such-configmap"
    create_recommender(kube, namespace, "rec", spec)

    wait_until(lambda: _ready(kube, namespace, "rec").get("reason") == "InvalidInitialTable",
               timeout_s=60, what="Ready=False InvalidInitialTable")
    time.sleep(5)

    events = _warnings(kube, namespace, "rec", "InvalidInitialTable")
    assert len(events) == 1
    assert "no-such-configmap" in events[0].message


def test_invalid_pod_resources_get_an_event(kube, namespace, cluster, operator):
    spec = _spec(cluster)
    spec["model"]["resources"] = {"limits": {"cpu": "abc"}}
    create_recommender(kube, namespace, "rec", spec)

    wait_until(lambda: _warnings(kube, namespace, "rec", "ReconcileFailed"), timeout_s=60,
               what="a ReconcileFailed Event")

    message = _warnings(kube, namespace, "rec", "ReconcileFailed")[0].message
    assert "the API server rejected a tier Deployment or the Service" in message
    assert "quantities must match the regular expression" in message
