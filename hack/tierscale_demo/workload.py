"""What the demo's simulated users do: MovieLens-100K histories, a diurnal rate, clicks by examination.

Each request replays one real user at a random point of their rating history: the request carries
the movies they rated before that point (oldest first, at most `HISTORY_LENGTH`), and the movies
they rated next (`NEXT_ITEMS`) are the ones they would click. A shown item is examined with
probability ``position ** -EXAMINATION_EXPONENT`` (the examination model); an examined item is
clicked if it is one of the user's next movies, else with probability `STRAY_CLICK`.

The request rate follows the hour-of-day shape of the MovieLens rating timestamps, with one day
compressed into the demo's duration, starting at the quietest hour.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

HISTORY_LENGTH = 50
NEXT_ITEMS = 10
MIN_HISTORY = 5
EXAMINATION_EXPONENT = 0.8
STRAY_CLICK = 0.01
UTC_OFFSET_H = -6.0  # MovieLens-100K users were mostly in US time zones.


@dataclasses.dataclass(frozen=True)
class UserMoment:
    history: list[str]
    next_items: frozenset[str]


class Replay:
    """Samples (history, next items) moments from real user sequences."""

    def __init__(self, sequences: list[list[str]], seed: int = 0):
        self.sequences = [s for s in sequences if len(s) > MIN_HISTORY]
        if not self.sequences:
            raise ValueError(f"no user has more than {MIN_HISTORY} interactions")
        self.rng = random.Random(seed)

    def sample(self) -> UserMoment:
        sequence = self.rng.choice(self.sequences)
        cut = self.rng.randrange(MIN_HISTORY, len(sequence))
        return UserMoment(
            history=sequence[max(0, cut - HISTORY_LENGTH):cut],
            next_items=frozenset(sequence[cut:cut + NEXT_ITEMS]),
        )


def clicked_positions(shown: list[dict], moment: UserMoment, rng: random.Random) -> list[int]:
    """Positions the user clicks among ``shown`` (dicts with ``position`` and ``item_id``)."""
    clicks = []
    for item in shown:
        position = int(item["position"])
        if rng.random() >= position ** -EXAMINATION_EXPONENT:
            continue  # not examined
        relevant = item["item_id"] in moment.next_items
        if relevant or rng.random() < STRAY_CLICK:
            clicks.append(position)
    return clicks


def hour_of_day_shape(timestamps_s: np.ndarray, utc_offset_h: float = UTC_OFFSET_H) -> np.ndarray:
    """Share of ratings per local hour of day, scaled so the busiest hour is 1."""
    hours = ((timestamps_s / 3600.0 + utc_offset_h) % 24).astype(int)
    counts = np.bincount(hours, minlength=24).astype(float)
    return counts / counts.max()


@dataclasses.dataclass(frozen=True)
class DiurnalRate:
    """Requests per second at demo time t: one compressed day over ``duration_s``."""

    shape: tuple[float, ...]  # 24 values, max 1
    duration_s: float
    peak_rps: float
    floor_rps: float

    @property
    def start_hour(self) -> int:
        return int(np.argmin(self.shape))

    def hour_at(self, t_s: float) -> float:
        return (self.start_hour + 24.0 * t_s / self.duration_s) % 24.0

    def rps_at(self, t_s: float) -> float:
        hour = self.hour_at(t_s)
        low, high = int(hour), (int(hour) + 1) % 24
        fraction = hour - int(hour)
        level = (1 - fraction) * self.shape[low] + fraction * self.shape[high]
        lowest = min(self.shape)
        relative = (level - lowest) / (1.0 - lowest) if lowest < 1 else 1.0
        return self.floor_rps + (self.peak_rps - self.floor_rps) * relative
