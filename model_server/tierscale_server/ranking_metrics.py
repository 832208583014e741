"""HR@k and NDCG@k under full ranking, and the popularity and item-kNN baselines.

Protocol: every item is a candidate except the ones already in the user's history (their
scores are set to -inf); with one held-out target per user, HR@k is the share of users whose
target ranks in the top k and NDCG@k averages ``1 / log2(rank + 1)`` over users (0 beyond k).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .data import Split


def rank_of_target(scores: torch.Tensor, histories: list, targets: torch.Tensor) -> torch.Tensor:
    """Return the 1-based rank of each target among all items not in the history.

    ``scores`` has shape ``(B, n_items + 1)``; column 0 (padding) never ranks. Ties are broken
    against the target (an item with an equal score ranks ahead of it), so a constant scorer
    earns nothing.
    """
    scores = scores.float().clone()
    scores[:, 0] = -torch.inf
    for row, history in enumerate(histories):
        if len(history):
            scores[row, torch.as_tensor(np.asarray(history), dtype=torch.long)] = -torch.inf
    target_scores = scores.gather(1, targets.view(-1, 1))
    return (scores >= target_scores).sum(dim=1)


def hit_and_ndcg(ranks: torch.Tensor, k: int) -> tuple[float, float]:
    ranks = ranks.double()
    hit = ranks <= k
    ndcg = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
    return float(hit.double().mean()), float(ndcg.mean())


def evaluate_scorer(
    score: Callable[[list], torch.Tensor],
    split: Split,
    stage: str,
    k: int = 10,
    batch_size: int = 256,
) -> dict:
    """Evaluate ``score(histories) -> (B, n_items + 1)`` on the ``valid`` or ``test`` targets."""
    targets = split.target_for(stage)
    ranks = []
    for start in range(0, len(targets), batch_size):
        users = range(start, min(start + batch_size, len(targets)))
        histories = [split.history_for(stage, u) for u in users]
        batch_scores = score(histories).detach().cpu()
        batch_targets = torch.as_tensor(targets[start:start + len(histories)], dtype=torch.long)
        ranks.append(rank_of_target(batch_scores, histories, batch_targets))
    all_ranks = torch.cat(ranks)
    hr, ndcg = hit_and_ndcg(all_ranks, k)
    return {f"hr@{k}": round(hr, 4), f"ndcg@{k}": round(ndcg, 4), "users": int(len(all_ranks))}


def popularity_scorer(split: Split, n_items: int, stage: str) -> Callable[[list], torch.Tensor]:
    """Score items by interaction count over every user's history known at ``stage``."""
    counts = np.zeros(n_items + 1, dtype=np.float64)
    for user in range(len(split.train)):
        np.add.at(counts, split.history_for(stage, user), 1.0)
    row = torch.as_tensor(counts, dtype=torch.float32)

    def score(histories: list) -> torch.Tensor:
        return row.unsqueeze(0).expand(len(histories), -1)

    return score


def item_knn_scorer(
    split: Split, n_items: int, stage: str, neighbours: int = 100, shrink: float = 10.0
) -> Callable[[list], torch.Tensor]:
    """Item-based kNN: cosine similarity of item columns of the binary user-item matrix.

    Each item keeps its ``neighbours`` most similar items; a user's score for an item is the sum
    of its similarities to the items in the history. ``shrink`` damps similarities supported by
    few co-occurrences (``sim = dot / (|a| |b| + shrink)``).
    """
    n_users = len(split.train)
    matrix = torch.zeros(n_users, n_items + 1)
    for user in range(n_users):
        matrix[user, torch.as_tensor(split.history_for(stage, user), dtype=torch.long)] = 1.0

    dot = matrix.T @ matrix
    norms = matrix.sum(0).sqrt()
    similarity = dot / (norms.unsqueeze(0) * norms.unsqueeze(1) + shrink)
    similarity.fill_diagonal_(0.0)
    if neighbours < n_items:
        top = similarity.topk(neighbours, dim=1)
        pruned = torch.zeros_like(similarity)
        pruned.scatter_(1, top.indices, top.values)
        similarity = pruned

    def score(histories: list) -> torch.Tensor:
        rows = torch.zeros(len(histories), n_items + 1)
        for row, history in enumerate(histories):
            rows[row, torch.as_tensor(np.asarray(history), dtype=torch.long)] = 1.0
        return rows @ similarity

    return score
