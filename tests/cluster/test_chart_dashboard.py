"""Every query of the Grafana dashboard parses and runs in the local cluster's real Prometheus."""

from __future__ import annotations

import json

import requests

from chart_fixtures import CHART

# Values Grafana would put in for the dashboard's variables.
VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$recommender": ".*", "$model": ".*"}


def test_dashboard_queries_run_in_prometheus(cluster):
    dashboard = json.loads((CHART / "dashboards" / "tierscale.json").read_text())
    failed = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = target["expr"]
            for variable, value in VARIABLES.items():
                query = query.replace(variable, value)

            response = requests.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)

            if response.status_code != 200 or response.json().get("status") != "success":
                failed[f"{panel['title']} / {target['refId']}"] = response.text[:300]

    assert failed == {}
