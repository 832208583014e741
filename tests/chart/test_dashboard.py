"""The Grafana dashboard reads only series that the operator and the model server export."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from conftest import CHART

SERIES = re.compile(r"\b(tierscale_[a-z0-9_]+)\b")


def _dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "tierscale.json").read_text())


def _queries(dashboard: dict) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def _sample_names(registry: CollectorRegistry) -> set[str]:
    """Names of the series a registry exports (counter _total, histogram _bucket/_sum/_count)."""
    names = set()
    for metric in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(metric.type, [""])
        names.update(metric.name + suffix for suffix in suffixes)
    return names


def _exported() -> set[str]:
    from prometheus_client import REGISTRY

    import tierscale_operator.metrics  # noqa: F401  (registers the operator's metrics in REGISTRY)
    from tierscale_server.metrics import ServerMetrics

    return _sample_names(REGISTRY) | _sample_names(ServerMetrics("model", "tier").registry)


def test_dashboard_series_are_exported():
    used = {name for query in _queries(_dashboard()) for name in SERIES.findall(query)}

    assert used
    assert sorted(used - _exported()) == []


def test_dashboard_covers_operator_metrics():
    """Every tierscale_operator_* series has a panel."""
    used = {name for query in _queries(_dashboard()) for name in SERIES.findall(query)}
    operator_series = {n for n in _exported() if n.startswith("tierscale_operator_")}

    assert sorted(operator_series - used) == []


def test_dashboard_panel_ids_are_unique():
    ids = [p["id"] for p in _dashboard()["panels"]]

    assert len(ids) == len(set(ids))
