"""PromQL rendering escapes every interpolated value."""

from __future__ import annotations

from tierscale_operator.observe import DEFAULT_QUERIES, escape_label_value, render


def test_label_values_are_escaped():
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_injection_attempt_stays_inside_the_string():
    query = render(DEFAULT_QUERIES["requestRate"], {"namespace": 'x"} or vector(1) or {a="'}, "30s")

    assert query == (
        'sum(rate(tierscale_requests_total{namespace="x\\"} or vector(1) or {a=\\""}[30s]))'
    )


def test_p95_query_uses_the_window_and_selector():
    query = render(DEFAULT_QUERIES["latencyP95"], {"namespace": "recsys", "model": "bert"}, "1m")

    assert query == (
        "histogram_quantile(0.95, sum by (le) (rate(tierscale_request_duration_seconds_bucket"
        '{model="bert",namespace="recsys"}[1m])))'
    )
