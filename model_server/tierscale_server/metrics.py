"""Prometheus metrics of the model server: the server side of the metrics contract.

Every series carries the labels ``model`` and ``tier``. The label ``position`` is bounded:
positions beyond ``MAX_POSITION_LABEL`` share the label ``"over"``. The label ``code`` takes the
HTTP status codes the server returns. This module imports only ``prometheus_client``, so the
operator's contract test can import the names without torch.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the scrape size and nothing in tierscale reads them.
disable_created_metrics()

REQUEST_DURATION = "tierscale_request_duration_seconds"
REQUESTS = "tierscale_requests"                  # exported as tierscale_requests_total
IMPRESSIONS = "tierscale_impressions"            # exported as tierscale_impressions_total
CLICKS = "tierscale_clicks"                      # exported as tierscale_clicks_total
BATCH_SIZE = "tierscale_batch_size"
QUEUE_TIME = "tierscale_queue_time_seconds"
GPU_IN_USE = "tierscale_gpu_in_use"
WORKERS = "tierscale_workers"
FEEDBACK = "tierscale_feedback"                  # exported as tierscale_feedback_total
SWAPPED_IMPRESSIONS = "tierscale_swapped_impressions"  # exported as tierscale_swapped_impressions_total
SWAPPED_CLICKS = "tierscale_swapped_clicks"            # exported as tierscale_swapped_clicks_total

MAX_POSITION_LABEL = 20
OVER_POSITION_LABEL = "over"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                     0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def position_label(position: int) -> str:
    """Return the ``position`` label: ``"1"``..``"20"``, or ``"over"`` beyond ``MAX_POSITION_LABEL``."""
    return str(position) if position <= MAX_POSITION_LABEL else OVER_POSITION_LABEL


class ServerMetrics:
    """The server's metrics in a registry of its own (several servers can live in one process)."""

    def __init__(self, model: str, tier: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"model": model, "tier": tier}
        names = ["model", "tier"]
        self.request_duration = Histogram(
            REQUEST_DURATION, "Time from receiving a prediction request to sending its response, in seconds.",
            names, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.requests = Counter(
            REQUESTS, "Prediction requests by HTTP status code.", names + ["code"], registry=self.registry,
        )
        self.impressions = Counter(
            IMPRESSIONS, "Items served, by the position (1-based) they were shown at.",
            names + ["position"], registry=self.registry,
        )
        self.clicks = Counter(
            CLICKS, "Clicks recorded through /feedback, by the position of the clicked item.",
            names + ["position"], registry=self.registry,
        )
        self.batch_size = Histogram(
            BATCH_SIZE, "Requests scored together in one batch.", names, buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            QUEUE_TIME, "Time a prediction request waited for its batch to start, in seconds.",
            names, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.gpu_in_use = Gauge(
            GPU_IN_USE, "1 when the tier runs on a CUDA device, else 0.", names, registry=self.registry,
        )
        self.workers = Gauge(WORKERS, "Scoring workers running.", names, registry=self.registry)
        # ``rank`` is the item's place in the model's ranking; it differs from ``position`` by one.
        # Together with the unswapped impressions (all impressions minus these, per position) they
        # give the operator the (rank, position) cells of the examination-model estimate.
        self.swapped_impressions = Counter(
            SWAPPED_IMPRESSIONS, "Items shown one position away from their model rank by a randomised "
            "adjacent swap, by the position shown and the model rank.", names + ["position", "rank"],
            registry=self.registry,
        )
        self.swapped_clicks = Counter(
            SWAPPED_CLICKS, "Clicks on items shown one position away from their model rank by a "
            "randomised adjacent swap, by the position shown and the model rank.", names + ["position", "rank"],
            registry=self.registry,
        )
        self.feedback = Counter(
            FEEDBACK, "Feedback requests by HTTP status code.", names + ["code"], registry=self.registry,
        )

    def initialise_series(self) -> None:
        """Create the series the operator reads, at zero, before the first request.

        Without them an idle server exports no request series at all, and "no requests" could not
        be told apart from "no data": with them the request rate reads 0 and the p95 NaN.
        """
        self.requests.labels(**self.labels, code="200")
        self.request_duration.labels(**self.labels)
        self.feedback.labels(**self.labels, code="200")

    def observe_request(self, code: int, duration_s: float | None) -> None:
        self.requests.labels(**self.labels, code=str(code)).inc()
        if duration_s is not None:
            self.request_duration.labels(**self.labels).observe(duration_s)

    def observe_impressions(self, shown: int, swapped_at: int | None = None) -> None:
        """Count ``shown`` impressions; ``swapped_at`` is the first position of a swapped pair."""
        for position in range(1, shown + 1):
            self.impressions.labels(**self.labels, position=position_label(position)).inc()
        if swapped_at is not None:
            for position, rank in ((swapped_at, swapped_at + 1), (swapped_at + 1, swapped_at)):
                self.swapped_impressions.labels(
                    **self.labels, position=position_label(position), rank=position_label(rank)
                ).inc()

    def observe_click(self, position: int, rank: int | None = None) -> None:
        """Count a click; ``rank`` is the item's model rank when a swap showed it elsewhere."""
        self.clicks.labels(**self.labels, position=position_label(position)).inc()
        if rank is not None and rank != position:
            self.swapped_clicks.labels(**self.labels, position=position_label(position), rank=position_label(rank)).inc()

    def observe_batch(self, size: int, queue_times_s: list[float]) -> None:
        self.batch_size.labels(**self.labels).observe(size)
        histogram = self.queue_time.labels(**self.labels)
        for waited in queue_times_s:
            histogram.observe(waited)
