"""Pretrain the initial Q-table in the simulator and write it as a Q-table file.

Method: Q-learning with experience replay run to convergence, in rounds.

1. Collect: many environments act in parallel through `core.step_batch`, the step the operator
   runs, epsilon-greedily on the current table. They run one-day episodes from random starting
   configurations on fresh training traces: the hour-of-week shape of the first half of the
   MovieLens-100K timestamps, a random start hour, and the peak rate scaled per trace. Every
   credited transition (s, a, R, k, s', actions allowed in s') is kept, aggregated by count.
   R is the discounted return credited over the k intervals.
2. Replay: sweep all transitions collected so far with the same target as the online update,
   R + discount^k * max Q(s', a'), until the table stops changing. This is the fixed point that
   incremental Q-learning approaches on the same data, reached without its step-size noise.

Entries never visited are set just below the worst visited action of their state, so the greedy
policy does not pick an action the simulator never tried; states never visited stay at zero.

    python -m tierscale_operator.sim.pretrain --seed 7 --out operator/tierscale_operator/policy/data/pretrained-qtable.json

The same seed, arguments and profile give the same table, byte for byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from tierscale_operator.policy.actions import N_ACTIONS, structural_mask_reasons
from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import BatchObservation, Credit, TableState
from tierscale_operator.policy.state import QTable
from tierscale_operator.sim.controllers import QLearningController
from tierscale_operator.sim.env import ClusterEnv
from tierscale_operator.sim.runner import Scores, run
from tierscale_operator.sim.scenario import Scenario, default_scenario, movielens_shapes
from tierscale_operator.sim.traffic import HOURS_PER_WEEK, WeeklyShape, make_trace

logger = logging.getLogger(__name__)

DEFAULT_TABLE_PATH = Path(__file__).resolve().parents[1] / "policy" / "data" / "pretrained-qtable.json"
MAX_ELAPSED = 63  # intervals; longer gaps between a decision and its credit are clipped in the replay key


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    seed: int = 7
    rounds: int = 4
    environments: int = 192
    traces_per_round: int = 32
    days_per_round: float = 7.0
    episode_days: float = 1.0
    peak_scale: tuple[float, float] = (0.7, 1.3)
    epsilon: tuple[float, ...] = (1.0, 0.3, 0.2, 0.1)  # per round; the last value repeats
    max_sweeps: int = 5000
    tolerance: float = 1e-7
    # The behaviour policy also learns online between replays, at this constant rate.
    collection_learning_rate: float = 0.1


class ReplayBuffer:
    """Credited transitions aggregated by (s, a, s', k, allowed actions in s') with counts."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.reward_sum = np.zeros(config.n_states * N_ACTIONS)
        self.visits = np.zeros(config.n_states * N_ACTIONS, dtype=np.int64)
        self._pending: list[np.ndarray] = []

    def add(self, state: np.ndarray, action: np.ndarray, discounted_return: np.ndarray, elapsed: np.ndarray,
            next_state: np.ndarray, allowed_bits: np.ndarray) -> None:
        entry = state * N_ACTIONS + action
        np.add.at(self.reward_sum, entry, discounted_return)
        np.add.at(self.visits, entry, 1)
        key = ((entry * self.config.n_states + next_state) * (MAX_ELAPSED + 1) + np.minimum(elapsed, MAX_ELAPSED))
        self._pending.append(key * 32 + allowed_bits)
        if sum(k.shape[0] for k in self._pending) > 2_000_000:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *self._pending])
        counts = np.concatenate([self.counts, np.ones(sum(k.shape[0] for k in self._pending), dtype=np.int64)])
        self._pending = []
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)

    def solve(self, q: np.ndarray, discount: float, max_sweeps: int, tolerance: float) -> tuple[np.ndarray, int]:
        """Sweep the replayed targets until Q changes by less than `tolerance`; returns (Q, sweeps)."""
        self._merge()
        allowed_bits = self.keys % 32
        rest = self.keys // 32
        elapsed = rest % (MAX_ELAPSED + 1)
        rest //= MAX_ELAPSED + 1
        next_state = rest % self.config.n_states
        entry = rest // self.config.n_states
        allowed = ((allowed_bits[:, None] >> np.arange(N_ACTIONS)) & 1).astype(bool)
        weight = self.counts * discount**elapsed
        visited = self.visits > 0
        mean_reward = np.divide(self.reward_sum, self.visits, out=np.zeros_like(self.reward_sum), where=visited)

        flat = q.reshape(-1).copy()
        sweeps = 0
        for sweeps in range(1, max_sweeps + 1):
            best_next = np.where(allowed, flat.reshape(-1, N_ACTIONS)[next_state], -np.inf).max(axis=1)
            bootstrap = np.bincount(entry, weights=weight * best_next, minlength=flat.shape[0])
            updated = np.where(visited, mean_reward + np.divide(bootstrap, np.maximum(self.visits, 1)), flat)
            change = float(np.abs(updated - flat).max())
            flat = updated
            if change < tolerance:
                break
        return flat.reshape(q.shape), sweeps


def fill_unvisited(q: np.ndarray, visits: np.ndarray) -> np.ndarray:
    """Set unvisited actions of visited states just below the state's worst visited action."""
    q = q.copy()
    visited = visits > 0
    seen_states = visited.any(axis=1)
    worst = np.where(visited, q, np.inf).min(axis=1)
    worst = np.where(seen_states, worst, 0.0)
    floor = worst - np.maximum(np.abs(worst) * 0.01, 1e-3)
    fill = seen_states[:, None] & ~visited
    q[fill] = np.broadcast_to(floor[:, None], q.shape)[fill]
    return q


class _Collector(QLearningController):
    """The policy's own step, recording every credited transition into a replay buffer."""

    def __init__(self, buffer: ReplayBuffer, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.buffer = buffer

    def act(self, obs: BatchObservation, tick: int, hour_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        decision = self.step(obs, tick)
        rows = decision.credit == Credit.CREDITED
        if rows.any():
            reasons = structural_mask_reasons(self.config, obs.tier[rows], obs.replicas[rows])
            allowed_bits = ((reasons == 0) * (1 << np.arange(N_ACTIONS))).sum(axis=1)
            self.buffer.add(decision.credited_state[rows], decision.credited_action[rows], decision.credited_return[rows],
                            decision.credited_elapsed[rows], decision.state_index[rows], allowed_bits)
        return decision.target_tier, decision.target_replicas


def _collect_episode(scenario: Scenario, env: ClusterEnv, shape: WeeklyShape, settings: PretrainConfig,
                     buffer: ReplayBuffer, tables: TableState, epsilon: float, rng: np.random.Generator) -> Scores:
    """Run one episode from random configurations on fresh traces, recording into `buffer`."""
    config = scenario.policy
    traces = []
    for _ in range(settings.traces_per_round):
        traffic = dataclasses.replace(
            scenario.traffic,
            days=settings.episode_days,
            start_hour_of_week=float(rng.uniform(0, HOURS_PER_WEEK)),
            peak_rps=scenario.traffic.peak_rps * float(rng.uniform(*settings.peak_scale)),
        )
        traces.append(make_trace(shape, traffic, int(rng.integers(2**31))))
    trace_index = [i % settings.traces_per_round for i in range(settings.environments)]
    collector = _Collector(buffer, "pretrain", config, tables, learn=True, epsilon=epsilon,
                           seed=int(rng.integers(2**31)), shared_table=True)
    gpus = np.asarray(config.gpus_per_replica())
    initial_tier = rng.integers(0, config.n_tiers, settings.environments)
    upper = np.minimum(config.max_replicas, config.gpu_budget // gpus[initial_tier])
    initial_replicas = rng.integers(config.min_replicas, upper + 1)
    scores, _ = run(env, config, traces, [(collector, trace_index)], initial_tier=initial_tier,
                    initial_replicas=initial_replicas, seed=int(rng.integers(2**31)))
    return scores


def pretrain(scenario: Scenario, shape: WeeklyShape, settings: PretrainConfig) -> tuple[QTable, dict]:
    """Train one table in rounds of collection and replay; returns it and run statistics."""
    # Collection explores every allowed action: the margin protects a live service, not a simulation.
    config = scenario.policy.replace(exploration_margin_penalties=None, learning_rate=settings.collection_learning_rate,
                                     learning_rate_schedule="constant")
    scenario = dataclasses.replace(scenario, policy=config)
    env = scenario.env()
    rng = np.random.default_rng(settings.seed)
    buffer = ReplayBuffer(config)
    q = np.zeros((config.n_states, N_ACTIONS))
    started = time.perf_counter()
    steps = 0
    sweeps = 0
    for round_index in range(settings.rounds):
        epsilon = settings.epsilon[min(round_index, len(settings.epsilon) - 1)]
        tables = TableState(q=q[None].copy(), visits=np.zeros((1, *q.shape), dtype=np.int64),
                            updates=np.zeros(1, dtype=np.int64))
        utility, violations, intervals = 0.0, 0.0, 0
        episodes = max(1, int(round(settings.days_per_round / settings.episode_days)))
        for _ in range(episodes):
            scores = _collect_episode(scenario, env, shape, settings, buffer, tables, epsilon, rng)
            steps += scores.intervals * settings.environments
            utility += float(scores.utility.mean())
            violations += float(scores.violations.mean())
            intervals += scores.intervals

        q, round_sweeps = buffer.solve(q, config.discount, settings.max_sweeps, settings.tolerance)
        sweeps += round_sweeps
        logger.info("round %d/%d: epsilon %.2f, utility per env-day %.1f, SLO violations %.2f%%, "
                    "%d transitions (%d distinct), %d replay sweeps",
                    round_index + 1, settings.rounds, epsilon, utility * 86400 / (intervals * config.interval_s),
                    100 * violations / intervals, int(buffer.visits.sum()), buffer.keys.shape[0], round_sweeps)

    visits = buffer.visits.reshape(q.shape)
    q = fill_unvisited(q, visits)
    elapsed = time.perf_counter() - started
    metadata = {
        "trained_by": "python -m tierscale_operator.sim.pretrain",
        "method": "Q-learning with experience replay to convergence, in rounds of epsilon-greedy collection",
        "settings": dataclasses.asdict(settings),
        "profile": {"path": Path(scenario.profile.path).name, "status": scenario.profile.status},
        "objective": {"click_value": config.click_value, "gpu_hour_cost": config.gpu_hour_cost,
                      "slo_penalty": config.slo_penalty, "slo_latency_p95_ms": config.slo_latency_p95_ms,
                      "interval_s": config.interval_s, "discount": config.discount},
        "traffic_shape": shape.source,
        "transitions": int(buffer.visits.sum()),
        "visited_entries": int((visits > 0).sum()),
        "replay_sweeps": sweeps,
        "decision_steps": steps,
    }
    table = QTable(fingerprint=config.table_fingerprint(), q=q, visits=visits, metadata=metadata)
    return table, {"seconds": elapsed, "decision_steps": steps, "steps_per_second": steps / elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=PretrainConfig.seed, help="random seed (traces, exploration)")
    parser.add_argument("--rounds", type=int, default=PretrainConfig.rounds, help="collection and replay rounds")
    parser.add_argument("--environments", type=int, default=PretrainConfig.environments,
                        help="environments collecting in parallel")
    parser.add_argument("--days", type=float, default=PretrainConfig.days_per_round, help="simulated days per round")
    parser.add_argument("--profile", default=None, help="tier profile YAML (default: the one shipped)")
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE_PATH, help="Q-table file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    scenario = default_scenario(args.profile)
    train_shape, _ = movielens_shapes()
    settings = PretrainConfig(seed=args.seed, rounds=args.rounds, environments=args.environments,
                              days_per_round=args.days)
    table, stats = pretrain(scenario, train_shape, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table.to_json())
    logger.info("wrote %s: %d decision steps in %.0f s (%.0f steps/s)", args.out, stats["decision_steps"],
                stats["seconds"], stats["steps_per_second"])


if __name__ == "__main__":
    main()
