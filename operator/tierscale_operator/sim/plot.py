"""The benchmark figure: totals per policy side by side, and two days of decisions on one trace.

matplotlib comes with the `dev` extra; the operator image does not need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tierscale_operator.policy.config import PolicyConfig
from tierscale_operator.sim.runner import Recording
from tierscale_operator.sim.traffic import Trace

TIMELINE_POLICIES = ("q-learning", "oracle", "hpa-tuned", "one-step-optimiser")


def plot_bench(report: dict[str, Any], recordings: dict[str, Recording], trace: Trace, config: PolicyConfig,
               path: Path, days: float = 2.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = report["policies"]
    names = list(policies)
    figure = plt.figure(figsize=(15, 11))
    grid = figure.add_gridspec(3, 4, height_ratios=[1.0, 1.1, 1.1], hspace=0.45, wspace=0.35)

    bars = [
        ("utility_per_day", "utility per day"),
        ("gpu_hours_per_day", "GPU-hours per day"),
        ("slo_violation_share", "share of intervals over the SLO"),
        ("mean_ctr", "mean CTR"),
    ]
    colours = []
    for name in names:
        if name.startswith("q-learning"):
            colours.append("#4c72b0")
        elif name == "oracle":
            colours.append("#55a868")
        else:
            colours.append("#8c8c8c")
    for column, (key, title) in enumerate(bars):
        axis = figure.add_subplot(grid[0, column])
        values = [policies[n][key] for n in names]
        axis.barh(range(len(names)), values, color=colours)
        axis.set_yticks(range(len(names)))
        axis.set_yticklabels(names if column == 0 else [], fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
        axis.tick_params(axis="x", labelsize=8)

    ticks = int(days * 86400 / trace.interval_s)
    hours = np.arange(ticks) * trace.interval_s / 3600.0
    load_axis = figure.add_subplot(grid[1, :])
    load_axis.plot(hours, trace.arrival_rps[:ticks], color="black", linewidth=0.6, label="requests/s")
    load_axis.set_ylabel("requests/s")
    latency_axis = load_axis.twinx()
    for name in ("q-learning", "hpa-tuned"):
        latency_axis.plot(hours, recordings[name].latency_p95_ms[:ticks], linewidth=0.5, label=f"p95 {name}")
    latency_axis.axhline(config.slo_latency_p95_ms, color="red", linestyle="--", linewidth=0.8, label="SLO")
    latency_axis.set_ylim(0, 3 * config.slo_latency_p95_ms)
    latency_axis.set_ylabel("p95 ms")
    load_axis.set_title(f"first {days:g} days of test trace 1: load and p95", fontsize=10)
    load_axis.legend(loc="upper left", fontsize=8)
    latency_axis.legend(loc="upper right", fontsize=8)

    replica_axis = figure.add_subplot(grid[2, :], sharex=load_axis)
    markers = {0: ":", 1: "--", 2: "-"}
    for offset, name in enumerate(TIMELINE_POLICIES):
        recording = recordings[name]
        ready = np.asarray(recording.ready[:ticks]) + 0.08 * offset
        replica_axis.plot(hours, ready, linewidth=0.8, label=name)
        tiers = np.asarray(recording.tier[:ticks])
        for tier, style in markers.items():
            if tier < len(config.tiers):
                replica_axis.fill_between(hours, -0.9 - offset * 0.25, -0.7 - offset * 0.25, where=tiers == tier,
                                          step="post", alpha=0.25 + 0.35 * tier, color=f"C{offset}", linewidth=0)
    replica_axis.set_ylabel("ready replicas (bands: tier, darker = larger)")
    replica_axis.set_xlabel("hour of trace")
    replica_axis.legend(loc="upper left", fontsize=8, ncol=len(TIMELINE_POLICIES))

    ratios = report["ratios"]
    summary = "   ".join(
        f"{name}: {ratio['value']:.3f} (goal {ratio['goal']})" if ratio["value"] is not None else f"{name}: n/a"
        for name, ratio in ratios.items()
    )
    figure.suptitle(f"tierscale policy benchmark ({report['scenario']['days_per_trace']:g} days x "
                    f"{report['scenario']['test_traces']} test traces)\n{summary}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
