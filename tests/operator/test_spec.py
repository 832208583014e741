"""Spec parsing: the checks the CRD schema cannot express name the field and the value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tierscale_operator.spec import SpecError, parse_duration_s, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "movielens-bert.yaml"


@pytest.fixture
def spec() -> dict:
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])


def test_example_spec_parses_into_policy_config(spec):
    parsed = parse_spec(spec)

    assert [t.name for t in parsed.tiers] == ["small", "medium", "large"]
    assert parsed.initial_tier == "small"
    assert parsed.interval_s == 30.0
    assert parsed.policy.cooldown_s == 60.0
    assert parsed.policy.max_replicas == 6
    assert parsed.policy.slo_latency_p95_ms == 50.0
    assert parsed.pod_labels == {"tierscale.io/local-run": "true"}


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0)]
)
def test_duration_units(text, seconds):
    assert parse_duration_s("spec.policy.interval", text) == seconds


def test_malformed_duration_names_field_and_value():
    with pytest.raises(SpecError) as error:
        parse_duration_s("spec.policy.cooldown", "ten seconds")

    assert error.value.field == "spec.policy.cooldown"
    assert str(error.value) == "spec.policy.cooldown='ten seconds': expected a duration such as 30s, 2m or 1h"


def test_query_timeout_not_shorter_than_interval_is_rejected(spec):
    spec["prometheus"]["timeoutSeconds"] = 30

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.prometheus.timeoutSeconds"
    assert "must be shorter than spec.policy.interval (30 s)" in str(error.value)


def test_configured_position_bias_needs_propensities(spec):
    spec["causal"]["positionBias"] = "configured"

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.causal.positionPropensities"


def test_policy_checks_surface_as_spec_errors(spec):
    spec["replicas"] = {"min": 1, "max": 3}
    spec["gpuBudget"] = 2  # less than max × 1 GPU is allowed; the policy masks scale-up

    parsed = parse_spec(spec)

    assert parsed.gpu_budget == 2


def test_policy_error_names_the_spec_field(spec):
    spec["policy"]["epsilon"] = 0.0
    spec["policy"]["epsilonMin"] = 0.01

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.policy.epsilonMin"
    assert "epsilon_min must be in [0.0, 0.0], got 0.01" in str(error.value)


def test_load_scale_reaches_policy_config(spec):
    spec["policy"]["loadScale"] = 7.5

    parsed = parse_spec(spec)

    assert parsed.policy.load_scale == 7.5


def test_load_scale_defaults_to_one(spec):
    spec["policy"].pop("loadScale", None)

    assert parse_spec(spec).policy.load_scale == 1.0


def test_zero_load_scale_names_the_field(spec):
    spec["policy"]["loadScale"] = 0

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.policy.loadScale"
    assert "load_scale must be in (0.0, 1000.0], got 0.0" in str(error.value)


def test_learning_rate_schedule_reaches_policy_config(spec):
    spec["policy"]["learningRateSchedule"] = "visit-averaged"

    assert parse_spec(spec).policy.learning_rate_schedule == "visit-averaged"


def test_unknown_learning_rate_schedule_names_the_field(spec):
    spec["policy"]["learningRateSchedule"] = "cosine"

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.policy.learningRateSchedule"
    assert "'cosine'" in str(error.value)


def test_zero_interval_is_named_before_timeout(spec):
    spec["policy"]["interval"] = "0s"

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.policy.interval"


def test_zero_window_names_the_field(spec):
    spec["prometheus"]["window"] = "0s"

    with pytest.raises(SpecError) as error:
        parse_spec(spec)

    assert error.value.field == "spec.prometheus.window"


def test_empty_confounders_turn_adjustment_off(spec):
    spec["causal"]["confounders"] = []

    assert parse_spec(spec).causal.confounders == ()


def test_missing_confounders_mean_both(spec):
    spec["causal"].pop("confounders")

    assert parse_spec(spec).causal.confounders == ("hourOfDay", "load")
