from __future__ import annotations

import json

import numpy as np
import pytest
from policy_helpers import observe

from tierscale_operator.policy import Action, PolicyConfig, PolicyState, PolicyStateError, QTable, StateBins, TierSpec, decide
from tierscale_operator.policy.config import MAX_LOG_ENTRIES, MAX_TABLE_ENTRIES
from tierscale_operator.policy.state import LogEntry, encode_array


def test_state_round_trips_exactly(config, clock):
    state = PolicyState.initial(config)
    state.q[:] = np.random.default_rng(1).normal(size=state.q.shape)
    for _ in range(4):
        _, state = decide(config, state, observe(clock.tick()))

    loaded = PolicyState.from_json(state.to_json(), config)

    assert np.array_equal(loaded.q, state.q)
    assert np.array_equal(loaded.visits, state.visits)
    assert loaded.log == state.log
    for field in ("updates", "steps", "pending_state", "pending_action", "pending_propensity", "pending_age", "pending_gpu_cost", "previous_rps",
                  "settled_ticks", "last_change_at_s", "breach_streak", "switch_from_tier", "fingerprint"):
        assert getattr(loaded, field) == getattr(state, field), field


def test_largest_state_fits_configmap():
    # 13 x 6 x 3 x 8 x 3 = 5616 states x 5 actions = 28,080 entries, just under the limit.
    config = PolicyConfig(
        tiers=(TierSpec("a"), TierSpec("b"), TierSpec("c")),
        bins=StateBins(load_rps_per_replica=tuple(float(i) for i in range(1, 13))),
        log_size=MAX_LOG_ENTRIES,
    )
    assert config.n_states * 5 <= MAX_TABLE_ENTRIES
    rng = np.random.default_rng(0)
    state = PolicyState.initial(config)
    state.q[:] = rng.normal(size=state.q.shape)  # random values do not compress
    state.visits[:] = rng.integers(0, 2**31, size=state.visits.shape)
    entry = LogEntry(1.7e9, 5000, 2, 0.0125, -1.23456789, 0.1234567, 0.0166666, 1.0, 123.456789)
    state = PolicyState(**{**state.__dict__, "log": (entry,) * MAX_LOG_ENTRIES})

    size = len(state.to_json().encode())

    assert size < 1024 * 1024


def test_log_keeps_last_entries(config, clock):
    config = config.replace(log_size=3)
    state = PolicyState.initial(config)
    for _ in range(8):
        _, state = decide(config, state, observe(clock.tick()))

    assert len(state.log) == 3
    assert [entry.at_s for entry in state.log] == [clock.now_s - 60.0, clock.now_s - 30.0, clock.now_s]


def corrupt(config, change):
    data = json.loads(PolicyState.initial(config).to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="v0"), "policy state format must be 'tierscale-policy-state/v1', got 'v0'"),
        (lambda d: d.pop("updates"), "policy state is missing the field 'updates'"),
        (lambda d: d.update(updates=-1), "updates must be an integer >= 0, got -1"),
        (lambda d: d.update(pending=[1, 9, 0.5, 0, 0.0]), "pending[1] must be an integer in [-1, 4], got 9"),
        (lambda d: d.update(pending=[1, 1, 1.5, 0, 0.0]), "pending[2] must be a number in [0.0, 1.0], got 1.5"),
        (lambda d: d.update(previousRps="fast"), "previousRps must be a finite number or null, got 'fast'"),
        (lambda d: d["q"].update(shape=[3, 5]), "q.shape must be"),
        (lambda d: d["q"].update(data="not base64!"), "q.data is not zlib-compressed base64"),
        (lambda d: d.update(log=[[1, 2]]), "log[0] must be a list of 9 values"),
        (lambda d: d.update(fingerprint="0000"), "policy state fingerprint 0000 does not match"),
    ],
)
def test_state_rejects_corrupt_json(config, change, message):
    with pytest.raises(PolicyStateError) as error:
        PolicyState.from_json(corrupt(config, change), config)

    assert message in str(error.value)


def test_state_rejects_nan_values(config):
    def poison(data):
        q = np.zeros((config.n_states, 5))
        q[3, 1] = np.nan
        data["q"] = encode_array(q, "<f8")

    with pytest.raises(PolicyStateError) as error:
        PolicyState.from_json(corrupt(config, poison), config)

    assert str(error.value) == "q contains NaN or infinite values"


def test_state_rejects_invalid_json(config):
    with pytest.raises(PolicyStateError) as error:
        PolicyState.from_json("{", config)

    assert str(error.value).startswith("policy state is not valid JSON")


def test_decide_rejects_state_of_other_layout(config, clock):
    other = config.replace(bins=StateBins(load_trend=(1.0,)))

    with pytest.raises(PolicyStateError) as error:
        decide(other, PolicyState.initial(config), observe(clock.tick()))

    assert "tiers or bins changed" in str(error.value)


def test_qtable_round_trips_and_checks_layout(config):
    q = np.arange(config.n_states * 5, dtype=np.float64).reshape(config.n_states, 5) / 7.0
    table = QTable(config.table_fingerprint(), q, np.ones_like(q, dtype=np.int64), {"seed": 7})

    loaded = QTable.from_json(table.to_json(), config)
    state = PolicyState.initial(config, loaded)

    assert np.array_equal(loaded.q, q)
    assert loaded.metadata == {"seed": 7}
    assert np.array_equal(state.q, q)
    with pytest.raises(PolicyStateError) as error:
        QTable.from_json(table.to_json(), config.replace(tiers=(TierSpec("x"),)))
    assert "q.shape must be" in str(error.value) or "trained for other tiers or bins" in str(error.value)


def test_shipped_table_loads_for_default_tiers():
    from tierscale_operator.sim.pretrain import DEFAULT_TABLE_PATH
    from tierscale_operator.sim.profile import load_profile
    from tierscale_operator.sim.scenario import default_policy_config

    config = default_policy_config(load_profile())
    table = QTable.from_json(DEFAULT_TABLE_PATH.read_text(), config)

    assert np.isfinite(table.q).all()
    assert table.metadata["settings"]["seed"] == 7
    assert (table.visits > 0).sum() > 1000
    assert table.q[:, Action.HOLD].any()
