"""Logged decisions: what the live loop and the simulator record for every control interval.

A `LoggedDecision` is one interval: the context the decision was made in, the policy state, the
action taken, the probability with which the behaviour policy took it (the propensity), and the
reward parts, raw and adjusted. A `DecisionLog` keeps the most recent records in a bounded buffer
and persists them as gzip-compressed columnar JSON that fits a caller-given byte budget (a
ConfigMap holds at most 1 MiB), dropping the oldest records first.

Every constructor validates its fields and raises `InvalidRecordError` naming the field and value,
so a corrupted persisted log fails on load, not inside an estimator.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1


class InvalidRecordError(ValueError):
    """A logged decision, or a persisted log, has a missing or out-of-range field."""


def _require_finite(name: str, value: Any, *, min_value: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecordError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRecordError(f"{name} must be finite, got {value!r}")
    if min_value is not None and number < min_value:
        raise InvalidRecordError(f"{name} must be >= {min_value}, got {value!r}")
    return number


def _require_int(name: str, value: Any, *, min_value: int, max_value: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecordError(f"{name} must be an integer, got {value!r}")
    if value < min_value or (max_value is not None and value > max_value):
        upper = "" if max_value is None else f" and <= {max_value}"
        raise InvalidRecordError(f"{name} must be >= {min_value}{upper}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Observed conditions of an interval that drive both the click rate and the policy's choice.

    `hour_of_day` is 0-23 in whatever clock the operator is configured with; `day_of_week` is
    0 (Monday) to 6 or None when not recorded.
    """

    hour_of_day: int
    load_rps: float
    day_of_week: int | None = None

    def __post_init__(self) -> None:
        _require_int("context.hour_of_day", self.hour_of_day, min_value=0, max_value=23)
        _require_finite("context.load_rps", self.load_rps, min_value=0.0)
        if self.day_of_week is not None:
            _require_int("context.day_of_week", self.day_of_week, min_value=0, max_value=6)


@dataclass(frozen=True, slots=True)
class RewardParts:
    """The parts of an interval's reward, in objective units.

    `click_value_raw` is computed from the raw CTR; `click_value_adjusted` from the CTR after
    position-bias and confounder adjustment. The policy learns from `total_adjusted`.
    """

    click_value_raw: float
    click_value_adjusted: float
    gpu_cost: float
    slo_penalty: float

    def __post_init__(self) -> None:
        _require_finite("reward.click_value_raw", self.click_value_raw)
        _require_finite("reward.click_value_adjusted", self.click_value_adjusted)
        _require_finite("reward.gpu_cost", self.gpu_cost, min_value=0.0)
        _require_finite("reward.slo_penalty", self.slo_penalty, min_value=0.0)

    @property
    def total_raw(self) -> float:
        return self.click_value_raw - self.gpu_cost - self.slo_penalty

    @property
    def total_adjusted(self) -> float:
        return self.click_value_adjusted - self.gpu_cost - self.slo_penalty


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One control interval as logged by the live loop or the simulator.

    `at_s` is the decision time in Unix seconds. `state` is the policy's discretised state.
    `propensity` is the probability with which the behaviour policy chose `action` in that
    state, in (0, 1]. `tier` is the tier that served the interval's traffic. `ctr_corrected` is
    the position-bias corrected CTR (None when no position data was available). `reward` is None
    for an interval that was not credited to any action (missing or stale metrics, unfinished
    rollout); estimators skip such records and report how many they skipped.
    """

    at_s: float
    context: DecisionContext
    state: tuple[int, ...]
    action: str
    propensity: float
    tier: str
    impressions: int
    clicks: int
    ctr_corrected: float | None = None
    reward: RewardParts | None = None

    def __post_init__(self) -> None:
        _require_finite("at_s", self.at_s, min_value=0.0)
        if not isinstance(self.context, DecisionContext):
            raise InvalidRecordError(f"context must be a DecisionContext, got {self.context!r}")
        if not isinstance(self.state, tuple) or not all(
            isinstance(part, int) and not isinstance(part, bool) for part in self.state
        ):
            raise InvalidRecordError(f"state must be a tuple of integers, got {self.state!r}")
        if not isinstance(self.action, str) or not self.action:
            raise InvalidRecordError(f"action must be a non-empty string, got {self.action!r}")
        propensity = _require_finite("propensity", self.propensity)
        if not 0.0 < propensity <= 1.0:
            raise InvalidRecordError(f"propensity must be in (0, 1], got {self.propensity!r}")
        if not isinstance(self.tier, str) or not self.tier:
            raise InvalidRecordError(f"tier must be a non-empty string, got {self.tier!r}")
        _require_int("impressions", self.impressions, min_value=0)
        _require_int("clicks", self.clicks, min_value=0)
        if self.clicks > self.impressions:
            raise InvalidRecordError(
                f"clicks ({self.clicks}) must not exceed impressions ({self.impressions})"
            )
        if self.ctr_corrected is not None:
            _require_finite("ctr_corrected", self.ctr_corrected, min_value=0.0)
        if self.reward is not None and not isinstance(self.reward, RewardParts):
            raise InvalidRecordError(f"reward must be RewardParts or None, got {self.reward!r}")

    @property
    def ctr_raw(self) -> float | None:
        """Clicks per impression, or None for an interval without impressions."""
        if self.impressions == 0:
            return None
        return self.clicks / self.impressions


# Column order of the persisted format. Changing it needs a new FORMAT_VERSION.
_COLUMNS = (
    "at_s",
    "hour",
    "load_rps",
    "weekday",
    "state",
    "action",
    "propensity",
    "tier",
    "impressions",
    "clicks",
    "ctr_corrected",
    "reward",
)


def _record_to_row(record: LoggedDecision) -> list[Any]:
    reward = record.reward
    return [
        record.at_s,
        record.context.hour_of_day,
        record.context.load_rps,
        record.context.day_of_week,
        list(record.state),
        record.action,
        record.propensity,
        record.tier,
        record.impressions,
        record.clicks,
        record.ctr_corrected,
        None
        if reward is None
        else [
            reward.click_value_raw,
            reward.click_value_adjusted,
            reward.gpu_cost,
            reward.slo_penalty,
        ],
    ]


def _row_to_record(row: Any, row_index: int) -> LoggedDecision:
    if not isinstance(row, list) or len(row) != len(_COLUMNS):
        raise InvalidRecordError(
            f"persisted row {row_index} must be a list of {len(_COLUMNS)} values, got {row!r}"
        )
    values = dict(zip(_COLUMNS, row))
    try:
        reward_values = values["reward"]
        if reward_values is not None and (
            not isinstance(reward_values, list) or len(reward_values) != 4
        ):
            raise InvalidRecordError(f"reward must be a list of 4 numbers, got {reward_values!r}")
        state = values["state"]
        if not isinstance(state, list):
            raise InvalidRecordError(f"state must be a list of integers, got {state!r}")
        return LoggedDecision(
            at_s=values["at_s"],
            context=DecisionContext(
                hour_of_day=values["hour"],
                load_rps=values["load_rps"],
                day_of_week=values["weekday"],
            ),
            state=tuple(state),
            action=values["action"],
            propensity=values["propensity"],
            tier=values["tier"],
            impressions=values["impressions"],
            clicks=values["clicks"],
            ctr_corrected=values["ctr_corrected"],
            reward=None if reward_values is None else RewardParts(*reward_values),
        )
    except InvalidRecordError as error:
        raise InvalidRecordError(f"persisted row {row_index}: {error}") from error


class DecisionLog:
    """A bounded buffer of the most recent logged decisions, oldest first.

    Appending beyond `max_records` drops the oldest record. `to_bytes(max_bytes)` persists the
    newest records whose compressed encoding fits `max_bytes`.
    """

    def __init__(self, records: Iterable[LoggedDecision] = (), *, max_records: int = 10_000):
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be a positive integer, got {max_records!r}")
        self.max_records = max_records
        self._records: deque[LoggedDecision] = deque(maxlen=max_records)
        for record in records:
            self.append(record)

    def append(self, record: LoggedDecision) -> None:
        if not isinstance(record, LoggedDecision):
            raise TypeError(f"DecisionLog accepts LoggedDecision records, got {type(record).__name__}")
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LoggedDecision]:
        return iter(self._records)

    def __getitem__(self, index: int) -> LoggedDecision:
        return self._records[index]

    def to_bytes(self, max_bytes: int | None = None) -> bytes:
        """Encode the log as gzip-compressed columnar JSON of at most `max_bytes` bytes.

        When the whole log does not fit, the oldest records are left out: a binary search finds
        the largest suffix that fits. Raises ValueError when not even the header fits.
        """
        records = list(self._records)
        encoded = _encode(records)
        if max_bytes is None or len(encoded) <= max_bytes:
            return encoded

        fits_count, fits_encoded = 0, _encode([])
        if len(fits_encoded) > max_bytes:
            raise ValueError(f"max_bytes={max_bytes} is too small for an empty log")
        low, high = 0, len(records)
        while low < high:
            middle = (low + high + 1) // 2
            candidate = _encode(records[len(records) - middle :])
            if len(candidate) <= max_bytes:
                fits_count, fits_encoded = middle, candidate
                low = middle
            else:
                high = middle - 1
        assert fits_count == low
        return fits_encoded

    @classmethod
    def from_bytes(cls, data: bytes, *, max_records: int = 10_000) -> DecisionLog:
        """Decode what `to_bytes` wrote; raises InvalidRecordError naming the bad row or field."""
        try:
            document = json.loads(gzip.decompress(data))
        except (OSError, EOFError, ValueError) as error:
            raise InvalidRecordError(f"persisted decision log is not gzip-compressed JSON: {error}") from error
        return cls(_decode(document), max_records=max_records)


def _encode(records: list[LoggedDecision]) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        "columns": list(_COLUMNS),
        "rows": [_record_to_row(record) for record in records],
    }
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    # mtime=0 keeps the encoding deterministic, so an unchanged log writes identical bytes.
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def _decode(document: Any) -> list[LoggedDecision]:
    if not isinstance(document, Mapping):
        raise InvalidRecordError(f"persisted decision log must be a JSON object, got {type(document).__name__}")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise InvalidRecordError(
            f"persisted decision log has version {version!r}; this operator reads version {FORMAT_VERSION}"
        )
    if document.get("columns") != list(_COLUMNS):
        raise InvalidRecordError(f"persisted decision log has columns {document.get('columns')!r}, expected {list(_COLUMNS)}")
    rows = document.get("rows")
    if not isinstance(rows, list):
        raise InvalidRecordError("persisted decision log is missing its rows list")
    return [_row_to_record(row, index) for index, row in enumerate(rows)]
