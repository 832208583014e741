"""The oracle: the best utility achievable on a trace whose future is known in full.

Backward dynamic programming over the policy's own action set and masks. A node is the
environment's pod state plus the two timers the mask reads: settled ticks, and ticks since the last
change capped at the cooldown. The environment's own `apply` and `advance` compute the transition
of each (node, action) pair once. Its reward at tick t depends only on the configuration that
serves (tier, ready replicas, GPUs billed) and on the trace at t. The plan is then replayed through
the ordinary runner, so the oracle is scored by the same code as every controller.

The oracle ignores what the policy cannot control or see coming: missing metrics (it never holds
for them) and guardrails (it needs none). Its value is therefore an upper bound for the policy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tierscale_operator.policy.actions import (
    CHANGE_ACTIONS,
    N_ACTIONS,
    apply_action,
    cluster_mask_reasons,
    structural_mask_reasons,
    timer_mask_reasons,
)
from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import SETTLED_FOR_CREDIT
from tierscale_operator.sim.env import ClusterEnv, EnvState
from tierscale_operator.sim.traffic import Trace


@dataclasses.dataclass
class TransitionGraph:
    """Nodes reachable from the initial state and, per (node, action), the next node and configuration."""

    env_matrix: np.ndarray  # (n_nodes, 9) EnvState fields
    settled_carried: np.ndarray  # (n_nodes,)
    since_change: np.ndarray  # (n_nodes,)
    next_node: np.ndarray  # (n_nodes, N_ACTIONS), -1 where the action is masked
    configuration: np.ndarray  # (n_nodes, N_ACTIONS) index into configurations
    configurations: np.ndarray  # (n_configurations, 3): serving tier, ready replicas, GPUs billed
    target_tier: np.ndarray  # (n_nodes, N_ACTIONS)
    target_replicas: np.ndarray  # (n_nodes, N_ACTIONS)

    @property
    def n_nodes(self) -> int:
        return int(self.env_matrix.shape[0])


def build_graph(env: ClusterEnv, config: PolicyConfig, initial_tier: int, initial_replicas: int) -> TransitionGraph:
    """Enumerate the nodes reachable under the masked actions, breadth first."""
    cooldown_ticks = int(math.ceil(config.cooldown_s / config.interval_s - 1e-9))
    first = EnvState.settled(np.array([initial_tier]), np.array([initial_replicas]))
    keys: dict[bytes, int] = {}
    env_rows: list[np.ndarray] = []
    settled_rows: list[int] = []
    since_rows: list[int] = []

    def node_of(env_row: np.ndarray, settled_carried: int, since: int) -> int:
        key = np.concatenate([env_row, [settled_carried, since]]).astype(np.int64).tobytes()
        index = keys.get(key)
        if index is None:
            index = len(env_rows)
            keys[key] = index
            env_rows.append(env_row.astype(np.int64))
            settled_rows.append(settled_carried)
            since_rows.append(since)
        return index

    node_of(first.as_matrix()[0], SETTLED_FOR_CREDIT, cooldown_ticks)
    next_node: list[np.ndarray] = []
    configuration_keys: dict[tuple[int, int, int], int] = {}
    configuration: list[np.ndarray] = []
    target_tier: list[np.ndarray] = []
    target_replicas: list[np.ndarray] = []

    done = 0
    while done < len(env_rows):
        batch = slice(done, len(env_rows))
        matrix = np.stack(env_rows[batch])
        settled_carried = np.array(settled_rows[batch])
        since = np.array(since_rows[batch])
        done = len(env_rows)
        state = EnvState.from_matrix(matrix)
        mask = _mask(env, config, state, settled_carried, since, cooldown_ticks)
        settled_now = _settled_ticks(state, settled_carried)
        desired = env.desired_replicas(state)
        for row in range(matrix.shape[0]):
            nexts = np.full(N_ACTIONS, -1, dtype=np.int64)
            configs = np.full(N_ACTIONS, -1, dtype=np.int64)
            tiers = np.full(N_ACTIONS, -1, dtype=np.int64)
            replicas = np.full(N_ACTIONS, -1, dtype=np.int64)
            allowed = np.flatnonzero(mask[row] == 0)
            single = EnvState.from_matrix(np.repeat(matrix[row:row + 1], allowed.shape[0], axis=0))
            tier_t, replicas_t = apply_action(single.tier, np.full(allowed.shape[0], desired[row]), allowed)
            applied = env.apply(single, tier_t, replicas_t)
            gpus = env.used_gpus(applied)
            advanced = env.advance(applied).as_matrix()
            for k, action in enumerate(allowed):
                change = action in CHANGE_ACTIONS
                key = (int(applied.tier[k]), int(applied.ready[k]), int(gpus[k]))
                configs[action] = configuration_keys.setdefault(key, len(configuration_keys))
                nexts[action] = node_of(
                    advanced[k],
                    0 if change else int(settled_now[row]),
                    1 if change else min(int(since[row]) + 1, cooldown_ticks),
                )
                tiers[action] = tier_t[k]
                replicas[action] = replicas_t[k]
            next_node.append(nexts)
            configuration.append(configs)
            target_tier.append(tiers)
            target_replicas.append(replicas)

    configurations = np.array(sorted(configuration_keys, key=configuration_keys.get), dtype=np.int64)
    return TransitionGraph(
        env_matrix=np.stack(env_rows),
        settled_carried=np.array(settled_rows),
        since_change=np.array(since_rows),
        next_node=np.stack(next_node),
        configuration=np.stack(configuration),
        configurations=configurations.reshape(-1, 3),
        target_tier=np.stack(target_tier),
        target_replicas=np.stack(target_replicas),
    )


def _settled_ticks(state: EnvState, settled_carried: np.ndarray) -> np.ndarray:
    settled = (state.starting == 0) & (state.roll_tier < 0)
    return np.where(settled, np.minimum(settled_carried + 1, SETTLED_FOR_CREDIT), 0)


def _mask(env: ClusterEnv, config: PolicyConfig, state: EnvState, settled_carried: np.ndarray, since: np.ndarray,
          cooldown_ticks: int) -> np.ndarray:
    """Compute the policy's mask for these nodes with the functions `core.step_batch` uses."""
    desired = env.desired_replicas(state)
    gpus_free = np.maximum(env.config.gpu_capacity - env.used_gpus(state), 0)
    settled_ticks = _settled_ticks(state, settled_carried)
    in_cooldown = since * config.interval_s < config.cooldown_s
    return (
        structural_mask_reasons(config, state.tier, desired)
        | cluster_mask_reasons(config, state.tier, state.pending, gpus_free)
        | timer_mask_reasons(settled_ticks >= SETTLED_FOR_CREDIT, in_cooldown)
    )


def configuration_rewards(env: ClusterEnv, config: PolicyConfig, graph: TransitionGraph, trace: Trace) -> np.ndarray:
    """Reward of every configuration at every tick, shape (T, n_configurations)."""
    pairs, pair_index = np.unique(graph.configurations[:, :2], axis=0, return_inverse=True)
    n_ticks = trace.n_intervals
    value = np.empty((n_ticks, pairs.shape[0]))
    arrivals = trace.arrival_rps
    for k, (tier, ready) in enumerate(pairs):
        tiers = np.full(n_ticks, tier)
        p95, served = env.latency.evaluate(tiers, np.full(n_ticks, ready), arrivals)
        clicks = served * config.interval_s * env.clicks.ctr(tiers, trace.hour_of_day)
        penalty = config.slo_penalty * (p95 > config.slo_latency_p95_ms)
        value[:, k] = config.click_value * clicks - penalty
    gpu_cost = config.gpu_hour_cost * graph.configurations[:, 2] * config.interval_s / 3600.0
    return value[:, pair_index.ravel()] - gpu_cost[None, :]


@dataclasses.dataclass
class OraclePlan:
    value: float
    target_tier: np.ndarray  # (T,)
    target_replicas: np.ndarray  # (T,)
    n_nodes: int


def solve(env: ClusterEnv, config: PolicyConfig, graph: TransitionGraph, trace: Trace) -> OraclePlan:
    """Backward induction over the trace, then a forward pass from the initial node (node 0)."""
    rewards = configuration_rewards(env, config, graph, trace)
    n_ticks = rewards.shape[0]
    allowed = graph.next_node >= 0
    next_node = np.where(allowed, graph.next_node, 0)
    configuration = np.where(allowed, graph.configuration, 0)
    choice = np.empty((n_ticks, graph.n_nodes), dtype=np.uint8)
    value = np.zeros(graph.n_nodes)
    for t in range(n_ticks - 1, -1, -1):
        q = np.where(allowed, rewards[t][configuration] + value[next_node], -np.inf)
        best = q.argmax(axis=1)
        choice[t] = best
        value = q[np.arange(graph.n_nodes), best]

    node = 0
    target_tier = np.empty(n_ticks, dtype=np.int64)
    target_replicas = np.empty(n_ticks, dtype=np.int64)
    for t in range(n_ticks):
        action = choice[t, node]
        target_tier[t] = graph.target_tier[node, action]
        target_replicas[t] = graph.target_replicas[node, action]
        node = graph.next_node[node, action]
    return OraclePlan(value=float(value[0]), target_tier=target_tier, target_replicas=target_replicas,
                      n_nodes=graph.n_nodes)
