"""The GPU ceiling the controller learns from Pending pods, and how long it blocks scale-up."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from tierscale_operator.controller import Controller
from tierscale_operator.persistence import ControllerState
from tierscale_operator.policy import Observation, PolicyState, decide
from tierscale_operator.spec import parse_spec
from tierscale_operator.workloads import ClusterView, TierWorkload

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "movielens-bert.yaml"
SPEC = parse_spec(copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"]))  # interval 30 s


def view(bound: int, pending_for_gpus: int) -> ClusterView:
    small = TierWorkload(tier="small", desired=bound + pending_for_gpus, ready=bound,
                         pending=pending_for_gpus, pending_for_gpus=pending_for_gpus, running_gpus=bound)
    return ClusterView(tiers={"small": small})


def test_no_shortage_seen_means_free_gpus_unknown():
    state = ControllerState(tier_replicas={"small": 2})

    assert Controller._gpu_ceiling(state, SPEC, view(2, 0), now_s=1000.0) is None
    assert state.gpu_ceiling is None


def test_ceiling_outlives_pending_pod():
    state = ControllerState(tier_replicas={"small": 3})

    assert Controller._gpu_ceiling(state, SPEC, view(2, 1), now_s=1000.0) == 0
    assert state.gpu_ceiling == 2
    assert state.gpu_ceiling_until_s == 1300.0  # max(300 s, 10 x 30 s)

    # The Pending pod is gone after a scale-down to 2: still no room.
    assert Controller._gpu_ceiling(state, SPEC, view(2, 0), now_s=1100.0) == 0
    # One more replica dropped: one GPU is known to fit again.
    assert Controller._gpu_ceiling(state, SPEC, view(1, 0), now_s=1200.0) == 1


def test_ceiling_expires_and_scale_up_may_try_again():
    state = ControllerState(tier_replicas={"small": 3})
    Controller._gpu_ceiling(state, SPEC, view(2, 1), now_s=1000.0)

    assert Controller._gpu_ceiling(state, SPEC, view(2, 0), now_s=1299.0) == 0
    assert Controller._gpu_ceiling(state, SPEC, view(2, 0), now_s=1300.0) is None
    assert state.gpu_ceiling is None
    assert state.gpu_ceiling_until_s is None


def test_ceiling_round_trips_through_the_state_configmap():
    state = ControllerState(tier_replicas={"small": 3})
    Controller._gpu_ceiling(state, SPEC, view(2, 1), now_s=1000.0)

    loaded = ControllerState.from_json(state.to_json())

    assert (loaded.gpu_ceiling, loaded.gpu_ceiling_until_s) == (2, 1300.0)


def test_no_free_gpus_blocks_guard():
    policy = SPEC.policy
    state = PolicyState.initial(policy)
    decision = None
    for step in range(policy.breach_intervals + 2):
        obs = Observation(at_s=1000.0 + 30.0 * step, tier="small", replicas=2, ready_replicas=2,
                          gpus_allocated=2, requests_per_second=30.0, latency_p95_ms=500.0,
                          ctr_adjusted=0.05, metrics_at_s=1000.0 + 30.0 * step, gpus_free=0)
        decision, state = decide(policy, state, obs)

    assert decision.action.label != "scale-up"
    assert "scale-up" in decision.masked

