"""Logged decisions: validation, round trip through the persisted format, and the size bound."""

from __future__ import annotations

import gzip
import json

import pytest

from tierscale_operator.causal import DecisionContext, DecisionLog, InvalidRecordError, LoggedDecision, RewardParts


def make_record(index: int = 0, **overrides) -> LoggedDecision:
    fields = dict(
        at_s=1_700_000_000.0 + 30.0 * index,
        context=DecisionContext(hour_of_day=index % 24, load_rps=120.5 + index, day_of_week=index % 7),
        state=(index % 5, 2, 1),
        action="hold" if index % 2 else "tier_up",
        propensity=0.95 if index % 2 else 0.0125,
        tier="medium",
        impressions=1000 + index,
        clicks=37,
        ctr_corrected=0.041,
        reward=RewardParts(click_value_raw=3.7, click_value_adjusted=4.1, gpu_cost=0.4, slo_penalty=0.0),
    )
    fields.update(overrides)
    return LoggedDecision(**fields)


def test_reward_totals():
    parts = RewardParts(click_value_raw=3.0, click_value_adjusted=3.5, gpu_cost=0.5, slo_penalty=1.0)
    assert parts.total_raw == pytest.approx(1.5)
    assert parts.total_adjusted == pytest.approx(2.0)


def test_ctr_raw_is_clicks_per_impression():
    assert make_record().ctr_raw == pytest.approx(37 / 1000)
    assert make_record(impressions=0, clicks=0).ctr_raw is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"propensity": 0.0}, r"propensity must be in \(0, 1\], got 0.0"),
        ({"propensity": 1.2}, r"propensity must be in \(0, 1\], got 1.2"),
        ({"propensity": float("nan")}, "propensity must be finite, got nan"),
        ({"propensity": None}, "propensity must be a number, got None"),
        ({"clicks": 2000}, r"clicks \(2000\) must not exceed impressions \(1000\)"),
        ({"impressions": -1}, "impressions must be >= 0, got -1"),
        ({"action": ""}, "action must be a non-empty string"),
        ({"state": (1, "x")}, "state must be a tuple of integers"),
        ({"ctr_corrected": -0.1}, "ctr_corrected must be >= 0.0, got -0.1"),
    ],
)
def test_invalid_record_fields_are_rejected(overrides, message):
    with pytest.raises(InvalidRecordError, match=message):
        make_record(**overrides)


def test_invalid_context_is_rejected():
    with pytest.raises(InvalidRecordError, match="context.hour_of_day must be >= 0 and <= 23, got 24"):
        DecisionContext(hour_of_day=24, load_rps=1.0)
    with pytest.raises(InvalidRecordError, match="context.load_rps must be >= 0.0, got -3"):
        DecisionContext(hour_of_day=3, load_rps=-3)


def test_negative_gpu_cost_is_rejected():
    with pytest.raises(InvalidRecordError, match="reward.gpu_cost must be >= 0.0, got -1.0"):
        RewardParts(click_value_raw=1.0, click_value_adjusted=1.0, gpu_cost=-1.0, slo_penalty=0.0)


def test_log_round_trips_through_bytes():
    records = [make_record(i) for i in range(50)] + [make_record(50, reward=None, ctr_corrected=None)]
    log = DecisionLog(records)
    restored = DecisionLog.from_bytes(log.to_bytes())
    assert list(restored) == records


def test_log_keeps_only_newest_records():
    log = DecisionLog((make_record(i) for i in range(10)), max_records=4)
    assert len(log) == 4
    assert [record.at_s for record in log] == [make_record(i).at_s for i in range(6, 10)]


def test_to_bytes_respects_size_bound_dropping_oldest():
    log = DecisionLog([make_record(i) for i in range(2000)])
    unbounded = log.to_bytes()
    max_bytes = len(unbounded) // 4
    bounded = log.to_bytes(max_bytes=max_bytes)
    assert len(bounded) <= max_bytes
    restored = DecisionLog.from_bytes(bounded)
    assert 0 < len(restored) < len(log)
    assert restored[len(restored) - 1] == log[len(log) - 1]
    assert [record.at_s for record in restored] == [record.at_s for record in list(log)[-len(restored) :]]


def test_to_bytes_rejects_budget_below_empty_log():
    with pytest.raises(ValueError, match="max_bytes=10 is too small"):
        DecisionLog([make_record()]).to_bytes(max_bytes=10)


def test_encoding_is_deterministic():
    log = DecisionLog([make_record(i) for i in range(5)])
    assert log.to_bytes() == log.to_bytes()


def persisted(document: object) -> bytes:
    return gzip.compress(json.dumps(document).encode())


def test_corrupt_persisted_log_names_row():
    document = json.loads(gzip.decompress(DecisionLog([make_record(0), make_record(1)]).to_bytes()))
    document["rows"][1][6] = -0.5  # propensity column
    with pytest.raises(InvalidRecordError, match=r"persisted row 1: propensity must be in \(0, 1\], got -0.5"):
        DecisionLog.from_bytes(persisted(document))


def test_unknown_format_version_is_rejected():
    with pytest.raises(InvalidRecordError, match="has version 99; this operator reads version 1"):
        DecisionLog.from_bytes(persisted({"version": 99, "columns": [], "rows": []}))


def test_non_gzip_bytes_are_rejected():
    with pytest.raises(InvalidRecordError, match="not gzip-compressed JSON"):
        DecisionLog.from_bytes(b"not a log")
