"""The policy state that the caller persists between steps, and its JSON form.

`PolicyState` contains the Q-table, the visit counts, the timers, the transition waiting for its
reward and a bounded log of credited transitions. It is a plain value: `decide` takes one and
returns a new one, and the operator stores `to_json()` in a ConfigMap owned by the resource.

Arrays are stored as zlib-compressed, base64-encoded little-endian bytes, so the values survive a
round trip exactly. The size is bounded by the table size limit in the config module and by
`PolicyConfig.log_size`; the largest allowed state encodes to well under the 1 MiB of a ConfigMap.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import zlib
from typing import Any

import numpy as np

from tierscale_operator.policy.actions import N_ACTIONS
from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import SETTLED_FOR_CREDIT, ControlState, TableState

STATE_FORMAT = "tierscale-policy-state/v1"
TABLE_FORMAT = "tierscale-qtable/v1"


class PolicyStateError(ValueError):
    """A persisted policy state or Q-table cannot be loaded; the message names the field."""


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One credited transition: the decision's state, action and propensity, and its reward."""

    at_s: float
    state: int
    action: int
    propensity: float
    reward: float
    reward_clicks: float
    reward_gpu_cost: float
    reward_slo_penalty: float
    requests_per_second: float

    def to_list(self) -> list[float | int]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    @classmethod
    def from_list(cls, values: list[Any], position: int) -> LogEntry:
        fields = dataclasses.fields(cls)
        if not isinstance(values, list) or len(values) != len(fields):
            raise PolicyStateError(
                f"log[{position}] must be a list of {len(fields)} values "
                f"({', '.join(f.name for f in fields)}), got {values!r}"
            )
        kwargs = {}
        for field, value in zip(fields, values, strict=True):
            kind = int if field.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PolicyStateError(f"log[{position}].{field.name} must be a number, got {value!r}")
            kwargs[field.name] = kind(value)
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """Everything the policy remembers between steps; see the module docstring."""

    fingerprint: str
    q: np.ndarray  # (n_states, N_ACTIONS) float64
    visits: np.ndarray  # (n_states, N_ACTIONS) int64
    updates: int = 0
    steps: int = 0
    pending_state: int = -1
    pending_action: int = -1
    pending_propensity: float = 1.0
    pending_age: int = 0
    pending_gpu_cost: float = 0.0
    previous_rps: float | None = None
    settled_ticks: int = SETTLED_FOR_CREDIT
    last_change_at_s: float | None = None
    breach_streak: int = 0
    switch_from_tier: int = -1
    switch_slo_met_before: bool = False
    log: tuple[LogEntry, ...] = ()

    @classmethod
    def initial(cls, config: PolicyConfig, table: QTable | None = None) -> PolicyState:
        """Create a fresh state from `table` (e.g. the pretrained one), or from zeros."""
        if table is None:
            q = np.zeros((config.n_states, N_ACTIONS), dtype=np.float64)
            visits = np.zeros((config.n_states, N_ACTIONS), dtype=np.int64)
        else:
            table.check_layout(config)
            q, visits = table.q.copy(), table.visits.copy()
        return cls(fingerprint=config.table_fingerprint(), q=q, visits=visits)

    def check_layout(self, config: PolicyConfig) -> None:
        expected = config.table_fingerprint()
        if self.fingerprint != expected:
            raise PolicyStateError(
                f"policy state fingerprint {self.fingerprint} does not match the config's table layout "
                f"{expected}: tiers or bins changed; start from a new state or a matching table"
            )

    # Conversion to and from the batch form used by the core --------------------------------

    def to_batch(self) -> tuple[TableState, ControlState]:
        tables = TableState(
            q=self.q[None].copy(),
            visits=self.visits[None].copy(),
            updates=np.array([self.updates], dtype=np.int64),
        )
        control = ControlState.initial(1)
        control.pending_state[0] = self.pending_state
        control.pending_action[0] = self.pending_action
        control.pending_propensity[0] = self.pending_propensity
        control.pending_age[0] = self.pending_age
        control.pending_gpu_cost[0] = self.pending_gpu_cost
        control.previous_rps[0] = np.nan if self.previous_rps is None else self.previous_rps
        control.settled_ticks[0] = self.settled_ticks
        control.last_change_at_s[0] = -np.inf if self.last_change_at_s is None else self.last_change_at_s
        control.breach_streak[0] = self.breach_streak
        control.switch_from_tier[0] = self.switch_from_tier
        control.switch_slo_met_before[0] = self.switch_slo_met_before
        return tables, control

    def with_batch(self, tables: TableState, control: ControlState, *, steps: int,
                   log: tuple[LogEntry, ...]) -> PolicyState:
        previous_rps = float(control.previous_rps[0])
        last_change = float(control.last_change_at_s[0])
        return dataclasses.replace(
            self,
            q=tables.q[0],
            visits=tables.visits[0],
            updates=int(tables.updates[0]),
            steps=steps,
            pending_state=int(control.pending_state[0]),
            pending_action=int(control.pending_action[0]),
            pending_propensity=float(control.pending_propensity[0]),
            pending_age=int(control.pending_age[0]),
            pending_gpu_cost=float(control.pending_gpu_cost[0]),
            previous_rps=previous_rps if math.isfinite(previous_rps) else None,
            settled_ticks=int(control.settled_ticks[0]),
            last_change_at_s=last_change if math.isfinite(last_change) else None,
            breach_streak=int(control.breach_streak[0]),
            switch_from_tier=int(control.switch_from_tier[0]),
            switch_slo_met_before=bool(control.switch_slo_met_before[0]),
            log=log,
        )

    # JSON ----------------------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "q": encode_array(self.q, "<f8"),
            "visits": encode_array(_clip_counts(self.visits), "<u4"),
            "updates": self.updates,
            "steps": self.steps,
            "pending": [self.pending_state, self.pending_action, self.pending_propensity, self.pending_age,
                        self.pending_gpu_cost],
            "previousRps": self.previous_rps,
            "settledTicks": self.settled_ticks,
            "lastChangeAtS": self.last_change_at_s,
            "breachStreak": self.breach_streak,
            "switchFromTier": self.switch_from_tier,
            "switchSloMetBefore": self.switch_slo_met_before,
            "log": [entry.to_list() for entry in self.log],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, config: PolicyConfig) -> PolicyState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PolicyStateError(f"policy state is not valid JSON: {error}") from error
        return cls.from_json_dict(data, config)

    @classmethod
    def from_json_dict(cls, data: Any, config: PolicyConfig) -> PolicyState:
        """Load and validate a state; shapes must match `config` and counters must be sane."""
        if not isinstance(data, dict):
            raise PolicyStateError(f"policy state must be a JSON object, got {type(data).__name__}")
        if data.get("format") != STATE_FORMAT:
            raise PolicyStateError(f"policy state format must be {STATE_FORMAT!r}, got {data.get('format')!r}")
        shape = (config.n_states, N_ACTIONS)
        q = decode_array(_field(data, "q"), "<f8", shape, "q")
        if not np.isfinite(q).all():
            raise PolicyStateError("q contains NaN or infinite values")
        visits = decode_array(_field(data, "visits"), "<u4", shape, "visits").astype(np.int64)
        pending = _field(data, "pending")
        if not isinstance(pending, list) or len(pending) != 5:
            raise PolicyStateError(f"pending must be [state, action, propensity, age, gpu_cost], got {pending!r}")
        log_values = _field(data, "log")
        if not isinstance(log_values, list):
            raise PolicyStateError(f"log must be a list, got {type(log_values).__name__}")
        log = tuple(LogEntry.from_list(v, i) for i, v in enumerate(log_values))
        log = log[max(0, len(log) - config.log_size):] if config.log_size else ()

        state = cls(
            fingerprint=str(_field(data, "fingerprint")),
            q=q,
            visits=visits,
            updates=_int_field(data, "updates", 0),
            steps=_int_field(data, "steps", 0),
            pending_state=_int_in(pending[0], "pending[0]", -1, config.n_states - 1),
            pending_action=_int_in(pending[1], "pending[1]", -1, N_ACTIONS - 1),
            pending_propensity=_float_in(pending[2], "pending[2]", 0.0, 1.0),
            pending_age=_int_in(pending[3], "pending[3]", 0),
            pending_gpu_cost=_float_in(pending[4], "pending[4]", 0.0, math.inf),
            previous_rps=_optional_float(data, "previousRps"),
            settled_ticks=_int_field(data, "settledTicks", 0, SETTLED_FOR_CREDIT),
            last_change_at_s=_optional_float(data, "lastChangeAtS"),
            breach_streak=_int_field(data, "breachStreak", 0),
            switch_from_tier=_int_field(data, "switchFromTier", -1, config.n_tiers - 1),
            switch_slo_met_before=bool(_field(data, "switchSloMetBefore")),
            log=log,
        )
        state.check_layout(config)
        return state


@dataclasses.dataclass(frozen=True)
class QTable:
    """A Q-table file: the initial policy the operator loads, e.g. the pretrained default."""

    fingerprint: str
    q: np.ndarray
    visits: np.ndarray
    metadata: dict[str, Any]

    def check_layout(self, config: PolicyConfig) -> None:
        expected = config.table_fingerprint()
        if self.fingerprint != expected:
            raise PolicyStateError(
                f"Q-table fingerprint {self.fingerprint} does not match the config's table layout {expected}: "
                "the table was trained for other tiers or bins"
            )

    def to_json(self) -> str:
        data = {
            "format": TABLE_FORMAT,
            "fingerprint": self.fingerprint,
            "q": encode_array(self.q, "<f8"),
            "visits": encode_array(_clip_counts(self.visits), "<u4"),
            "metadata": self.metadata,
        }
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, config: PolicyConfig) -> QTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PolicyStateError(f"Q-table file is not valid JSON: {error}") from error
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise PolicyStateError(f"Q-table format must be {TABLE_FORMAT!r}, got {found!r}")
        shape = (config.n_states, N_ACTIONS)
        table = cls(
            fingerprint=str(_field(data, "fingerprint")),
            q=decode_array(_field(data, "q"), "<f8", shape, "q"),
            visits=decode_array(_field(data, "visits"), "<u4", shape, "visits").astype(np.int64),
            metadata=data.get("metadata", {}),
        )
        if not np.isfinite(table.q).all():
            raise PolicyStateError("Q-table q contains NaN or infinite values")
        table.check_layout(config)
        return table


def encode_array(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """Encode an array as {"dtype", "shape", "data"}: zlib-compressed base64 bytes."""
    raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return {
        "dtype": dtype,
        "shape": list(array.shape),
        "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii"),
    }


def decode_array(encoded: Any, dtype: str, shape: tuple[int, ...], field: str) -> np.ndarray:
    if not isinstance(encoded, dict):
        raise PolicyStateError(f"{field} must be an encoded array object, got {type(encoded).__name__}")
    if encoded.get("dtype") != dtype:
        raise PolicyStateError(f"{field}.dtype must be {dtype!r}, got {encoded.get('dtype')!r}")
    if tuple(encoded.get("shape", ())) != shape:
        raise PolicyStateError(f"{field}.shape must be {list(shape)} for this config, got {encoded.get('shape')!r}")
    try:
        raw = zlib.decompress(base64.b64decode(encoded["data"], validate=True))
    except (KeyError, ValueError, zlib.error) as error:
        raise PolicyStateError(f"{field}.data is not zlib-compressed base64: {error}") from error
    array = np.frombuffer(raw, dtype=dtype)
    if array.size != math.prod(shape):
        raise PolicyStateError(f"{field}.data contains {array.size} values, expected {math.prod(shape)}")
    return array.reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


def _clip_counts(visits: np.ndarray) -> np.ndarray:
    """Saturate visit counts at the uint32 maximum instead of letting them wrap."""
    return np.clip(visits, 0, np.iinfo(np.uint32).max)


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise PolicyStateError(f"policy state is missing the field {name!r}")
    return data[name]


def _int_in(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise PolicyStateError(f"{name} must be an integer {bounds}, got {value!r}")
    return value


def _int_field(data: dict[str, Any], name: str, low: int, high: int | None = None) -> int:
    return _int_in(_field(data, name), name, low, high)


def _float_in(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise PolicyStateError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _optional_float(data: dict[str, Any], name: str) -> float | None:
    value = _field(data, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyStateError(f"{name} must be a finite number or null, got {value!r}")
    return float(value)
