"""Command line: ``python -m tierscale_server {train,evaluate,serve}``.

Every ``serve`` flag also reads an environment variable (named in ``--help``), so a pod spec
can set either. A flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .tiers import ENCODER_NAMES, TIER_NAMES


def _env(name: str, default):
    return os.environ.get(name, default)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"invalid {name}={raw!r}: expected an integer") from None


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"invalid {name}={raw!r}: expected a number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tierscale_server", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=_env("TIERSCALE_LOG_LEVEL", "INFO"),
                        help="logging level (env TIERSCALE_LOG_LEVEL; default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune the encoders of tiers (cached checkpoints are reused)")
    train.add_argument("--tier", action="append", choices=TIER_NAMES,
                       help="tier whose encoders to train; repeat for several (default: all)")
    train.add_argument("--encoder", action="append", choices=ENCODER_NAMES,
                       help="encoder to train; repeat for several (default: those of the tiers)")
    train.add_argument("--force", action="store_true", help="retrain even if a cached checkpoint exists")
    train.add_argument("--seed", type=int, help="override the encoder's seed")
    train.add_argument("--max-epochs", type=int, help="override the encoder's maximum epochs")
    train.add_argument("--learning-rate", type=float, help="override the encoder's learning rate")
    train.add_argument("--dropout", type=float, help="override the encoder's dropout")
    train.add_argument("--max-len", type=int, help="override the encoder's history length")
    train.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    train.add_argument("--movielens", help="MovieLens-100K source: a GroupLens ml-100k.zip or folder "
                                           "(default: the recbole 1.2.1 wheel in the cache)")

    evaluate = commands.add_parser("evaluate", help="evaluate all tiers and baselines into a JSON report")
    evaluate.add_argument("--output", default="reports/quality.json", help="report path (default reports/quality.json)")
    evaluate.add_argument("--device", help="torch device for training and scoring (default: cuda when available)")
    evaluate.add_argument("--movielens", help="MovieLens-100K source (see train --movielens)")

    serve = commands.add_parser("serve", help="run the HTTP server for one tier")
    serve.add_argument("--tier", default=_env("TIERSCALE_TIER", "small"), choices=TIER_NAMES,
                       help="tier to load (env TIERSCALE_TIER; default small)")
    serve.add_argument("--model-name", default=_env("TIERSCALE_MODEL_NAME", "movielens-bert"),
                       help="model name in the URL and metric labels (env TIERSCALE_MODEL_NAME)")
    serve.add_argument("--host", default=_env("TIERSCALE_HOST", "127.0.0.1"),
                       help="bind address (env TIERSCALE_HOST; default 127.0.0.1, use 0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=_int_env("TIERSCALE_PORT", 8080),
                       help="inference API port (env TIERSCALE_PORT; default 8080)")
    serve.add_argument("--management-port", type=int, default=_int_env("TIERSCALE_MANAGEMENT_PORT", 8081),
                       help="management API port (env TIERSCALE_MANAGEMENT_PORT; default 8081); "
                            "equal to --port serves it on the inference port")
    serve.add_argument("--metrics-port", type=int, default=_int_env("TIERSCALE_METRICS_PORT", 8082),
                       help="Prometheus metrics port (env TIERSCALE_METRICS_PORT; default 8082); "
                            "equal to --port serves /metrics on the inference port")
    serve.add_argument("--workers", type=int, default=_int_env("TIERSCALE_WORKERS", 1),
                       help="scoring workers (env TIERSCALE_WORKERS; default 1)")
    serve.add_argument("--max-batch-size", type=int, default=_int_env("TIERSCALE_MAX_BATCH_SIZE", 16),
                       help="maximum requests per batch (env TIERSCALE_MAX_BATCH_SIZE; default 16)")
    serve.add_argument("--max-batch-delay-ms", type=float, default=_float_env("TIERSCALE_MAX_BATCH_DELAY_MS", 5.0),
                       help="maximum wait for a batch to fill, in ms (env TIERSCALE_MAX_BATCH_DELAY_MS; default 5)")
    serve.add_argument("--max-body-bytes", type=int, default=_int_env("TIERSCALE_MAX_BODY_BYTES", 65536),
                       help="request body limit in bytes; larger bodies get 413 (env TIERSCALE_MAX_BODY_BYTES)")
    serve.add_argument("--swap-probability", type=float, default=_float_env("TIERSCALE_SWAP_PROBABILITY", 0.1),
                       help="share of rankings in which one random adjacent pair is swapped, to make "
                            "position bias estimable (env TIERSCALE_SWAP_PROBABILITY; default 0.1)")
    serve.add_argument("--user-cache-size", type=int, default=_int_env("TIERSCALE_USER_CACHE_SIZE", 4096),
                       help="user vectors cached for known users, 0 disables (env TIERSCALE_USER_CACHE_SIZE)")
    serve.add_argument("--device", default=_env("TIERSCALE_DEVICE", None),
                       help="torch device (env TIERSCALE_DEVICE; default cuda when available, else cpu)")
    serve.add_argument("--torch-threads", type=int, default=_int_env("TIERSCALE_TORCH_THREADS", 1),
                       help="torch intra-op threads; 0 keeps torch's default of one per core "
                            "(env TIERSCALE_TORCH_THREADS; default 1, the fastest on a shared 2-core CPU)")
    serve.add_argument("--train-if-missing", action="store_true",
                       default=_env("TIERSCALE_TRAIN_IF_MISSING", "") in ("1", "true"),
                       help="train the tier when no cached checkpoint exists (env TIERSCALE_TRAIN_IF_MISSING=1)")
    serve.add_argument("--seed", type=int, default=_int_env("TIERSCALE_SEED", 0),
                       help="seed of the ranking randomisation (env TIERSCALE_SEED)")
    serve.add_argument("--movielens", default=_env("TIERSCALE_MOVIELENS", None),
                       help="MovieLens-100K source (env TIERSCALE_MOVIELENS; see train --movielens)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "train":
        return _train(args)
    if args.command == "evaluate":
        return _evaluate(args)
    return _serve(args)


def _train(args) -> int:
    from .tiers import encoder_config, tier_config
    from .train import load_dataset, load_or_train, pick_device

    names = list(args.encoder or [])
    for tier in args.tier or ([] if names else TIER_NAMES):
        names += [name for name in tier_config(tier).encoders if name not in names]

    device = pick_device(args.device)
    dataset = load_dataset(args.movielens)
    summary = {}
    for name in names:
        config = encoder_config(name).with_overrides(
            seed=args.seed, max_epochs=args.max_epochs, learning_rate=args.learning_rate,
            dropout=args.dropout, max_len=args.max_len,
        )
        checkpoint = load_or_train(config, dataset, device, force=args.force)
        summary[name] = {"best": checkpoint["best"], "train_seconds": checkpoint["train_seconds"],
                         "checkpoint_settings": config.fingerprint()}
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args) -> int:
    from .evaluate import run_quality

    report = run_quality(Path(args.output), movielens=args.movielens, device_name=args.device)
    print(json.dumps({"tiers": {k: {s: v[s] for s in ("valid", "test")} for k, v in report["tiers"].items()},
                      "baselines": report["baselines"], "checks": report["checks"]}, indent=2))
    failed = [name for name, ok in report["checks"].items() if not ok]
    if failed:
        print(f"quality checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _serve(args) -> int:
    from .config import ServerConfig
    from .serve import run_server

    config = ServerConfig.from_args(args)
    return run_server(config)
