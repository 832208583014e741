"""Pieces of the model server that need no server: propensities, ranking metrics, data, settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tierscale_server.config import ServerConfig
from tierscale_server.ranking import propensity, randomize_ranking
from tierscale_server.ranking_metrics import hit_and_ndcg, rank_of_target


@pytest.mark.parametrize("k", [1, 2, 3, 10])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 1.0])
def test_propensities_form_a_doubly_stochastic_matrix(k, epsilon):
    matrix = np.array([[propensity(r, p, k, epsilon) for p in range(1, k + 1)] for r in range(1, k + 1)])

    assert np.allclose(matrix.sum(axis=0), 1.0)
    assert np.allclose(matrix.sum(axis=1), 1.0)


def test_propensity_worked_example():
    assert propensity(5, 5, 10, 0.1) == pytest.approx(0.9 + 0.1 * 7 / 9)
    assert propensity(1, 1, 10, 0.1) == pytest.approx(0.9 + 0.1 * 8 / 9)
    assert propensity(5, 6, 10, 0.1) == pytest.approx(0.1 / 9)
    assert propensity(5, 7, 10, 0.1) == 0.0


def test_swap_frequency_matches_probability():
    rng = random.Random(3)
    swaps = sum(randomize_ranking(10, 0.2, rng)[1] is not None for _ in range(5000))

    assert 0.17 < swaps / 5000 < 0.23


def test_randomize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="invalid k 0"):
        randomize_ranking(0, 0.1, random.Random(0))
    with pytest.raises(ValueError, match="invalid swap_probability 1.5"):
        randomize_ranking(3, 1.5, random.Random(0))


def test_rank_masks_history_and_counts_ties_against_target():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 3.0]])

    assert rank_of_target(scores, [[1]], torch.tensor([3])).item() == 3   # item 1 masked; 2, then 3 and 4 tie
    assert rank_of_target(scores, [[]], torch.tensor([2])).item() == 2


def test_hit_and_ndcg_values():
    hr, ndcg = hit_and_ndcg(torch.tensor([1, 3, 11, 100]), k=10)

    assert hr == pytest.approx(0.5)
    assert ndcg == pytest.approx((1.0 + 1.0 / np.log2(4)) / 4)


def test_movielens_split_is_leave_last_out_by_time():
    from tierscale_server.data import leave_last_out, load_movielens

    data = load_movielens()
    split = leave_last_out(data)

    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100_000)
    for user in (0, 100, 942):
        sequence = data.sequences[user]
        assert split.valid[user] == sequence[-2]
        assert split.test[user] == sequence[-1]
        assert list(split.history_for("test", user)) == list(sequence[:-1])


def test_item_text_names_title_year_and_genres():
    from tierscale_server.data import load_movielens

    toy_story = load_movielens().items[0]

    assert toy_story.text() == "Toy Story (1995). Genres: Animation, Children's, Comedy."


@pytest.mark.parametrize(("settings", "message"), [
    ({"tier": "huge"}, "tier 'huge' is unknown"),
    ({"port": 0}, "port 0 is outside 1..65535"),
    ({"max_batch_size": 0}, "max_batch_size 0 is outside 1..1024"),
    ({"swap_probability": 1.2}, "swap_probability 1.2 is outside 0..1"),
    ({"max_body_bytes": 10}, "max_body_bytes 10 is below 64"),
])
def test_server_config_names_the_invalid_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)


def test_serve_flags_fall_back_to_environment(monkeypatch):
    from tierscale_server.cli import build_parser

    monkeypatch.setenv("TIERSCALE_TIER", "large")
    monkeypatch.setenv("TIERSCALE_PORT", "9090")

    args = build_parser().parse_args(["serve"])
    flagged = build_parser().parse_args(["serve", "--port", "9191"])

    assert (args.tier, args.port) == ("large", 9090)
    assert flagged.port == 9191


def test_invalid_port_environment_names_the_variable(monkeypatch):
    from tierscale_server.cli import build_parser

    monkeypatch.setenv("TIERSCALE_PORT", "eighty")

    with pytest.raises(SystemExit, match="invalid TIERSCALE_PORT='eighty'"):
        build_parser()


def test_apis_on_the_same_port_share_one_app():
    from tierscale_server.app import build_apps
    from tierscale_server.service import ModelService

    apps = build_apps(ModelService(ServerConfig(port=9000, management_port=9000, metrics_port=9001)))

    assert sorted(apps) == [9000, 9001]
    paths = {route.path for route in apps[9000].routes}
    assert {"/ping", "/predictions/{model}", "/feedback", "/models", "/models/{model}"} <= paths
    assert [route.path for route in apps[9001].routes] == ["/metrics"]


def test_throughput_at_p99_interpolates_between_points():
    from tierscale_server.bench import throughput_at_p99

    sweep = [
        {"concurrency": 1, "requests_per_s": 20.0, "p99_ms": 50.0},
        {"concurrency": 8, "requests_per_s": 100.0, "p99_ms": 150.0},
    ]

    assert throughput_at_p99(sweep, 100.0) == 60.0
    assert throughput_at_p99(sweep, 200.0) == 100.0
    assert throughput_at_p99(sweep, 40.0) is None


def test_torch_threads_must_not_be_negative():
    with pytest.raises(ValueError, match="torch_threads -1 is negative"):
        ServerConfig(torch_threads=-1)


def test_metrics_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, tierscale_server.metrics; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "False"
