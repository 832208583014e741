"""A loaded tier: the fine-tuned model, its item vectors, and the known users' histories.

Item vectors are computed once at load. User vectors of known users (requests by ``user_id``
without an explicit history) are cached in an LRU cache, because a known user's history does not
change while the server runs; explicit histories are always encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .model import left_pad
from .tiers import tier_config
from .train import load_dataset, load_or_train, model_from_checkpoint, pick_device, checkpoint_path

log = logging.getLogger(__name__)


class CheckpointMissing(RuntimeError):
    pass


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
                 train_if_missing: bool = False, movielens: str | None = None) -> None:
        started = time.monotonic()
        self.config = tier_config(tier)
        self.device = pick_device(device)
        dataset = load_dataset(movielens)
        self.data = dataset.data

        path = checkpoint_path(self.config)
        if not path.exists() and not train_if_missing:
            raise CheckpointMissing(
                f"no checkpoint for tier {tier!r} at {path}; run `python -m tierscale_server train --tier {tier}` "
                "or start with --train-if-missing"
            )
        checkpoint = load_or_train(self.config, dataset, self.device, progress=False)
        self.model = model_from_checkpoint(checkpoint, dataset.item_text).to(self.device)
        self.validation = checkpoint["best"]

        with torch.inference_mode():
            self.item_vectors = self.model.item_vectors().contiguous()
        self.user_cache_size = user_cache_size
        self._user_cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.load_seconds = time.monotonic() - started
        log.info("tier %s loaded on %s in %.1f s (%d items, %d users, validation %s)", tier, self.device,
                 self.load_seconds, self.data.n_items, self.data.n_users, self.validation)

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
        """Score a batch: one pass through the encoder for the users not in the cache."""
        vectors: list[torch.Tensor | None] = [self._cached(q.user) for q in queries]
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            batch = left_pad([queries[i].history for i in missing], self.model.max_len, self.device)
            encoded = self.model.user_vectors(batch, self.item_vectors)
            for row, i in enumerate(missing):
                vectors[i] = encoded[row]
                self._remember(queries[i].user, encoded[row])

        scores = torch.stack(vectors) @ self.item_vectors.T
        scores[:, 0] = -torch.inf
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
