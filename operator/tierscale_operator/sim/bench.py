"""Benchmark the Q-learning policy against baselines and the oracle, side by side in one run.

    python -m tierscale_operator.sim.bench --out reports/bench-policy.json --plot reports/bench-policy.png

Steps:
1. Tune the HPA-like rule (p95 target x tier) and the KEDA-like rule (requests per second per
   replica x tier) by grid search on training traces, keeping the setting with the best utility.
2. Solve the oracle on each test trace.
3. Run every policy on the same test traces in one batch. The policies: static largest (largest
   tier at max replicas), static smallest (smallest tier at max replicas), the tuned HPA-like and
   KEDA-like rules, and the one-step optimiser. Then the Q-learning policy from the shipped
   pretrained table in mode "learn", in mode "act" (frozen, greedy) and in mode "learn" with a
   constant learning rate of 0.1, and the oracle's plan.
4. Report totals per policy, the goal ratios, and where the policy loses utility against the
   oracle by hour of day.

Training traces use the hour-of-week shape of the first half of the MovieLens-100K timestamps,
test traces that of the second half, with other seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.policy.core import TableState
from tierscale_operator.policy.state import QTable
from tierscale_operator.sim.controllers import (
    OneStepOptimiser,
    QLearningController,
    ReplayController,
    StaticController,
    ThresholdController,
    max_replicas_in_budget,
)
from tierscale_operator.sim.env import ClusterEnv
from tierscale_operator.sim.oracle import build_graph, solve
from tierscale_operator.sim.pretrain import DEFAULT_TABLE_PATH
from tierscale_operator.sim.runner import Recording, Scores, run
from tierscale_operator.sim.scenario import Scenario, default_scenario, movielens_shapes
from tierscale_operator.sim.traffic import Trace, WeeklyShape, make_trace

logger = logging.getLogger(__name__)

HPA_TARGETS_MS = (15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0)
KEDA_TARGET_UTILISATION = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
INITIAL_TIER = 1
INITIAL_REPLICAS = 2
GOALS = {
    "utility_vs_oracle": (">=", 0.95),
    "gpu_hours_vs_tuned_hpa": ("<=", 0.67),
    "slo_violations_vs_tuned_hpa": ("<=", 0.35),
    "ctr_vs_static_largest": (">=", 0.99),
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    days: float = 28.0
    train_traces: int = 1
    test_traces: int = 2
    train_seed: int = 1000
    test_seed: int = 2000
    run_seed: int = 3


def tune_threshold_rules(env: ClusterEnv, config: PolicyConfig, traces: list[Trace], seed: int) -> dict[str, Any]:
    """Grid-search both rules on the training traces; returns the best setting of each and the grid."""
    tiers = range(config.n_tiers)
    hpa_grid = [(tier, target) for tier in tiers for target in HPA_TARGETS_MS]
    capacity = env.latency.capacity_rps
    keda_grid = [(tier, float(round(capacity[tier] * u, 1))) for tier in tiers for u in KEDA_TARGET_UTILISATION]
    hpa = ThresholdController("hpa", config, "latency", np.array([g[0] for g in hpa_grid]),
                              np.array([g[1] for g in hpa_grid]))
    keda = ThresholdController("keda", config, "rate", np.array([g[0] for g in keda_grid]),
                               np.array([g[1] for g in keda_grid]))
    # A controller owns one block of rows, so the traces run one after the other.
    totals_hpa = np.zeros(len(hpa_grid))
    totals_keda = np.zeros(len(keda_grid))
    for trace in traces:
        scores, _ = run(env, config, [trace], [(hpa, [0] * len(hpa_grid)), (keda, [0] * len(keda_grid))],
                        initial_tier=INITIAL_TIER, initial_replicas=INITIAL_REPLICAS, seed=seed)
        totals_hpa += scores.utility[: len(hpa_grid)]
        totals_keda += scores.utility[len(hpa_grid):]
    best_hpa = hpa_grid[int(totals_hpa.argmax())]
    best_keda = keda_grid[int(totals_keda.argmax())]
    names = [t.name for t in config.tiers]
    return {
        "hpa": {"tier": best_hpa[0], "target_p95_ms": best_hpa[1]},
        "keda": {"tier": best_keda[0], "target_rps_per_replica": best_keda[1]},
        "grid": {
            "hpa": [{"tier": names[t], "target_p95_ms": v, "utility": float(u)}
                    for (t, v), u in zip(hpa_grid, totals_hpa, strict=True)],
            "keda": [{"tier": names[t], "target_rps_per_replica": v, "utility": float(u)}
                     for (t, v), u in zip(keda_grid, totals_keda, strict=True)],
        },
    }


def evaluate(scenario: Scenario, env: ClusterEnv, table: QTable, tuned: dict[str, Any], test: list[Trace],
             seed: int, record: bool = True) -> dict[str, Any]:
    """Run every policy on the test traces in one batch; returns summaries, oracle values and recordings."""
    config = scenario.policy
    n = len(test)
    largest = config.n_tiers - 1
    tables = TableState(q=table.q[None].copy(), visits=table.visits[None].copy(), updates=np.zeros(1, dtype=np.int64))

    graph = build_graph(env, config, INITIAL_TIER, INITIAL_REPLICAS)
    plans = [solve(env, config, graph, trace) for trace in test]
    hpa, keda = tuned["hpa"], tuned["keda"]
    policies = [
        StaticController("static-largest", config, largest, int(max_replicas_in_budget(config, np.array([largest]))[0])),
        StaticController("static-smallest", config, 0, int(max_replicas_in_budget(config, np.array([0]))[0])),
        ThresholdController("hpa-tuned", config, "latency", np.full(n, hpa["tier"]), np.full(n, hpa["target_p95_ms"])),
        ThresholdController("keda-tuned", config, "rate", np.full(n, keda["tier"]),
                            np.full(n, keda["target_rps_per_replica"])),
        OneStepOptimiser("one-step-optimiser", config, env.latency, env.clicks),
        QLearningController("q-learning", config, tables, learn=True, seed=seed),
        QLearningController("q-learning-frozen", config, tables, learn=False, epsilon=0.0, seed=seed),
        QLearningController("q-learning-rate-0.1", config.replace(learning_rate=0.1, learning_rate_schedule="constant"),
                            tables, learn=True, seed=seed),
        ReplayController("oracle", np.stack([p.target_tier for p in plans]), np.stack([p.target_replicas for p in plans])),
    ]
    blocks = [(policy, list(range(n))) for policy in policies]
    record_rows = tuple(i * n for i in range(len(policies))) if record else ()
    started = time.perf_counter()
    scores, recordings = run(env, config, test, blocks, initial_tier=INITIAL_TIER, initial_replicas=INITIAL_REPLICAS,
                             seed=seed, record_rows=record_rows)
    elapsed = time.perf_counter() - started

    names = tuple(t.name for t in config.tiers)
    summaries = {}
    for k, policy in enumerate(policies):
        rows = slice(k * n, (k + 1) * n)
        summaries[policy.name] = scores.rows(rows).summary(names)
        if isinstance(policy, QLearningController):
            days = scores.days
            summaries[policy.name]["overrides_per_day"] = {
                key: float(value.mean() / days) for key, value in policy.counts.items()
            }
    oracle_rows = slice((len(policies) - 1) * n, len(policies) * n)
    replay_matches = np.allclose(scores.utility[oracle_rows], [p.value for p in plans], rtol=1e-9, atol=1e-6)
    return {
        "summaries": summaries,
        "oracle": {"values": [p.value for p in plans], "nodes": plans[0].n_nodes, "replay_matches_plan": bool(replay_matches)},
        "recordings": {policies[i // n].name: recordings[i] for i in record_rows},
        "scores": scores,
        "policy_names": [p.name for p in policies],
        "run_seconds": elapsed,
        "decision_steps": scores.intervals * scores.utility.shape[0],
    }


def measure_speed(scenario: Scenario, env: ClusterEnv, table: QTable, shape: WeeklyShape, *, rows: int = 512,
                  days: float = 0.5, seed: int = 0) -> dict[str, float]:
    """Time the policy alone (mode learn, one table per row) on `rows` environments for `days`."""
    config = scenario.policy
    traffic = dataclasses.replace(scenario.traffic, days=days)
    traces = [make_trace(shape, traffic, seed + i) for i in range(8)]
    tables = TableState(q=table.q[None].copy(), visits=table.visits[None].copy(), updates=np.zeros(1, dtype=np.int64))
    controller = QLearningController("speed", config, tables, learn=True, seed=seed)
    started = time.perf_counter()
    scores, _ = run(env, config, traces, [(controller, [i % len(traces) for i in range(rows)])],
                    initial_tier=INITIAL_TIER, initial_replicas=INITIAL_REPLICAS, seed=seed)
    seconds = time.perf_counter() - started
    steps = scores.intervals * rows
    return {"rows": rows, "decision_steps": steps, "seconds": seconds, "steps_per_second": steps / seconds}


def goal_ratios(summaries: dict[str, Any], ours_name: str = "q-learning") -> dict[str, Any]:
    """Compute the goal ratios of `ours_name` against the oracle, the tuned HPA-like rule and static largest."""
    ours = summaries[ours_name]
    hpa = summaries["hpa-tuned"]
    ratios = {
        "utility_vs_oracle": ours["utility"] / summaries["oracle"]["utility"],
        "gpu_hours_vs_tuned_hpa": ours["gpu_hours"] / hpa["gpu_hours"],
        "slo_violations_vs_tuned_hpa": _ratio(ours["slo_violation_share"], hpa["slo_violation_share"]),
        "ctr_vs_static_largest": ours["mean_ctr"] / summaries["static-largest"]["mean_ctr"],
    }
    result = {}
    for name, value in ratios.items():
        op, goal = GOALS[name]
        if value is None:
            met = None
        elif op == ">=":
            met = value >= goal
        else:
            met = value <= goal
        result[name] = {"value": value, "goal": f"{op} {goal}", "met": met}
    result["gpu_hours_vs_tuned_hpa"]["slo_attainment_at_least_tuned_hpa"] = (
        ours["slo_violation_share"] <= hpa["slo_violation_share"]
    )
    return result


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0:
        return None if numerator > 0 else 1.0
    return numerator / denominator


def loss_by_hour(scores: Scores, recordings: dict[str, Recording], trace: Trace) -> list[dict[str, float]]:
    """Utility per hour of day for the policy and the oracle on the first test trace."""
    del scores
    rows = []
    hours = np.floor(trace.hour_of_day).astype(np.int64)
    for name in ("q-learning", "oracle"):
        utility = np.asarray(recordings[name].utility)
        rows.append(np.bincount(hours, weights=utility, minlength=24) / trace.days)
    return [{"hour": h, "q_learning": float(rows[0][h]), "oracle": float(rows[1][h]),
             "gap": float(rows[1][h] - rows[0][h])} for h in range(24)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=BenchConfig.days, help="simulated days per trace")
    parser.add_argument("--test-traces", type=int, default=BenchConfig.test_traces, help="test traces (seeds)")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE_PATH, help="pretrained Q-table file")
    parser.add_argument("--profile", default=None, help="tier profile YAML (default: the one shipped)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-policy.json"), help="JSON report to write")
    parser.add_argument("--plot", type=Path, default=Path("reports/bench-policy.png"), help="PNG plot to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    bench = BenchConfig(days=args.days, test_traces=args.test_traces)

    scenario = default_scenario(args.profile, days=bench.days)
    config = scenario.policy
    table = QTable.from_json(args.table.read_text(), config)
    train_shape, test_shape = movielens_shapes()
    env = scenario.env()
    train = [make_trace(train_shape, scenario.traffic, bench.train_seed + i) for i in range(bench.train_traces)]
    test = [make_trace(test_shape, scenario.traffic, bench.test_seed + i) for i in range(bench.test_traces)]

    logger.info("tuning the HPA-like and KEDA-like rules on %d training trace(s) of %.0f days", len(train), bench.days)
    tuned = tune_threshold_rules(env, config, train, bench.run_seed)
    logger.info("tuned: %s", {k: v for k, v in tuned.items() if k != "grid"})
    logger.info("running every policy on %d test trace(s)", len(test))
    result = evaluate(scenario, env, table, tuned, test, bench.run_seed)
    summaries = result["summaries"]
    report = {
        "command": "make bench-policy",
        "machine": {"python": platform.python_version(), "processor": platform.machine(),
                    "cpus_note": "timings are wall-clock on a shared machine"},
        "scenario": _scenario_report(scenario, train_shape, test_shape, bench),
        "tuned_rules": tuned,
        "policies": summaries,
        "ratios": goal_ratios(summaries),
        "ratios_frozen": goal_ratios(summaries, "q-learning-frozen"),
        "oracle": result["oracle"],
        "loss_by_hour_of_day": loss_by_hour(result["scores"], result["recordings"], test[0]),
        "simulator_speed": {
            "policy_alone": measure_speed(scenario, env, table, test_shape),
            "benchmark_run": {"decision_steps": result["decision_steps"], "seconds": result["run_seconds"],
                              "steps_per_second": result["decision_steps"] / result["run_seconds"],
                              "rows": int(result["scores"].utility.shape[0])},
            "note": "environment and policy steps together, wall-clock, on a machine shared with other jobs",
        },
        "pretrained_table": {"path": str(args.table), "metadata": table.metadata},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    logger.info("wrote %s", args.out)

    from tierscale_operator.sim.plot import plot_bench

    plot_bench(report, result["recordings"], test[0], config, args.plot)
    logger.info("wrote %s", args.plot)
    for name, summary in summaries.items():
        logger.info("%-20s utility/day %8.1f  GPU-h/day %6.1f  SLO viol %5.2f%%  CTR %.4f  scale/day %6.1f  tier/day %5.1f",
                    name, summary["utility_per_day"], summary["gpu_hours_per_day"],
                    100 * summary["slo_violation_share"], summary["mean_ctr"], summary["scale_changes_per_day"],
                    summary["tier_changes_per_day"])
    for name, ratio in report["ratios"].items():
        logger.info("%-28s %s (goal %s)", name, ratio["value"], ratio["goal"])


def _scenario_report(scenario: Scenario, train_shape: WeeklyShape, test_shape: WeeklyShape,
                     bench: BenchConfig) -> dict[str, Any]:
    config = scenario.policy
    return {
        "profile": {"path": scenario.profile.path, "status": scenario.profile.status,
                    "description": scenario.profile.description},
        "tiers": [{"name": t.name, "service_ms_mean": t.service_ms_mean, "service_ms_cv": t.service_ms_cv,
                   "capacity_rps_per_replica": t.capacity_rps_per_replica, "ndcg_at_10": t.ndcg_at_10,
                   "hr_at_10": t.hr_at_10} for t in scenario.profile.tiers],
        "ctr_by_tier": scenario.click_model().ctr_by_tier.tolist(),
        "objective": {"click_value": config.click_value, "gpu_hour_cost": config.gpu_hour_cost,
                      "slo_penalty_per_interval": config.slo_penalty, "slo_latency_p95_ms": config.slo_latency_p95_ms},
        "replicas": {"min": config.min_replicas, "max": config.max_replicas, "gpu_budget": config.gpu_budget,
                     "gpu_capacity": scenario.cluster.gpu_capacity},
        "interval_s": config.interval_s,
        "cooldown_s": config.cooldown_s,
        "warmup_s": scenario.profile.warmup_s if scenario.cluster.warmup_s is None else scenario.cluster.warmup_s,
        "traffic": dataclasses.asdict(scenario.traffic),
        "train_shape": train_shape.source,
        "test_shape": test_shape.source,
        "days_per_trace": bench.days,
        "train_traces": bench.train_traces,
        "test_traces": bench.test_traces,
        "seeds": {"train": bench.train_seed, "test": bench.test_seed, "run": bench.run_seed},
    }


if __name__ == "__main__":
    main()
