"""A loaded tier: its fine-tuned encoders, their item vectors, and the known users' histories.

Item vectors are computed once at load. User vectors of known users (requests by ``user_id``
without an explicit history) are kept in an LRU cache, because a known user's history does not
change while the server runs. Explicit histories are always encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .ensemble import load_ensemble
from .tiers import tier_config
from .train import load_dataset, pick_device

log = logging.getLogger(__name__)


@dataclass
class Query:
    """One scoring request: a history of item indices, the user index if known, and ``k``."""

    history: np.ndarray
    k: int
    user: int | None = None


@dataclass
class Scored:
    items: list[int]      # item indices, best first
    scores: list[float]


class TierScorer:
    def __init__(self, tier: str, device: str | None = None, user_cache_size: int = 4096,
                 train_if_missing: bool = False, movielens: str | None = None, torch_threads: int = 1) -> None:
        started = time.monotonic()
        if torch_threads > 0:
            # Small batches on a busy CPU: one thread avoids the intra-op pool's synchronisation,
            # which cost 7-8x in batch-1 latency on a loaded 2-core machine (docs/model-server.md).
            torch.set_num_threads(torch_threads)
        self.config = tier_config(tier)
        self.device = pick_device(device)
        dataset = load_dataset(movielens)
        self.data = dataset.data
        self.ensemble, checkpoints = load_ensemble(self.config, dataset, self.device, train_if_missing)
        self.validation = {c["config"]["name"]: c["best"] for c in checkpoints}

        self.user_cache_size = user_cache_size
        self._user_cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.load_seconds = time.monotonic() - started
        log.info("tier %s loaded on %s in %.1f s: encoders %s, %d items, %d users", tier, self.device,
                 self.load_seconds, ", ".join(self.config.encoders), self.data.n_items, self.data.n_users)

    @property
    def n_items(self) -> int:
        return self.data.n_items

    @property
    def uses_gpu(self) -> bool:
        return self.device.type == "cuda"

    def user_history(self, user: int) -> np.ndarray:
        """Return every known interaction of ``user`` in time order."""
        return self.data.sequences[user]

    @torch.inference_mode()
    def score(self, queries: list[Query]) -> list[Scored]:
        """Score a batch: one encoder pass per encoder for the users not in the cache."""
        vectors: list[torch.Tensor | None] = [self._cached(q.user) for q in queries]
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            encoded = self.ensemble.user_vectors([queries[i].history for i in missing])
            for row, i in enumerate(missing):
                vectors[i] = encoded[row]
                self._remember(queries[i].user, encoded[row])

        scores = self.ensemble.scores(torch.stack(vectors))
        for row, query in enumerate(queries):
            if len(query.history):
                scores[row, torch.as_tensor(query.history, device=scores.device)] = -torch.inf

        k_max = max(q.k for q in queries)
        top = scores.topk(min(k_max, scores.shape[1]), dim=1)
        values, indices = top.values.float().cpu().numpy(), top.indices.cpu().numpy()
        results = []
        for row, query in enumerate(queries):
            keep = np.isfinite(values[row][:query.k])
            results.append(Scored(items=indices[row][:query.k][keep].tolist(),
                                  scores=values[row][:query.k][keep].tolist()))
        return results

    def _cached(self, user: int | None) -> torch.Tensor | None:
        if user is None or self.user_cache_size <= 0:
            return None
        with self._cache_lock:
            vector = self._user_cache.get(user)
            if vector is not None:
                self._user_cache.move_to_end(user)
                self.cache_hits += 1
            return vector

    def _remember(self, user: int | None, vector: torch.Tensor) -> None:
        if user is None or self.user_cache_size <= 0:
            return
        with self._cache_lock:
            self._user_cache[user] = vector
            self._user_cache.move_to_end(user)
            while len(self._user_cache) > self.user_cache_size:
                self._user_cache.popitem(last=False)
