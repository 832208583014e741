"""Reads one interval's serving metrics from Prometheus with prometheus-api-client.

The queries are ``string.Template`` texts with two placeholders: ``$selector`` (label matchers for the
recommender's series) and ``$window`` (the range of ``rate``/``increase``). Every value put into the
selector is escaped for a PromQL double-quoted string, and the window was validated as a duration, so
a resource cannot inject PromQL. A user can override any query in ``spec.prometheus.queries``.

Missing data is never read as zero: an empty result, ``NaN``, a refused connection or an HTTP error
leaves the value ``None`` and names the reason in ``MetricsSample.problems``. ``NaN`` p95 at zero
traffic is normal and is reported as ``None`` with ``idle`` set.
"""

from __future__ import annotations

import dataclasses
import math
import string
import time
from collections.abc import Mapping

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

DEFAULT_QUERIES: dict[str, str] = {
    "latencyP95": (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(tierscale_request_duration_seconds_bucket{$selector}[$window])))"
    ),
    "requestRate": "sum(rate(tierscale_requests_total{$selector}[$window]))",
    "impressions": "sum by (tier, position) (increase(tierscale_impressions_total{$selector}[$window]))",
    "clicks": "sum by (tier, position) (increase(tierscale_clicks_total{$selector}[$window]))",
    "swappedImpressions": (
        "sum by (rank, position) (increase(tierscale_swapped_impressions_total{$selector}[$window]))"
    ),
    "swappedClicks": (
        "sum by (rank, position) (increase(tierscale_swapped_clicks_total{$selector}[$window]))"
    ),
}


def escape_label_value(value: str) -> str:
    """Escapes a value for a PromQL double-quoted string: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(labels: Mapping[str, str]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in sorted(labels.items()))


def render(template: str, labels: Mapping[str, str], window: str) -> str:
    return string.Template(template).substitute(selector=selector(labels), window=window)


@dataclasses.dataclass
class MetricsSample:
    """One interval's metrics; ``None`` means missing, never zero."""

    at_s: float
    latency_p95_ms: float | None = None
    requests_per_second: float | None = None
    # (tier, position) -> count over the window.
    impressions: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)
    clicks: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)
    # "rank,position" -> count: items of model rank r shown at position p by a randomised swap.
    swapped_impressions: dict[str, float] = dataclasses.field(default_factory=dict)
    swapped_clicks: dict[str, float] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    unreachable: bool = False

    @property
    def idle(self) -> bool:
        """True when Prometheus answered and the request rate is zero."""
        return self.requests_per_second == 0.0

    @property
    def ctr_raw(self) -> float | None:
        """Clicks per impression over the window; None at 0/0."""
        shown = sum(self.impressions.values())
        if shown <= 0:
            return None
        return sum(self.clicks.values()) / shown


class PrometheusReader:
    """Runs the queries for one recommender with a per-request timeout."""

    def __init__(self, url: str, timeout_s: float, queries: Mapping[str, str] | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.queries = {**DEFAULT_QUERIES, **(queries or {})}
        self.client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s, retry=None)

    def read(self, labels: Mapping[str, str], window: str, now_s: float | None = None) -> MetricsSample:
        sample = MetricsSample(at_s=time.time() if now_s is None else now_s)

        p95 = self._scalar(sample, "latencyP95", labels, window)
        if sample.unreachable:
            return sample
        rate = self._scalar(sample, "requestRate", labels, window)
        sample.requests_per_second = rate
        if p95 is not None:
            sample.latency_p95_ms = p95 * 1000.0
        elif rate is not None and rate > 0:
            sample.problems.append("latencyP95 is missing although requests are served")

        for key, target in (("impressions", sample.impressions), ("clicks", sample.clicks)):
            for metric, value in self._vector(sample, key, labels, window):
                position = _position(metric.get("position"))
                if position is not None:
                    target[(metric.get("tier", ""), position)] = value
        for key, target in (
            ("swappedImpressions", sample.swapped_impressions),
            ("swappedClicks", sample.swapped_clicks),
        ):
            for metric, value in self._vector(sample, key, labels, window):
                rank, position = _position(metric.get("rank")), _position(metric.get("position"))
                if rank is not None and position is not None:
                    target[f"{rank},{position}"] = value
        return sample

    def _query(self, sample: MetricsSample, key: str, labels: Mapping[str, str], window: str):
        if sample.unreachable:
            return None
        query = render(self.queries[key], labels, window)
        try:
            return self.client.custom_query(query, params={"timeout": f"{self.timeout_s:g}s"})
        except requests.exceptions.RequestException as error:
            sample.unreachable = True
            sample.problems.append(f"Prometheus at {self.url} is unreachable: {type(error).__name__}: {error}")
        except PrometheusApiClientException as error:
            # HTTP errors (503 while starting, 400 for a bad query) end up here with the body.
            sample.unreachable = True
            sample.problems.append(f"Prometheus query {key} failed: {error}")
        except ValueError as error:  # a body that is not JSON
            sample.unreachable = True
            sample.problems.append(f"Prometheus query {key} returned an invalid body: {error}")
        return None

    def _scalar(self, sample: MetricsSample, key: str, labels: Mapping[str, str], window: str) -> float | None:
        result = self._query(sample, key, labels, window)
        if result is None:
            return None
        if not result:
            sample.problems.append(f"{key} returned no series")
            return None
        value = _finite(result[0].get("value"))
        if value is None and key != "latencyP95":
            sample.problems.append(f"{key} is not a finite number: {result[0].get('value')!r}")
        return value

    def _vector(self, sample: MetricsSample, key: str, labels: Mapping[str, str], window: str):
        result = self._query(sample, key, labels, window) or []
        for series in result:
            value = _finite(series.get("value"))
            if value is not None:
                yield series.get("metric", {}), value


def _finite(value) -> float | None:
    try:
        number = float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _position(label: str | None) -> int | None:
    if label is None or not label.isdigit():
        return None  # the bounded "over" label carries no position
    return int(label)
