"""Check the off-policy estimators on the Open Bandit Dataset sample; writes reports/ope.json.

Protocol (the one obp's examples/obd/evaluate_off_policy_estimators.py documents for the small
sample), per campaign and per direction:

- the behaviour log is one policy's 10,000 rows. The evaluation policy is the other policy, and
  the mean click of its own log is the ground truth V;
- the evaluation policy's action distribution is uniform for Random, and for BTS a Monte-Carlo
  estimate from the production Beta priors in obp's prior_bts.yaml (top-3 by sampled score);
- for b = 0 .. n_runs-1: draw a bootstrap resample of the behaviour log with
  numpy.random.RandomState(b) (obp's sample_bootstrap_bandit_feedback does the same), fit a
  reward model with 3-fold cross-fitting (one scikit-learn LogisticRegression per position on
  one-hot user features plus label-encoded item features), and compute every estimator's
  relative error |V_hat - V| / V;
- report the mean and standard deviation of the relative error over the runs.

It also runs the synthetic confounded trace over several seeds (naive, stratified and
regression tier effects against the known truth, and the gate's verdicts), checks that the
Random log's propensity is exactly 1 / n_items, compares the
Monte-Carlo BTS distribution with the propensities logged by BTS, estimates position bias from
the Random log (whose item placement is independent of position) and reports every estimator's
95% bootstrap interval and effective sample size on the full behaviour log.

scikit-learn is used here only: the operator's estimators take reward-model predictions as
arrays and never import it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from tierscale_operator.causal import estimators as ope
from tierscale_operator.causal import obd
from tierscale_operator.causal.confounding import (
    TierObservations,
    fit_confounder_regression,
    regression_tier_effects,
    stratified_tier_effects,
)
from tierscale_operator.causal.gate import GateConfig, evaluate_candidate_on_log
from tierscale_operator.causal.position_bias import PositionBias, estimate_from_randomized_positions
from tierscale_operator.causal.synthetic import TIERS, generate_confounded_trace

# Mean relative errors that obp publishes for BTS evaluated on the Random log, campaign "all",
# 30 runs, logistic-regression reward model, random_state 12345. The figures are copied as
# quoted for obp's examples/obd README; that README version was not opened here.
OBP_PUBLISHED_BTS_FROM_RANDOM_ALL = {
    "dm": 0.157,
    "ips": 0.311,
    "snips": 0.312,
    "dr": 0.292,
    "sndr": 0.302,
    "switch-dr": 0.258,
    "dr-os": 0.160,
}

# Estimator variants: (report name, estimator, keyword arguments).
VARIANTS = [
    ("dm", "dm", {}),
    ("ips", "ips", {}),
    ("ips clip=10", "ips", {"clip": 10.0}),
    ("ips clip=100", "ips", {"clip": 100.0}),
    ("snips", "snips", {}),
    ("dr", "dr", {}),
    ("sndr", "sndr", {}),
    ("switch-dr tau=1", "switch-dr", {"switch_threshold": 1.0}),
    ("switch-dr tau=10", "switch-dr", {"switch_threshold": 10.0}),
    ("switch-dr tau=100", "switch-dr", {"switch_threshold": 100.0}),
    ("dr-os lambda=1", "dr-os", {"shrinkage": 1.0}),
    ("dr-os lambda=10", "dr-os", {"shrinkage": 10.0}),
    ("dr-os lambda=100", "dr-os", {"shrinkage": 100.0}),
]

logger = logging.getLogger("eval_ope")


def one_hot_drop_first(columns: np.ndarray) -> np.ndarray:
    """One-hot encode each categorical column, dropping its first category (sorted), as
    pandas.get_dummies(drop_first=True) does."""
    blocks = []
    for column in columns.T:
        categories = np.unique(column)
        blocks.append((column[:, None] == categories[None, 1:]).astype(float))
    return np.hstack(blocks)


def item_features(log: obd.ObdLog) -> np.ndarray:
    """Label-encoded categorical item features followed by the numeric one, per item."""
    encoded = [np.unique(column, return_inverse=True)[1].astype(float) for column in log.item_categorical.T]
    return np.column_stack([*encoded, log.item_numeric])


class CrossFittedRewardModel:
    """Per-position logistic regression of click on [user one-hot, item features], cross-fitted."""

    def __init__(self, n_folds: int, seed: int, c: float, max_iter: int, solver: str = "lbfgs"):
        self.solver = solver
        self.n_folds = n_folds
        self.seed = seed
        self.c = c
        self.max_iter = max_iter

    def _fit(self, features: np.ndarray, clicks: np.ndarray):
        if clicks.min() == clicks.max():
            return float(clicks[0])
        model = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=self.seed, solver=self.solver)
        return model.fit(features, clicks)

    @staticmethod
    def _predict(model, context: np.ndarray, item_matrix: np.ndarray) -> np.ndarray:
        n_rows, n_items = context.shape[0], item_matrix.shape[0]
        if isinstance(model, float):
            return np.full((n_rows, n_items), model)
        pairs = np.hstack([np.repeat(context, n_items, axis=0), np.tile(item_matrix, (n_rows, 1))])
        return model.predict_proba(pairs)[:, 1].reshape(n_rows, n_items)

    def fit_predict(
        self, context: np.ndarray, action: np.ndarray, position: np.ndarray, click: np.ndarray, item_matrix: np.ndarray
    ) -> np.ndarray:
        """Predicted click probability of every item at each row's own position, (n_rows, n_items)."""
        q_hat = np.empty((context.shape[0], item_matrix.shape[0]))
        folds = KFold(n_splits=self.n_folds, shuffle=True, random_state=self.seed)
        for train, test in folds.split(context):
            for k in np.unique(position):
                train_k = train[position[train] == k]
                test_k = test[position[test] == k]
                features = np.hstack([context[train_k], item_matrix[action[train_k]]])
                model = self._fit(features, click[train_k])
                q_hat[test_k] = self._predict(model, context[test_k], item_matrix)
        return q_hat


def evaluation_distribution(policy: str, campaign: str, n_items: int, args: argparse.Namespace) -> np.ndarray:
    """(n_items, n_positions) probability that `policy` shows each item at each position."""
    if policy == "random":
        return np.full((n_items, obd.N_POSITIONS), 1.0 / n_items)
    alpha, beta = obd.load_bts_prior(campaign)
    if alpha.shape[0] != n_items:
        raise obd.ObdDataError(f"prior_bts.yaml has {alpha.shape[0]} items for {campaign}, the log has {n_items}")
    return obd.bts_action_distribution(alpha, beta, n_samples=args.n_sim, seed=args.seed)


def off_policy_data(
    log: obd.ObdLog, rows: np.ndarray, distribution: np.ndarray, q_hat: np.ndarray
) -> ope.OffPolicyData:
    position = log.position[rows]
    return ope.OffPolicyData.from_distributions(
        reward=log.click[rows],
        action=log.action[rows],
        propensity=log.propensity[rows],
        target_distribution=distribution[:, position].T,
        q_hat=q_hat,
    )


def evaluate_direction(
    behaviour: obd.ObdLog, truth: float, distribution: np.ndarray, args: argparse.Namespace
) -> dict[str, object]:
    context = one_hot_drop_first(behaviour.user_features)
    item_matrix = item_features(behaviour)
    model = CrossFittedRewardModel(n_folds=3, seed=args.seed, c=args.logistic_c, max_iter=args.logistic_max_iter)

    errors = {name: [] for name, _, _ in VARIANTS}
    estimates = {name: [] for name, _, _ in VARIANTS}
    for run in range(args.n_runs):
        rows = np.random.RandomState(run).choice(behaviour.n_rows, size=behaviour.n_rows, replace=True)
        q_hat = model.fit_predict(
            context[rows], behaviour.action[rows], behaviour.position[rows], behaviour.click[rows], item_matrix
        )
        data = off_policy_data(behaviour, rows, distribution, q_hat)
        for name, estimator, kwargs in VARIANTS:
            value = ope.point_estimate(data, estimator, **kwargs)
            estimates[name].append(value)
            errors[name].append(abs(value - truth) / truth)

    all_rows = np.arange(behaviour.n_rows)
    q_hat_full = model.fit_predict(context, behaviour.action, behaviour.position, behaviour.click, item_matrix)
    full_data = off_policy_data(behaviour, all_rows, distribution, q_hat_full)
    full_log = {}
    for name, estimator, kwargs in VARIANTS:
        result = ope.estimate(
            full_data, estimator, n_bootstrap=args.n_bootstrap, seed=args.seed, tiny_propensity=1e-3, **kwargs
        )
        entry = result.as_dict()
        entry["covers_truth"] = bool(result.ci_low <= truth <= result.ci_high)
        full_log[name] = entry

    return {
        "ground_truth": truth,
        "behaviour_mean_click": float(behaviour.click.mean()),
        "n_rows": behaviour.n_rows,
        "n_runs": args.n_runs,
        "relative_error": {
            name: {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
            for name, values in errors.items()
        },
        "mean_estimate": {name: float(np.mean(values)) for name, values in estimates.items()},
        "full_log": full_log,
    }


def propensity_checks(logs: dict[str, obd.ObdLog], bts_distribution: np.ndarray) -> dict[str, object]:
    random_log, bts_log = logs["random"], logs["bts"]
    expected = 1.0 / random_log.n_items
    mc = bts_distribution[bts_log.action, bts_log.position]
    # How often BTS actually showed each item at each position in its log, per position.
    shown = np.zeros_like(bts_distribution)
    np.add.at(shown, (bts_log.action, bts_log.position), 1.0)
    shown /= shown.sum(axis=0, keepdims=True)
    return {
        "random": {
            "n_items": random_log.n_items,
            "expected_propensity": expected,
            "distinct_propensities": sorted(set(random_log.propensity.tolist())),
            "max_abs_deviation": float(np.abs(random_log.propensity - expected).max()),
            "all_exactly_one_over_n_items": bool((random_log.propensity == expected).all()),
        },
        "bts_logged_vs_monte_carlo": {
            "mean_abs_difference": float(np.abs(mc - bts_log.propensity).mean()),
            "mean_relative_difference": float((np.abs(mc - bts_log.propensity) / bts_log.propensity).mean()),
            "correlation": float(np.corrcoef(mc, bts_log.propensity)[0, 1]),
            "correlation_with_shown_frequency": float(np.corrcoef(bts_distribution.ravel(), shown.ravel())[0, 1]),
            "mean_abs_difference_from_shown_frequency": float(np.abs(bts_distribution - shown).mean()),
            "min_logged_propensity": float(bts_log.propensity.min()),
            "rows_below_1e-3": int((bts_log.propensity < 1e-3).sum()),
        },
    }


def position_bias_report(logs: dict[str, obd.ObdLog], args: argparse.Namespace) -> dict[str, object]:
    random_log = logs["random"]
    impressions = np.bincount(random_log.position, minlength=obd.N_POSITIONS).astype(float)
    clicks = np.bincount(random_log.position, weights=random_log.click, minlength=obd.N_POSITIONS)
    report: dict[str, object] = {"random_log_impressions": impressions.tolist(), "random_log_clicks": clicks.tolist()}
    try:
        bias = estimate_from_randomized_positions(impressions, clicks, seed=args.seed)
    except ValueError as error:
        report["error"] = str(error)
        return report
    report["examination"] = list(bias.examination)
    report["ci_low"] = list(bias.ci_low or ())
    report["ci_high"] = list(bias.ci_high or ())
    report["corrected_ctr"] = {
        name: _corrected_ctr(log, bias) for name, log in logs.items()
    }
    return report


def _corrected_ctr(log: obd.ObdLog, bias: PositionBias) -> dict[str, float]:
    impressions = np.bincount(log.position, minlength=obd.N_POSITIONS)
    clicks = np.bincount(log.position, weights=log.click, minlength=obd.N_POSITIONS)
    return {"raw": float(log.click.mean()), "corrected": bias.corrected_ctr(impressions, clicks)}


def synthetic_report(n_seeds: int) -> dict[str, object]:
    """Tier-effect errors and gate verdicts on the synthetic confounded trace, per seed."""
    rows = []
    for seed in range(n_seeds):
        trace = generate_confounded_trace(seed=seed)
        observations = TierObservations.from_records(trace.records)
        truth = trace.true_effect
        stratified = stratified_tier_effects(observations, "small", n_bootstrap=200, seed=seed)["large"]
        regression = regression_tier_effects(observations, "small", n_bootstrap=50, seed=seed)["large"]
        adjuster = fit_confounder_regression(observations, "small").adjuster
        click_value = trace.parameters.click_value

        def adjusted_reward(record, adjuster=adjuster, click_value=click_value) -> float:
            ctr = adjuster.adjust_ctr(record.ctr_raw, record.context.hour_of_day, record.context.load_rps)
            return click_value * ctr - record.reward.gpu_cost

        n = len(trace.records)
        candidates = {
            "always large": (lambda record: [0.0, 1.0], np.ones(n)),
            "always small": (lambda record: [1.0, 0.0], np.zeros(n)),
        }
        gate = {}
        for name, (candidate, probability_large) in candidates.items():
            for reward_name, reward in (("raw", None), ("adjusted", adjusted_reward)):
                keywords = {} if reward is None else {"reward": reward}
                decision = evaluate_candidate_on_log(trace.records, list(TIERS), candidate, GateConfig(), **keywords)
                gate[f"{name}, {reward_name} reward"] = {
                    "true_improvement": trace.true_value(probability_large) - trace.behaviour_true_value,
                    "estimated_improvement": decision.improvement,
                    "lower_bound": decision.improvement_lower_bound,
                    "passed": decision.passed,
                }
        rows.append(
            {
                "seed": seed,
                "true_effect": truth,
                "naive_relative_error": (stratified.naive_difference - truth) / truth,
                "stratified_relative_error": (stratified.adjusted_difference - truth) / truth,
                "stratified_ci_covers_truth": bool(stratified.ci_low <= truth <= stratified.ci_high),
                "regression_relative_error": (regression.adjusted_difference - truth) / truth,
                "regression_ci_covers_truth": bool(regression.ci_low <= truth <= regression.ci_high),
                "gate_snips": gate,
            }
        )
    return {"n_intervals": len(trace.records), "seeds": rows}


def comparison_table(result: dict[str, object]) -> list[dict[str, object]]:
    """Every variant of BTS-from-Random on "all" beside obp's figure for its estimator.

    obp publishes one Switch-DR and one DR-OS figure. The hyperparameters behind them were not
    verified here, so every tau and lambda variant is listed against it.
    """
    errors = result["ope"]["all"]["bts_from_random"]["relative_error"]
    return [
        {
            "estimator": estimator,
            "variant": name,
            "ours_mean_relative_error": errors[name]["mean"],
            "ours_std": errors[name]["std"],
            "obp_published_mean_relative_error": OBP_PUBLISHED_BTS_FROM_RANDOM_ALL[estimator],
        }
        for name, estimator, _ in VARIANTS
    ]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/ope.json"), help="report path (JSON)")
    parser.add_argument("--campaigns", nargs="+", default=list(obd.CAMPAIGNS), choices=obd.CAMPAIGNS)
    parser.add_argument("--n-runs", type=int, default=30, help="bootstrap runs per direction")
    parser.add_argument("--n-sim", type=int, default=1_000_000, help="Monte-Carlo draws for the BTS distribution")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="resamples for the full-log intervals")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--logistic-c", type=float, default=100.0, help="inverse L2 strength of the reward model")
    parser.add_argument("--logistic-max-iter", type=int, default=10_000)
    parser.add_argument("--synthetic-seeds", type=int, default=10, help="seeds of the synthetic confounded trace")
    args = parser.parse_args(argv)
    if "all" not in args.campaigns:
        parser.error("--campaigns must include 'all': the comparison with obp's published table uses it")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The operator-side estimators warn about tiny propensities; BTS logs have thousands of them
    # and the report counts them, so one warning per estimate is noise here.
    logging.getLogger("tierscale_operator.causal.estimators").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    args = parse_arguments(argv)
    started = time.perf_counter()
    obd.download_obp_sdist()

    result: dict[str, object] = {
        "data": {
            "source": f"obp=={obd.OBP_VERSION} sdist, obp/dataset/obd and obp/policy/conf/prior_bts.yaml",
            "sdist_sha256": obd.sdist_sha256(),
        },
        "protocol": {
            "n_runs": args.n_runs,
            "bootstrap_resample": "numpy.random.RandomState(run).choice(n, n, replace=True)",
            "reward_model": f"per-position LogisticRegression(C={args.logistic_c}, max_iter={args.logistic_max_iter}, "
            "solver='lbfgs'), "
            "3-fold cross-fitting on one-hot user features + label-encoded item features",
            "bts_monte_carlo_draws": args.n_sim,
            "seed": args.seed,
            "full_log_interval": f"{args.n_bootstrap}-resample percentile bootstrap, 95%",
        },
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit_learn": sklearn.__version__,
            "machine": platform.machine(),
        },
        "synthetic_confounded_trace": synthetic_report(args.synthetic_seeds),
        "propensity_checks": {},
        "position_bias": {},
        "ope": {},
    }
    for campaign in args.campaigns:
        logs = {policy: obd.load_obd_log(policy, campaign) for policy in obd.BEHAVIOUR_POLICIES}
        n_items = logs["random"].n_items
        distributions = {policy: evaluation_distribution(policy, campaign, n_items, args) for policy in obd.BEHAVIOUR_POLICIES}
        result["propensity_checks"][campaign] = propensity_checks(logs, distributions["bts"])
        result["position_bias"][campaign] = position_bias_report(logs, args)
        result["ope"][campaign] = {}
        for behaviour, evaluation in (("random", "bts"), ("bts", "random")):
            truth = float(logs[evaluation].click.mean())
            logger.info("campaign %s: %s evaluated on the %s log (V = %.6f)", campaign, evaluation, behaviour, truth)
            result["ope"][campaign][f"{evaluation}_from_{behaviour}"] = evaluate_direction(
                logs[behaviour], truth, distributions[evaluation], args
            )

    result["comparison_with_obp"] = comparison_table(result)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(args.out)

    logger.info("wrote %s in %.1f s", args.out, result["elapsed_s"])
    print(f"{'estimator':18s} {'ours (BTS from Random, all)':>28s} {'obp':>6s}")
    for row in result["comparison_with_obp"]:
        print(
            f"{row['variant']:18s} {row['ours_mean_relative_error']:>17.3f} +- {row['ours_std']:.3f}"
            f"   {row['obp_published_mean_relative_error']:>6.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
