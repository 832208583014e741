"""The kubelet stand-in's rewriting rules, without a cluster."""

from __future__ import annotations

import pytest

from tierscale_localcluster.podrunner import expand_references, prometheus_labels, substitute_port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8080", "41000"),
        ("--port=8080", "--port=41000"),
        ("0.0.0.0:8080", "127.0.0.1:41000"),
        ("localhost:8080", "localhost:41000"),
        ("0.0.0.0", "127.0.0.1"),
        ("18080", "18080"),
        ("--workers=4", "--workers=4"),
        ("http://example:80800", "http://example:80800"),
    ],
)
def test_container_port_is_replaced_only_as_a_whole_value(value, expected):
    assert substitute_port(value, {8080: 41000}) == expected


def test_references_expand_like_kubernetes():
    env = {"PORT": "8080", "MODEL": "movielens"}

    assert expand_references("--port=$(PORT)", env) == "--port=8080"
    assert expand_references("$(MODEL)-$(UNKNOWN)", env) == "movielens-$(UNKNOWN)"
    assert expand_references("cost $$(PORT)", env) == "cost $(PORT)"


def test_target_labels_are_made_prometheus_safe_and_keep_reserved_names():
    pod = {
        "metadata": {
            "namespace": "recsys",
            "name": "bert-small-abc",
            "labels": {"app.kubernetes.io/name": "bert", "tierscale.io/tier": "small", "pod": "spoof"},
        },
        "spec": {"nodeName": "gpu-node-0"},
    }

    assert prometheus_labels(pod) == {
        "namespace": "recsys",
        "pod": "bert-small-abc",
        "node": "gpu-node-0",
        "app_kubernetes_io_name": "bert",
        "tierscale_io_tier": "small",
    }
