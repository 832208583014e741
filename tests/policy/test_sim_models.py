"""Traffic, queueing, click and profile models of the simulator, against values computed by hand."""

from __future__ import annotations

import calendar
import copy
import zipfile

import numpy as np
import pytest
import yaml

from tierscale_operator.sim.clicks import EXAMINATION, ClickModel, fit_rank_exponent
from tierscale_operator.sim.movielens import INTER_MEMBER, rating_timestamps
from tierscale_operator.sim.profile import ProfileError, default_profile_path, load_profile, parse_profile
from tierscale_operator.sim.queueing import LatencyModel, erlang_c, lognormal_quantiles, response_p95_ms
from tierscale_operator.sim.traffic import TrafficConfig, WeeklyShape, hour_of_week_counts, make_trace, smooth_circular


def test_hour_of_week_counts_local_time():
    # Monday 2024-01-01 10:30 UTC is 04:30 at UTC-6, hour 4 of the week; Sunday 23:00 UTC-6 is hour 167.
    monday = calendar.timegm((2024, 1, 1, 10, 30, 0))
    sunday_late = calendar.timegm((2024, 1, 8, 5, 0, 0))

    counts = hour_of_week_counts(np.array([monday, monday, sunday_late]), utc_offset_h=-6)

    assert counts[4] == 2
    assert counts[167] == 1
    assert counts.sum() == 3


def test_smoothing_keeps_total_and_wraps():
    values = np.zeros(168)
    values[0] = 1.0

    smoothed = smooth_circular(values, 2.0)

    assert smoothed.sum() == pytest.approx(1.0)
    assert smoothed[167] == pytest.approx(smoothed[1])


def test_trace_is_reproducible_and_scaled():
    shape = WeeklyShape(hourly=np.linspace(0.1, 1.0, 168), source="test")
    config = TrafficConfig(peak_rps=200.0, days=2.0, day_sigma=0.0, noise_sigma=0.0, flash_crowds_per_day=0.0)

    first = make_trace(shape, config, seed=5)
    again = make_trace(shape, config, seed=5)
    other = make_trace(shape, config, seed=6)

    assert first.n_intervals == 2 * 2880
    assert np.array_equal(first.arrivals, again.arrivals)
    assert not np.array_equal(first.arrivals, other.arrivals)
    assert first.rate_rps.max() <= 200.0
    assert first.rate_rps[0] == pytest.approx(200.0 * shape.at(np.array([0.0]))[0])
    assert first.arrivals.mean() == pytest.approx(first.rate_rps.mean() * 30.0, rel=0.01)


def test_flash_crowd_multiplies_rate():
    shape = WeeklyShape(hourly=np.ones(168), source="flat")
    config = TrafficConfig(peak_rps=100.0, days=1.0, day_sigma=0.0, noise_sigma=0.0, flash_crowds_per_day=5.0,
                           flash_multiplier=(2.0, 2.0), flash_duration_min=(30.0, 30.0))

    trace = make_trace(shape, config, seed=1)

    # Crowds may overlap, and overlapping crowds multiply: every plateau is 100 x 2^k.
    plateaus = np.log2(trace.rate_rps.max() / 100.0)
    assert plateaus >= 1
    assert plateaus == pytest.approx(round(plateaus))
    assert trace.rate_rps.min() == pytest.approx(100.0)


@pytest.mark.parametrize("bad", [{"peak_rps": 0.0}, {"noise_correlation": 1.0}, {"flash_multiplier": (2.0, 1.0)}])
def test_traffic_config_rejects_bad_values(bad):
    with pytest.raises(ValueError) as error:
        TrafficConfig(**bad)

    assert next(iter(bad)) in str(error.value)


def test_movielens_timestamps_read_from_wheel(tmp_path):
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(INTER_MEMBER, "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       "1\t2\t3\t881250949\n4\t5\t1\t874724710\n")

    assert rating_timestamps(wheel).tolist() == [874724710, 881250949]


def test_erlang_c_known_values():
    # M/M/1: P(wait) = rho. M/M/2 with a = 1: P(wait) = 1/3.
    assert erlang_c(np.array([1, 2]), np.array([0.5, 1.0])).tolist() == pytest.approx([0.5, 1 / 3])


def test_p95_matches_mm1_closed_form():
    # M/M/1 response time is exponential with rate mu - lambda: p95 = ln(20) / (mu - lambda).
    service = -10.0 * np.log(1.0 - (np.arange(4000) + 0.5) / 4000)  # exponential, mean 10 ms

    p95 = response_p95_ms(service, 1.0, np.array([1]), np.array([0.5]))

    assert p95[0] == pytest.approx(np.log(20.0) / (0.1 - 0.05), rel=1e-3)


def test_lognormal_quantiles_have_requested_moments():
    samples = lognormal_quantiles(10.0, 0.3, count=20000)

    assert samples.mean() == pytest.approx(10.0, rel=1e-3)
    assert samples.std() / samples.mean() == pytest.approx(0.3, rel=1e-2)


def test_latency_grows_with_load_and_overloads():
    model = LatencyModel(load_profile(), max_replicas=4)
    capacity = model.capacity_rps[0]
    rates = np.array([0.0, 0.3, 0.6, 0.9, 1.2]) * 2 * capacity

    p95, served = model.evaluate(np.zeros(5, dtype=int), np.full(5, 2), rates)

    assert np.all(np.diff(p95) > 0)
    assert p95[-1] == model.timeout_ms
    assert served[:4].tolist() == pytest.approx(rates[:4].tolist())
    assert served[-1] == pytest.approx(2 * capacity * model.max_utilisation)


def test_no_ready_replica_times_out():
    model = LatencyModel(load_profile(), max_replicas=2)

    p95, served = model.evaluate(np.array([1]), np.array([0]), np.array([10.0]))

    assert p95[0] == model.timeout_ms
    assert served[0] == 0.0


def test_click_model_ctr_is_scaled_ndcg():
    profile = load_profile()
    model = ClickModel.from_profile(profile, click_scale=0.5, hour_amplitude=0.2, peak_hour=21.0)

    expected = [0.5 * t.ndcg_at_10 for t in profile.tiers]
    assert model.ctr_by_tier.tolist() == pytest.approx(expected)
    assert model.position_click_probability.sum(axis=1).tolist() == pytest.approx(expected)
    assert model.ctr(np.array([2]), np.array([21.0]))[0] == pytest.approx(1.2 * expected[2])
    assert model.ctr(np.array([2]), np.array([9.0]))[0] == pytest.approx(0.8 * expected[2])
    assert model.hour_factor(np.arange(24) + 0.5).mean() == pytest.approx(1.0)


def test_rank_exponent_reproduces_ratio():
    beta = fit_rank_exponent(0.6)
    ranks = np.arange(1, 11.0)
    weights = ranks**-beta

    assert (weights * EXAMINATION).sum() / weights.sum() == pytest.approx(0.6, rel=1e-6)
    with pytest.raises(ValueError):
        fit_rank_exponent(0.1)


def test_clicks_by_position_show_position_bias():
    model = ClickModel.from_profile(load_profile())
    rng = np.random.default_rng(0)

    clicks = model.clicks_by_position(rng, np.array([1]), np.array([21.0]), np.array([10_000_000]))[0]

    assert np.all(np.diff(clicks) < 0)
    assert clicks.sum() / 1e7 == pytest.approx(model.ctr(np.array([1]), np.array([21.0]))[0], rel=0.01)


PROFILE = {
    "format": "tierscale-tier-profile/v1",
    "status": "measured",
    "warmup_s": 30,
    "tiers": [{"name": "small", "service_ms": {"mean": 4.0, "cv": 0.2},
               "quality": {"hr_at_10": 0.1, "ndcg_at_10": 0.05}}],
}


def test_profile_parses_with_defaults():
    profile = parse_profile(PROFILE)

    tier = profile.tiers[0]
    assert (tier.gpus_per_replica, tier.servers_per_replica) == (1, 1)
    assert tier.capacity_rps_per_replica == 250.0
    assert parse_profile(yaml.safe_load(profile.to_yaml())) == profile


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format="x"), "format must be 'tierscale-tier-profile/v1'"),
        (lambda p: p.update(status="guessed"), "status must be one of ('measured', 'provisional')"),
        (lambda p: p.update(warmup_s=-1), "warmup_s must be >= 0.0, got -1"),
        (lambda p: p["tiers"][0]["service_ms"].update(mean=0), "tiers[0].service_ms.mean must be > 0.0, got 0"),
        (lambda p: p["tiers"][0]["quality"].update(ndcg_at_10=0.2), "ndcg_at_10 (0.2) cannot exceed hr_at_10"),
        (lambda p: p["tiers"][0].update(gpus_per_replica=0), "tiers[0].gpus_per_replica must be an integer >= 1"),
        (lambda p: p["tiers"].append(dict(p["tiers"][0])), "tier names must be unique"),
    ],
)
def test_profile_rejects_bad_field(change, message):
    data = copy.deepcopy(PROFILE)
    change(data)

    with pytest.raises(ProfileError) as error:
        parse_profile(data, "p.yaml")

    assert message in str(error.value)


def test_shipped_profiles_are_labelled():
    folder = default_profile_path().parent
    provisional = load_profile(folder / "provisional.yaml")
    default = load_profile()

    assert provisional.status == "provisional"
    assert "Provisional" in provisional.description
    assert default_profile_path().name == "measured.yaml"
    assert default.status == "measured"
    assert default.tier_names == provisional.tier_names == ("small", "medium", "large")
    assert [t.ndcg_at_10 for t in default.tiers] == sorted(t.ndcg_at_10 for t in default.tiers)


def test_calibration_maps_server_reports():
    from tierscale_operator.sim.calibrate import CalibrationError, calibrate, lognormal_from_percentiles

    quality = {"tiers": {"small": {"test": {"hr@10": 0.12, "ndcg@10": 0.06}},
                         "large": {"test": {"hr@10": 0.17, "ndcg@10": 0.09}}}}
    bench = {"results": {
        "small": {"tierscale": {"ready_s": 12.3, "sweep": [
            {"concurrency": 1, "requests_per_s": 150.0, "p50_ms": 5.0, "p95_ms": 8.0},
            {"concurrency": 8, "requests_per_s": 600.0, "p50_ms": 12.0, "p95_ms": 20.0}]}},
        "large": {"tierscale": {"ready_s": 20.2, "sweep": [
            {"concurrency": 1, "requests_per_s": 60.0, "p50_ms": 15.0, "p95_ms": 15.0}]}},
    }}

    profile = calibrate(quality, bench, tiers=[("small", 1), ("large", 2)])

    small, large = profile.tiers
    mean, cv = lognormal_from_percentiles(5.0, 8.0)
    assert profile.status == "measured"
    assert profile.warmup_s == 21.0
    assert small.service_ms_mean == pytest.approx(mean, abs=1e-3)
    assert small.service_ms_cv == pytest.approx(cv, abs=1e-3)
    assert small.servers_per_replica == round(600.0 * mean / 1000.0)
    assert (large.service_ms_mean, large.service_ms_cv, large.servers_per_replica) == (15.0, 0.0, 1)
    assert (large.gpus_per_replica, large.hr_at_10, large.ndcg_at_10) == (2, 0.17, 0.09)

    del bench["results"]["large"]["tierscale"]["sweep"][0]["p50_ms"]
    with pytest.raises(CalibrationError) as error:
        calibrate(quality, bench, tiers=[("small", 1), ("large", 2)])
    assert str(error.value) == ("bench-server.json: results.large.tierscale.sweep.p50_ms must be a finite number, "
                                "got None")


def test_lognormal_fit_recovers_percentiles():
    from tierscale_operator.sim.calibrate import lognormal_from_percentiles

    mean, cv = lognormal_from_percentiles(10.0, 20.0)
    samples = lognormal_quantiles(mean, cv, count=100_000)

    assert np.median(samples) == pytest.approx(10.0, rel=1e-3)
    assert np.quantile(samples, 0.95) == pytest.approx(20.0, rel=1e-3)
