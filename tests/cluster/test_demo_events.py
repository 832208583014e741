"""The demo report keeps only the Events of its own run's resource."""

from __future__ import annotations

import datetime

from kubernetes import client

from operator_fixtures import create_recommender, install_crd, stub_spec
from tierscale_demo.__main__ import _events


def _event(namespace: str, name: str, uid: str, reason: str, at: datetime.datetime) -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{name}."),
        involved_object=client.V1ObjectReference(
            api_version="tierscale.io/v1alpha1", kind="RecommenderDeployment", name=name, namespace=namespace,
            uid=uid),
        reason=reason, message=f"{reason} message", type="Normal", count=1,
        first_timestamp=at, last_timestamp=at, source=client.V1EventSource(component="test"),
    )


def test_events_of_an_earlier_resource_are_left_out(kube, namespace, cluster):
    install_crd(cluster)
    uid = create_recommender(kube, namespace, "rec", stub_spec(cluster.prometheus_url))["metadata"]["uid"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    kube.core.create_namespaced_event(namespace, _event(namespace, "rec", "uid-of-an-earlier-run", "ScaledUp", now))
    kube.core.create_namespaced_event(namespace, _event(namespace, "rec", uid, "ScaledDown", now))
    kube.core.create_namespaced_event(
        namespace, _event(namespace, "rec", uid, "ScaledUp", now - datetime.timedelta(seconds=30)))

    events = _events(kube.core, kube.custom, namespace, "rec")

    assert [e["reason"] for e in events] == ["ScaledUp", "ScaledDown"]
    assert events[0]["time"] < events[1]["time"]
