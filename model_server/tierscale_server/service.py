"""The model service behind the HTTP APIs: tier lifecycle, request handling and click logging.

Lifecycle: ``loading`` -> ``ready`` -> ``stopped``, or ``failed`` with the load error. The tier
loads in a thread while the ports already accept requests, so ``/ping`` can report 503. Request
validation lives here and raises :class:`ApiError`, which the routes turn into JSON errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .batching import DynamicBatcher, WorkerUnavailable
from .config import ServerConfig
from .metrics import ServerMetrics
from .ranking import randomize_ranking

log = logging.getLogger(__name__)

PING_PROBE_AFTER_S = 10.0   # /ping scores a probe when no batch succeeded for this long
PING_PROBE_TIMEOUT_S = 5.0
REQUEST_FIELDS = ("user_id", "history", "k")
FEEDBACK_FIELDS = ("request_id", "position")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LoggedRequest:
    """A served ranking, kept so that clicks can be matched to what was shown."""

    item_ids: list[str]
    propensities: list[float]
    swapped_at: int | None
    clicked: set[int] = field(default_factory=set)


class ModelService:
    def __init__(self, config: ServerConfig, scorer_factory=None) -> None:
        self.config = config
        self.metrics = ServerMetrics(config.model_name, config.tier)
        self.metrics.initialise_series()
        self.status = "loading"
        self.load_error: str | None = None
        self.scorer = None
        self.batcher: DynamicBatcher | None = None
        self._scorer_factory = scorer_factory
        self._rng = random.Random(config.seed)
        self._requests: OrderedDict[str, LoggedRequest] = OrderedDict()
        self._started = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the tier in a thread, then start the batcher and its workers."""
        try:
            self.scorer = await asyncio.get_running_loop().run_in_executor(None, self._load_scorer)
        except Exception as error:  # noqa: BLE001 - any load failure is reported by /ping and the log
            self.status = "failed"
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("tier %s failed to load: %s", self.config.tier, self.load_error)
            return

        self.batcher = DynamicBatcher(
            self.scorer.score,
            max_batch_size=self.config.max_batch_size,
            max_delay_s=self.config.max_batch_delay_ms / 1000.0,
            on_batch=self.metrics.observe_batch,
        )
        self.set_workers(self.config.workers)
        self.metrics.gpu_in_use.labels(**self.metrics.labels).set(1 if self.scorer.uses_gpu else 0)
        self.status = "ready"
        log.info("tier %s ready: model %s, %d worker(s), batches of up to %d within %.1f ms",
                 self.config.tier, self.config.model_name, self.config.workers, self.config.max_batch_size,
                 self.config.max_batch_delay_ms)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.status = "stopped"
        log.info("tier %s stopped", self.config.tier)

    def _load_scorer(self):
        if self._scorer_factory is not None:
            return self._scorer_factory(self.config)
        from .scorer import TierScorer

        return TierScorer(
            self.config.tier, device=self.config.device, user_cache_size=self.config.user_cache_size,
            train_if_missing=self.config.train_if_missing, movielens=self.config.movielens,
            torch_threads=self.config.torch_threads,
        )

    def set_workers(self, count: int) -> None:
        self.batcher.set_workers(count)
        self.metrics.workers.labels(**self.metrics.labels).set(count)
        log.info("tier %s: workers set to %d", self.config.tier, count)

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> tuple[bool, str]:
        """Return (healthy, reason): the tier is loaded and a worker scored recently or scores a probe."""
        if self.status == "loading":
            return False, f"tier {self.config.tier} is still loading"
        if self.status != "ready":
            return False, f"tier {self.config.tier} is {self.status}: {self.load_error or 'not serving'}"
        if self.batcher.workers == 0:
            return False, "no scoring worker is running"
        recent = self.batcher.last_success
        if recent is not None and time.monotonic() - recent < PING_PROBE_AFTER_S:
            return True, "a worker scored a batch recently"

        from .scorer import Query

        probe = Query(history=self.scorer.user_history(0)[-5:], k=1)
        try:
            await asyncio.wait_for(self.batcher.submit(probe), PING_PROBE_TIMEOUT_S)
        except (asyncio.TimeoutError, WorkerUnavailable) as error:
            return False, f"probe scoring failed: {type(error).__name__}: {error}"
        return True, "a worker scored a probe"

    # -- inference -------------------------------------------------------------------------

    def check_model(self, model: str) -> None:
        if model != self.config.model_name:
            raise ApiError(404, f"model {model!r} not found; this server serves {self.config.model_name!r}")
        if self.status != "ready":
            raise ApiError(503, f"model {model!r} is not ready: tier {self.config.tier} is {self.status}")

    def parse_query(self, body: dict):
        """Validate a prediction request body and return a :class:`Query`."""
        from .scorer import Query

        unknown = sorted(set(body) - set(REQUEST_FIELDS))
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown}; expected some of {list(REQUEST_FIELDS)}")

        data = self.scorer.data
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int):
            raise ApiError(422, f"k must be an integer, got {k!r}")
        if not 1 <= k <= data.n_items:
            raise ApiError(422, f"k {k} is out of range 1..{data.n_items} (the number of items)")

        user_id = body.get("user_id")
        if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, (str, int))):
            raise ApiError(422, f"user_id must be a string or integer, got {user_id!r}")

        if "history" in body:
            history = self._parse_history(body["history"])
            return Query(history=history, k=k, user=None)

        if user_id is None:
            raise ApiError(422, "the request needs a user_id or a history (a list of item ids)")
        user = data.user_index.get(str(user_id))
        if user is None:
            raise ApiError(404, f"user_id {str(user_id)!r} not found and no history given")
        return Query(history=self.scorer.user_history(user), k=k, user=user)

    def _parse_history(self, raw) -> np.ndarray:
        if not isinstance(raw, list):
            raise ApiError(422, f"history must be a list of item ids, got {type(raw).__name__}")
        if not raw:
            raise ApiError(422, "history must contain at least one item id")
        index = self.scorer.data.item_index
        items, unknown = [], []
        for value in raw:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ApiError(422, f"history item ids must be strings or integers, got {value!r}")
            position = index.get(str(value))
            if position is None:
                unknown.append(str(value))
            else:
                items.append(position)
        if unknown:
            raise ApiError(422, f"history contains unknown item ids {unknown[:10]}")
        return np.asarray(items, dtype=np.int64)

    async def predict(self, query) -> dict:
        """Score one query through the batcher and build its response."""
        try:
            scored = await self.batcher.submit(query)
        except WorkerUnavailable as error:
            raise ApiError(503, str(error)) from None
        return self.respond(scored)

    def respond(self, scored) -> dict:
        """Randomise the order of a scored ranking, log it for feedback, count impressions, build the body."""
        shown, swapped_at = randomize_ranking(max(1, len(scored.items)), self.config.swap_probability, self._rng)
        shown = shown[:len(scored.items)]
        items = self.scorer.data.items
        response_items = []
        for entry in shown:
            index = scored.items[entry.rank - 1]
            item = items[index - 1]
            response_items.append({
                "position": entry.position,
                "item_id": item.token,
                "title": item.title,
                "score": round(float(scored.scores[entry.rank - 1]), 6),
                "rank": entry.rank,
                "propensity": round(entry.propensity, 6),
            })

        request_id = uuid.uuid4().hex
        self._remember(request_id, LoggedRequest(
            item_ids=[r["item_id"] for r in response_items],
            propensities=[r["propensity"] for r in response_items],
            swapped_at=swapped_at,
        ))
        self.metrics.observe_impressions(len(response_items), swapped_at)
        return {
            "request_id": request_id,
            "model": self.config.model_name,
            "tier": self.config.tier,
            "swap_probability": self.config.swap_probability,
            "swapped_positions": [swapped_at, swapped_at + 1] if swapped_at else None,
            "items": response_items,
        }

    def _remember(self, request_id: str, logged: LoggedRequest) -> None:
        self._requests[request_id] = logged
        while len(self._requests) > self.config.request_log_size:
            self._requests.popitem(last=False)

    # -- feedback --------------------------------------------------------------------------

    def record_click(self, body: dict) -> dict:
        """Record a click on a shown position of a served request."""
        unknown = sorted(set(body) - set(FEEDBACK_FIELDS))
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown}; expected {list(FEEDBACK_FIELDS)}")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ApiError(422, f"request_id must be a non-empty string, got {request_id!r}")
        logged = self._requests.get(request_id)
        if logged is None:
            raise ApiError(404, f"request_id {request_id!r} not found (unknown, or older than the last "
                                f"{self.config.request_log_size} requests)")

        position = body.get("position")
        if isinstance(position, bool) or not isinstance(position, int):
            raise ApiError(422, f"position must be an integer, got {position!r}")
        if not 1 <= position <= len(logged.item_ids):
            raise ApiError(422, f"position {position} was not shown: request {request_id} showed "
                                f"positions 1..{len(logged.item_ids)}")
        if position in logged.clicked:
            raise ApiError(409, f"a click on position {position} of request {request_id} is already recorded")

        logged.clicked.add(position)
        rank = position
        if logged.swapped_at is not None and position in (logged.swapped_at, logged.swapped_at + 1):
            rank = logged.swapped_at + 1 if position == logged.swapped_at else logged.swapped_at
        self.metrics.observe_click(position, rank)
        return {
            "status": "recorded",
            "request_id": request_id,
            "position": position,
            "item_id": logged.item_ids[position - 1],
            "propensity": logged.propensities[position - 1],
        }

    # -- management ------------------------------------------------------------------------

    def describe(self) -> dict:
        described = {
            "modelName": self.config.model_name,
            "tier": self.config.tier,
            "status": self.status,
            "loadError": self.load_error,
            "uptimeSeconds": round(time.monotonic() - self._started, 1),
            "batchSize": self.config.max_batch_size,
            "maxBatchDelayMs": self.config.max_batch_delay_ms,
            "swapProbability": self.config.swap_probability,
            "workers": {"target": self.config.workers, "running": 0},
        }
        if self.status == "ready":
            described.update({
                "device": str(self.scorer.device),
                "workers": {"running": self.batcher.workers, "target": self.batcher.target_workers},
                "queueLength": self.batcher.queue_length,
                "batches": self.batcher.batches,
                "encoders": list(self.scorer.config.encoders),
                "layerPasses": self.scorer.config.layer_passes,
                "items": self.scorer.n_items,
                "validation": self.scorer.validation,
                "loadSeconds": round(self.scorer.load_seconds, 1),
                "userCache": {"size": self.scorer.user_cache_size, "hits": self.scorer.cache_hits},
            })
        return described
