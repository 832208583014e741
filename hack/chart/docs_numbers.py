"""Writes the measured numbers into docs/how-it-decides.md from the committed reports.

    python hack/chart/docs_numbers.py [--check]

The text between the markers ``<!-- numbers:begin -->`` and ``<!-- numbers:end -->`` is replaced by
tables computed from reports/ope.json (make eval-ope). With --check nothing is written: the command
fails when the page differs from what it would write, so a new report cannot leave old numbers in
the docs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "how-it-decides.md"
OPE_REPORT = REPO / "reports" / "ope.json"
BEGIN, END = "<!-- numbers:begin -->", "<!-- numbers:end -->"
ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr")


def _percent_range(values: list[float]) -> str:
    return f"{100 * min(values):+.1f}% to {100 * max(values):+.1f}%"


def confounding_table(report: dict) -> list[str]:
    seeds = report["synthetic_confounded_trace"]["seeds"]
    n = len(seeds)
    rows = [
        ("naive: per-tier CTR difference", "naive_relative_error", None),
        ("stratified by hour, with a load term", "stratified_relative_error",
         "stratified_ci_covers_truth"),
        ("global regression (the form the live loop applies to each interval)", "regression_relative_error", "regression_ci_covers_truth"),
    ]
    lines = [
        f"Large tier's CTR effect on a synthetic confounded trace "
        f"({report['synthetic_confounded_trace']['n_intervals']} intervals, {n} seeds; "
        "`reports/ope.json`, section `synthetic_confounded_trace`):",
        "",
        "| estimate | relative error | 95% interval covers the truth |",
        "|---|---|---|",
    ]
    for label, key, covers in rows:
        coverage = f"{sum(s[covers] for s in seeds)} of {n} seeds" if covers else "-"
        lines.append(f"| {label} | {_percent_range([s[key] for s in seeds])} | {coverage} |")

    lines += [
        "",
        "The off-policy gate (snips, one-sided 95% lower bound of the improvement > 0) on the same "
        f"{n} seeds:",
        "",
        "| candidate | reward from raw CTR: passed | reward from adjusted CTR: passed |",
        "|---|---|---|",
    ]
    for candidate, truth in (("always large", "better"), ("always small", "worse")):
        raw = sum(s["gate_snips"][f"{candidate}, raw reward"]["passed"] for s in seeds)
        adjusted = sum(s["gate_snips"][f"{candidate}, adjusted reward"]["passed"] for s in seeds)
        lines.append(f"| {candidate} (truly {truth}) | {raw} of {n} | {adjusted} of {n} |")
    return lines


def obd_table(report: dict) -> list[str]:
    published = {c["variant"]: c["obp_published_mean_relative_error"] for c in report["comparison_with_obp"]}
    errors = report["ope"]["all"]["bts_from_random"]["relative_error"]
    runs = report["ope"]["all"]["bts_from_random"]["n_runs"]
    lines = [
        "Estimators on real logged data, the Open Bandit Dataset sample (Bernoulli TS evaluated on the "
        f"Random log, campaign \"all\", mean relative error over {runs} bootstrap runs; "
        "`reports/ope.json`, section `ope`):",
        "",
        "| estimator | " + " | ".join(ESTIMATORS) + " |",
        "|---|" + "---|" * len(ESTIMATORS),
        "| tierscale | " + " | ".join(f"{errors[e]['mean']:.3f}" for e in ESTIMATORS) + " |",
        "| obp 0.5.7 published | " + " | ".join(f"{published[e]:.3f}" for e in ESTIMATORS) + " |",
    ]
    return lines


def render_block() -> str:
    report = json.loads(OPE_REPORT.read_text())
    lines = [BEGIN, "<!-- Generated from reports/*.json by `make docs-numbers`; do not edit by hand. -->", ""]
    lines += confounding_table(report) + [""] + obd_table(report) + ["", END]
    return "\n".join(lines)


def render_page() -> str:
    text = PAGE.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render_block() + text[end:]


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        if PAGE.read_text() != render_page():
            raise SystemExit(f"{PAGE} has stale numbers: run `make docs-numbers`")
        return
    PAGE.write_text(render_page())


if __name__ == "__main__":
    main()
