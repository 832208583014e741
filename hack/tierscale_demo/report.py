"""The demo report: summary.json, timeline.csv, timeline.json and timeline.png."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

CHANGE_ACTIONS = ("scale-up", "scale-down", "tier-up", "tier-down")


def summarize(rows: list[dict], interval_s: float) -> dict:
    """Counts per decision; changes counted from what status shows, not from what was proposed."""
    actions = Counter(row["action"] for row in rows)
    applied = Counter(row["action"] for row in rows if row["applied"] and row["action"] in CHANGE_ACTIONS)
    scale_changes = sum(
        1 for before, after in zip(rows, rows[1:]) if before["replicas"] != after["replicas"]
        and before["tier"] == after["tier"]
    )
    tier_changes = sum(1 for before, after in zip(rows, rows[1:]) if before["tier"] != after["tier"])
    measured = [r for r in rows if r["p95_ms"] is not None]
    violations = sum(1 for r in measured if r["p95_ms"] > r["slo_ms"])
    ctr = [r["ctr"] for r in rows if r["ctr"] is not None]
    ctr_adjusted = [r["ctr_adjusted"] for r in rows if r["ctr_adjusted"] is not None]
    return {
        "decisions": len(rows),
        "decisions_by_action": dict(actions),
        "applied_changes_by_action": dict(applied),
        "scale_changes": scale_changes,
        "tier_changes": tier_changes,
        "tiers_served": sorted({r["tier"] for r in rows if r["tier"]}),
        "intervals_with_p95": len(measured),
        "slo_violating_intervals": violations,
        "gpu_seconds": sum((r["gpus"] or 0) * interval_s for r in rows),
        "mean_ctr": statistics.fmean(ctr) if ctr else None,
        "mean_ctr_adjusted": statistics.fmean(ctr_adjusted) if ctr_adjusted else None,
        "max_replicas": max((r["replicas"] or 0 for r in rows), default=0),
        "interval_s": interval_s,
    }


def write(out: Path, rows: list[dict], interval_s: float) -> dict:
    summary = summarize(rows, interval_s)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "timeline.json").write_text(json.dumps(rows, indent=1))
    if rows:
        with open(out / "timeline.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, out / "timeline.png")
    return summary


def _series(rows: list[dict], key: str) -> list[float]:
    return [float("nan") if r[key] is None else float(r[key]) for r in rows]


def plot(rows: list[dict], path: Path) -> None:
    t = [r["t_s"] / 60 for r in rows]
    figure, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)

    axes[0].plot(t, _series(rows, "offered_rps"), label="offered")
    axes[0].plot(t, _series(rows, "observed_rps"), label="observed")
    axes[0].set_ylabel("requests / s")
    axes[0].legend(loc="upper left")

    tiers = sorted({r["tier"] for r in rows if r["tier"]})
    axes[1].step(t, [r["replicas"] for r in rows], where="post", label="replicas", color="black")
    for tier in tiers:
        axes[1].scatter([x for x, r in zip(t, rows) if r["tier"] == tier],
                        [r["replicas"] for r in rows if r["tier"] == tier], label=f"tier {tier}", s=18)
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left")

    axes[2].plot(t, _series(rows, "p95_ms"), label="p95")
    axes[2].plot(t, _series(rows, "slo_ms"), "--", label="SLO")
    axes[2].set_ylabel("ms")
    axes[2].legend(loc="upper left")

    axes[3].plot(t, _series(rows, "ctr"), label="CTR raw")
    axes[3].plot(t, _series(rows, "ctr_adjusted"), label="CTR adjusted")
    axes[3].set_ylabel("CTR")
    axes[3].set_xlabel("demo time (min)")
    axes[3].legend(loc="upper left")

    figure.suptitle("tierscale demo: load, decisions, latency and clicks")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
