"""Randomised adjacent swaps, so that position bias can be estimated from logged clicks.

With probability ``swap_probability`` (epsilon) a ranking of ``k`` items gets one adjacent pair
swapped, the pair drawn uniformly from the ``k - 1`` pairs. The propensity of a shown
(item, position) is the probability that this logging policy shows the item of model rank
``r`` at position ``p``:

- ``p == r``: ``1 - epsilon + epsilon * (k - 1 - t) / (k - 1)``, where ``t`` is the number of
  adjacent pairs that contain ``r`` (1 at either end, else 2);
- ``|p - r| == 1``: ``epsilon / (k - 1)``.

Worked example, ``k = 10, epsilon = 0.1``: an unswapped middle item has propensity
``0.9 + 0.1 * 7 / 9 = 0.9778``, an end item ``0.9 + 0.1 * 8 / 9 = 0.9889``, and a swapped item
``0.1 / 9 = 0.0111``. With ``k = 1`` nothing can be swapped and the propensity is 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Shown:
    position: int      # 1-based position shown
    rank: int          # 1-based rank the model gave
    propensity: float  # probability of showing this rank at this position


def randomize_ranking(k: int, swap_probability: float, rng: random.Random) -> tuple[list[Shown], int | None]:
    """Return the shown order of ranks ``1..k`` and the first position of the swapped pair, if any."""
    if k < 1:
        raise ValueError(f"invalid k {k}: expected at least 1")
    if not 0.0 <= swap_probability <= 1.0:
        raise ValueError(f"invalid swap_probability {swap_probability}: expected 0..1")

    ranks = list(range(1, k + 1))
    swapped_at = None
    if k > 1 and rng.random() < swap_probability:
        swapped_at = rng.randrange(1, k)  # the pair (swapped_at, swapped_at + 1)
        ranks[swapped_at - 1], ranks[swapped_at] = ranks[swapped_at], ranks[swapped_at - 1]

    return [Shown(position=p, rank=r, propensity=propensity(r, p, k, swap_probability))
            for p, r in enumerate(ranks, start=1)], swapped_at


def propensity(rank: int, position: int, k: int, swap_probability: float) -> float:
    """Return the probability that the logging policy shows model rank ``rank`` at ``position``."""
    if k == 1:
        return 1.0 if rank == position == 1 else 0.0
    per_pair = swap_probability / (k - 1)
    if rank == position:
        pairs_touching = 1 if rank in (1, k) else 2
        return 1.0 - swap_probability + per_pair * (k - 1 - pairs_touching)
    if abs(rank - position) == 1:
        return per_pair
    return 0.0
