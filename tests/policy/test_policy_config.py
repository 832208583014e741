from __future__ import annotations

import pytest

from tierscale_operator.policy import PolicyConfig, PolicyConfigError, StateBins, TierSpec
from tierscale_operator.policy.config import MAX_TABLE_ENTRIES, parse_duration_s

TIERS = (TierSpec("small"), TierSpec("large"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_replicas": 0}, "min_replicas must be >= 1, got 0"),
        ({"min_replicas": 5, "max_replicas": 4}, "min_replicas (5) must be <= max_replicas (4)"),
        ({"gpu_budget": 0}, "gpu_budget must be >= 1, got 0"),
        ({"min_replicas": 3, "gpu_budget": 2}, "gpu_budget (2) cannot fit min_replicas (3)"),
        ({"discount": 1.0}, "discount must be in [0.0, 1.0), got 1.0"),
        ({"learning_rate": 0.0}, "learning_rate must be in (0.0, 1.0], got 0.0"),
        ({"epsilon": 0.1, "epsilon_min": 0.2}, "epsilon_min must be in [0.0, 0.1], got 0.2"),
        ({"epsilon_decay": 0.0}, "epsilon_decay must be in (0.0, 1.0], got 0.0"),
        ({"mode": "auto"}, "mode must be one of ('learn', 'act', 'recommend'), got 'auto'"),
        ({"slo_latency_p95_ms": float("nan")}, "slo_latency_p95_ms must be a finite number, got nan"),
        ({"click_value": -1.0}, "click_value must be in [0.0, inf), got -1.0"),
        ({"interval_s": 0.0}, "interval_s must be in (0.0, inf), got 0.0"),
        ({"breach_intervals": 0}, "breach_intervals must be >= 1, got 0"),
        ({"max_replicas": 2.5}, "max_replicas must be an integer, got 2.5"),
        ({"learning_rate_schedule": "adam"}, "learning_rate_schedule must be one of"),
    ],
)
def test_config_rejects_invalid_value(changes, message):
    with pytest.raises(PolicyConfigError) as error:
        PolicyConfig(tiers=TIERS, **changes)

    assert message in str(error.value)


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ((), "tiers must list at least one tier"),
        ((TierSpec("a"), TierSpec("a")), "tiers[1].name 'a' is used by an earlier tier"),
        ((TierSpec(""),), "tiers[0].name must be a non-empty string"),
        ((TierSpec("a", gpus_per_replica=0),), "tiers[0].gpus_per_replica must be >= 1, got 0"),
    ],
)
def test_config_rejects_invalid_tiers(tiers, message):
    with pytest.raises(PolicyConfigError) as error:
        PolicyConfig(tiers=tiers)

    assert message in str(error.value)


def test_config_rejects_unsorted_bins():
    with pytest.raises(PolicyConfigError) as error:
        PolicyConfig(tiers=TIERS, bins=StateBins(latency_p95_ratio=(0.5, 0.5, 1.0)))

    assert str(error.value) == "bins.latency_p95_ratio must be strictly increasing, got 0.5 then 0.5 at index 1"


def test_config_rejects_table_too_large_for_configmap():
    many = tuple(float(i) for i in range(1, 60))

    with pytest.raises(PolicyConfigError) as error:
        PolicyConfig(tiers=TIERS, bins=StateBins(load_rps_per_replica=many))

    assert f"above the limit of {MAX_TABLE_ENTRIES}" in str(error.value)


def test_state_count_is_product_of_bins():
    config = PolicyConfig(tiers=TIERS)

    assert config.bin_counts == (11, 6, 2, 8, 3)
    assert config.n_states == 11 * 6 * 2 * 8 * 3


def test_fingerprint_changes_with_layout_only():
    base = PolicyConfig(tiers=TIERS)

    assert base.table_fingerprint() == base.replace(click_value=5.0, epsilon=0.5).table_fingerprint()
    assert base.table_fingerprint() != base.replace(tiers=(TierSpec("small"), TierSpec("big"))).table_fingerprint()
    assert base.table_fingerprint() != base.replace(bins=StateBins(load_trend=(1.0,))).table_fingerprint()


def test_from_spec_reads_resource_fields():
    spec = {
        "tiers": [{"name": "small", "gpusPerReplica": 1}, {"name": "large", "gpusPerReplica": 2}],
        "replicas": {"min": 2, "max": 6},
        "gpuBudget": 10,
        "slo": {"latencyP95Ms": 80},
        "objective": {"clickValue": 0.5, "gpuHourCost": 1.5, "sloPenalty": 3.0},
        "policy": {"interval": "1m", "cooldown": "1m30s", "learningRate": 0.2, "discount": 0.8,
                   "epsilon": 0.1, "mode": "act"},
    }

    config = PolicyConfig.from_spec(spec)

    assert config.tiers == (TierSpec("small", 1), TierSpec("large", 2))
    assert (config.min_replicas, config.max_replicas, config.gpu_budget) == (2, 6, 10)
    assert config.slo_latency_p95_ms == 80
    assert (config.click_value, config.gpu_hour_cost, config.slo_penalty) == (0.5, 1.5, 3.0)
    assert (config.interval_s, config.cooldown_s) == (60.0, 90.0)
    assert (config.learning_rate, config.discount, config.epsilon, config.mode) == (0.2, 0.8, 0.1, "act")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1m30s", 90.0), ("250ms", 0.25), ("2h", 7200.0),
                                               (45, 45.0)])
def test_duration_parses(text, seconds):
    assert parse_duration_s(text, "spec.policy.interval") == seconds


@pytest.mark.parametrize("text", ["", "30", "30 s", "s30", "1m30", True])
def test_duration_rejects_malformed(text):
    with pytest.raises(PolicyConfigError) as error:
        parse_duration_s(text, "spec.policy.cooldown")

    assert str(error.value).startswith("spec.policy.cooldown must be a duration like '30s'")
