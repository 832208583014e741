"""Writes the Grafana dashboard charts/tierscale/dashboards/tierscale.json.

The panels read the operator's own series (tierscale_operator_*, operator/tierscale_operator/metrics.py)
and the model server's (tierscale_*, model_server/tierscale_server/metrics.py). Tests check that the
file is up to date, that every series a panel names is exported by one of the two, and that every
query parses in a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DASHBOARD_PATH = Path(__file__).resolve().parents[2] / "charts" / "tierscale" / "dashboards" / "tierscale.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The resource the panels show; both are Grafana template variables.
OPERATOR = 'namespace=~"$namespace", name=~"$recommender"'
# The model-server pods carry the recommender's namespace and model name as labels (the operator's
# PromQL filters on the same pair); $model is the spec.model.name of the selected resources.
SERVER = 'namespace=~"$namespace", model=~"$model"'


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(panel_id: int, title: str, description: str, targets: list[tuple[str, str]], grid: tuple[int, int, int, int],
           *, unit: str = "short", kind: str = "timeseries", stack: bool = False, draw: str = "line",
           decimals: int | None = None) -> dict:
    x, y, w, h = grid
    custom = {"drawStyle": draw, "lineWidth": 1, "fillOpacity": 20 if stack else 0, "showPoints": "never",
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults: dict = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = custom
    panel = {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }
    if kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "textMode": "value_and_name", "colorMode": "none", "graphMode": "none"}
    return panel


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def panels() -> list[dict]:
    full, half, third = 24, 12, 8
    return [
        _panel(1, "Serving tier", "Tier with replicas, per resource (two during a tier switch).",
               [(f"max by (namespace, name, tier) (tierscale_operator_replicas{{{OPERATOR}}} > 0)",
                 "{{namespace}}/{{name}}: {{tier}}")],
               (0, 0, third, 5), kind="stat", decimals=0),
        _panel(2, "GPUs in use", "GPUs requested by scheduled model-server pods.",
               [(f"tierscale_operator_gpus{{{OPERATOR}}}", "{{namespace}}/{{name}}")],
               (third, 0, third, 5), kind="stat", decimals=0),
        _panel(3, "Request rate", "Requests per second the operator observed in the last interval.",
               [(f"tierscale_operator_requests_per_second{{{OPERATOR}}}", "{{namespace}}/{{name}}")],
               (2 * third, 0, third, 5), kind="stat", unit="reqps"),
        _panel(4, "Replicas by tier", "Desired replicas of each tier Deployment, and ready replicas.",
               [(f"tierscale_operator_replicas{{{OPERATOR}}}", "{{name}} desired {{tier}}"),
                (f"tierscale_operator_ready_replicas{{{OPERATOR}}}", "{{name}} ready")],
               (0, 5, half, 8), stack=False, decimals=0),
        _panel(5, "GPUs", "GPUs requested by scheduled model-server pods (Pending pods hold none).",
               [(f"tierscale_operator_gpus{{{OPERATOR}}}", "{{namespace}}/{{name}}")],
               (half, 5, half, 8), decimals=0),
        _panel(6, "p95 latency vs SLO",
               "Observed p95 (the operator's reading, and the servers' histogram by tier) against spec.slo.latencyP95Ms.",
               [(f"tierscale_operator_latency_p95_ms{{{OPERATOR}}}", "{{name}} p95 (operator)"),
                (f"tierscale_operator_slo_latency_p95_ms{{{OPERATOR}}}", "{{name}} SLO"),
                ("1000 * histogram_quantile(0.95, sum by (namespace, model, tier, le) "
                 f"(rate(tierscale_request_duration_seconds_bucket{{{SERVER}}}[$__rate_interval])))",
                 "{{model}} {{tier}} p95 (servers)")],
               (0, 13, half, 8), unit="ms"),
        _panel(7, "CTR: raw vs causally adjusted",
               "Click-through rate of the last interval as served, and after position-bias and confounder adjustment.",
               [(f'tierscale_operator_ctr{{{OPERATOR}, kind="raw"}}', "{{name}} raw"),
                (f'tierscale_operator_ctr{{{OPERATOR}, kind="adjusted"}}', "{{name}} adjusted")],
               (half, 13, half, 8), unit="percentunit"),
        _panel(8, "Reward per interval",
               "Adjusted click value minus GPU cost minus SLO penalty, credited for the last settled interval.",
               [(f"tierscale_operator_interval_reward{{{OPERATOR}}}", "{{namespace}}/{{name}}")],
               (0, 21, half, 8)),
        _panel(9, "Decisions by source and action",
               "Decisions per interval: source is greedy, explore, guard (a guardrail overrode the policy), "
               "masked (every change was blocked) or metrics-invalid (no credit, hold).",
               [(f"sum by (source, action) (increase(tierscale_operator_decisions_total{{{OPERATOR}}}[$__rate_interval]))",
                 "{{source}}: {{action}}")],
               (half, 21, half, 8), stack=True, draw="bars"),
        _panel(10, "Failed actions and missing metrics",
               "Replica writes that failed, and steps whose Prometheus queries failed.",
               [(f"sum by (name) (increase(tierscale_operator_actions_failed_total{{{OPERATOR}}}[$__rate_interval]))",
                 "{{name}} actions failed"),
                (f"sum by (name) (increase(tierscale_operator_metrics_unavailable_total{{{OPERATOR}}}[$__rate_interval]))",
                 "{{name}} metrics unavailable")],
               (0, 29, half, 8), draw="bars"),
        _panel(11, "Server requests by tier and code", "Prediction requests per second from the model servers.",
               [(f"sum by (model, tier, code) (rate(tierscale_requests_total{{{SERVER}}}[$__rate_interval]))",
                 "{{model}} {{tier}} {{code}}")],
               (half, 29, half, 8), unit="reqps", stack=True),
        _panel(12, "Server batch size and queue time", "Mean batch size and mean queue time per tier.",
               [(f"sum by (tier) (rate(tierscale_batch_size_sum{{{SERVER}}}[$__rate_interval])) / "
                 f"sum by (tier) (rate(tierscale_batch_size_count{{{SERVER}}}[$__rate_interval]))",
                 "{{tier}} mean batch"),
                (f"1000 * sum by (tier) (rate(tierscale_queue_time_seconds_sum{{{SERVER}}}[$__rate_interval])) / "
                 f"sum by (tier) (rate(tierscale_queue_time_seconds_count{{{SERVER}}}[$__rate_interval]))",
                 "{{tier}} mean queue ms")],
               (0, 37, full, 8)),
    ]


def dashboard() -> dict:
    return {
        "title": "tierscale",
        "uid": "tierscale-overview",
        "description": "GPU replicas and model-size tier chosen by the tierscale operator, with the signals it decides on.",
        "tags": ["tierscale", "gpu", "recommender"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("namespace", "Namespace", "label_values(tierscale_operator_gpus, namespace)"),
            _variable("recommender", "RecommenderDeployment",
                      'label_values(tierscale_operator_gpus{namespace=~"$namespace"}, name)'),
            _variable("model", "Model", 'label_values(tierscale_requests_total{namespace=~"$namespace"}, model)'),
        ]},
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        if not DASHBOARD_PATH.is_file() or DASHBOARD_PATH.read_text() != render():
            raise SystemExit(f"{DASHBOARD_PATH} is out of date: run `make chart-dashboard`")
        return
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(render())


if __name__ == "__main__":
    main()
