"""Benchmark: our server against TorchServe 0.12 serving the same tier, side by side in one run.

For each tier, each server variant runs as its own process on loopback and gets the same
closed-loop load. ``C`` concurrent clients each send ``POST /predictions/{model}`` with a random
MovieLens user id and ``k = 10`` as soon as their previous response arrived. Each concurrency of
``--concurrency`` runs for ``--duration-s`` seconds after a warm-up. The load
generator runs in this process and shares the CPU with the server under test, equally for
every variant.

Variants: ``tierscale`` (dynamic batching and the user-vector cache, as deployed),
``tierscale-no-cache`` (batching only: every request encodes its history, as TorchServe does),
``tierscale-unbatched`` (no cache and batches of one: the HTTP stack alone) and ``torchserve``
(the handler in ``torchserve_handler.py``, with TorchServe's own settings: one worker, batch
size from ``--torchserve-batch-size``).

The ratio at equal p99: TorchServe's highest-throughput point sets a p99 budget; our throughput
at that p99 is interpolated linearly between our sweep points, and divided by TorchServe's.

    python -m tierscale_server.bench --output reports/bench-server.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .data import cache_dir, load_movielens
from .tiers import TIER_NAMES, encoder_config, tier_config

log = logging.getLogger("tierscale_server.bench")

MODEL = "movielens-bert"
STARTUP_TIMEOUT_S = 600


@dataclass
class Target:
    variant: str
    tier: str
    url: str             # full prediction URL
    process: subprocess.Popen
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VARIANTS = ("tierscale", "tierscale-no-cache", "tierscale-unbatched", "torchserve")


def start_tierscale(tier: str, work: Path, variant: str, batch_size: int, delay_ms: float) -> Target:
    cache = variant == "tierscale"
    if variant == "tierscale-unbatched":
        batch_size, delay_ms = 1, 0.0
    ports = [free_port() for _ in range(3)]
    log_path = work / f"{variant}-{tier}.log"
    command = [
        sys.executable, "-m", "tierscale_server", "serve", "--tier", tier, "--host", "127.0.0.1",
        "--port", str(ports[0]), "--management-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--max-batch-size", str(batch_size), "--max-batch-delay-ms", str(delay_ms),
        "--user-cache-size", "4096" if cache else "0",
    ]
    process = subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return Target(variant, tier, f"http://127.0.0.1:{ports[0]}/predictions/{MODEL}", process, log_path)


def start_torchserve(tier: str, work: Path, batch_size: int, delay_ms: float) -> Target:
    """Archive the handler for ``tier`` with torch-model-archiver and start TorchServe in the foreground."""
    store = work / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    extra = work / "tier.json"
    # The same torch thread count as our server, so the comparison isolates the serving stack.
    extra.write_text(json.dumps({"tier": tier, "model_name": MODEL, "torch_threads": 1}))
    handler = Path(__file__).with_name("torchserve_handler.py")
    subprocess.run([
        sys.executable, "-m", "model_archiver.model_packaging", "--model-name", MODEL, "--version", "1.0",
        "--handler", str(handler), "--extra-files", str(extra), "--export-path", str(store), "--force",
    ], check=True, capture_output=True)

    ports = [free_port() for _ in range(3)]
    config = work / "config.properties"
    models = {MODEL: {"1.0": {"defaultVersion": True, "marName": f"{MODEL}.mar", "minWorkers": 1,
                              "maxWorkers": 1, "batchSize": batch_size, "maxBatchDelay": int(delay_ms),
                              "responseTimeout": 120}}}
    config.write_text("\n".join([
        f"inference_address=http://127.0.0.1:{ports[0]}",
        f"management_address=http://127.0.0.1:{ports[1]}",
        f"metrics_address=http://127.0.0.1:{ports[2]}",
        f"model_store={store}",
        f"load_models={MODEL}.mar",
        f"models={json.dumps(models)}",
        "disable_token_authorization=true",
        "install_py_dep_per_model=false",
        "default_workers_per_model=1",
        "",
    ]))
    log_path = work / f"torchserve-{tier}.log"
    torchserve = shutil.which("torchserve", path=str(Path(sys.executable).parent)) or "torchserve"
    command = [torchserve, "--foreground", "--ncs", "--disable-token-auth", "--model-store", str(store),
               "--ts-config", str(config)]
    env = {**os.environ, "TEMP": str(work)}
    process = subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, cwd=work, env=env,
                               start_new_session=True)
    return Target("torchserve", tier, f"http://127.0.0.1:{ports[0]}/predictions/{MODEL}", process, log_path)


def stop(target: Target) -> None:
    """Stop the server's process group (TorchServe's launcher starts a JVM and Python workers)."""
    try:
        os.killpg(target.process.pid, signal.SIGTERM)
        target.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(target.process.pid, signal.SIGKILL)
        target.process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_ready(target: Target, user_id: str) -> float:
    """Send predictions until one succeeds; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT_S:
        if target.process.poll() is not None:
            raise RuntimeError(f"{target.variant} for tier {target.tier} exited with {target.process.returncode}; "
                               f"log: {target.log_path}")
        try:
            response = httpx.post(target.url, json={"user_id": user_id, "k": 10}, timeout=30)
            if response.status_code == 200 and "items" in response.json():
                return time.monotonic() - started
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{target.variant} for tier {target.tier} not ready after {STARTUP_TIMEOUT_S} s; "
                       f"log: {target.log_path}")


async def closed_loop(url: str, users: list[str], concurrency: int, duration_s: float, warmup_s: float,
                      seed: int) -> dict:
    """Run ``concurrency`` clients back to back; return req/s and latency percentiles after warm-up."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup_s
    deadline = measure_from + duration_s

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            sent = time.perf_counter()
            if sent >= deadline:
                return
            response = await client.post(url, json={"user_id": rng.choice(users), "k": 10})
            done = time.perf_counter()
            if sent >= measure_from and done <= deadline:
                if response.status_code == 200:
                    latencies.append(done - sent)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))

    latencies.sort()

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / duration_s, 2),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
    }


def throughput_at_p99(points: list[dict], p99_budget_ms: float) -> float | None:
    """Interpolate the req/s a sweep reaches at a p99 budget (None if even its lightest load is slower)."""
    ordered = sorted((p for p in points if p["p99_ms"] is not None), key=lambda p: p["concurrency"])
    best = None
    for low, high in zip([None] + ordered, ordered):
        if high["p99_ms"] <= p99_budget_ms:
            best = max(best or 0.0, high["requests_per_s"])
        elif low is not None and low["p99_ms"] <= p99_budget_ms:
            share = (p99_budget_ms - low["p99_ms"]) / (high["p99_ms"] - low["p99_ms"])
            best = max(best or 0.0, low["requests_per_s"] + share * (high["requests_per_s"] - low["requests_per_s"]))
    return round(best, 2) if best is not None else None


def compare(results: dict) -> dict:
    """Return, per tier and our variant, the req/s ratio to TorchServe at TorchServe's p99."""
    ratios = {}
    for tier, variants in results.items():
        torchserve = variants.get("torchserve")
        if not torchserve:
            continue
        reference = max(torchserve["sweep"], key=lambda p: p["requests_per_s"])
        ratios[tier] = {"torchserve_point": reference}
        for variant in VARIANTS[:-1]:
            if variant not in variants:
                continue
            ours = throughput_at_p99(variants[variant]["sweep"], reference["p99_ms"])
            ratios[tier][variant] = {
                "requests_per_s_at_torchserve_p99": ours,
                "ratio": round(ours / reference["requests_per_s"], 2) if ours else None,
            }
    return ratios


def ensure_checkpoints(tiers: list[str]) -> None:
    """Train any missing encoder of ``tiers`` first, so server start-up times measure loading only."""
    from .train import checkpoint_path, load_dataset, load_or_train, pick_device

    missing = [name for tier in tiers for name in tier_config(tier).encoders
               if not checkpoint_path(encoder_config(name)).exists()]
    if missing:
        dataset = load_dataset()
        for name in dict.fromkeys(missing):
            load_or_train(encoder_config(name), dataset, pick_device())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tierscale_server.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="reports/bench-server.json", help="report path")
    parser.add_argument("--tiers", default=",".join(TIER_NAMES), help="comma-separated tiers (default: all)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated server variants to run")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per point (default 10)")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds per point (default 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="our maximum batch size (default 16)")
    parser.add_argument("--batch-delay-ms", type=float, default=5.0, help="our maximum batch delay (default 5)")
    parser.add_argument("--torchserve-batch-size", type=int, default=1,
                        help="TorchServe batchSize (default 1, its default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the user sequence")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    tiers = [t for t in args.tiers.split(",") if t]
    variants = [v for v in args.variants.split(",") if v]
    levels = [int(c) for c in args.concurrency.split(",")]
    for tier in tiers:
        tier_config(tier)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}")

    ensure_checkpoints(tiers)
    users = load_movielens().user_tokens
    work = cache_dir() / "bench-server"
    work.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    for tier in tiers:
        results[tier] = {}
        for variant in variants:
            if variant == "torchserve":
                target = start_torchserve(tier, work / "torchserve", args.torchserve_batch_size, args.batch_delay_ms)
            else:
                target = start_tierscale(tier, work, variant, args.batch_size, args.batch_delay_ms)
            try:
                ready_s = wait_ready(target, users[0])
                sweep = []
                for level in levels:
                    point = asyncio.run(closed_loop(target.url, users, level, args.duration_s, args.warmup_s,
                                                    args.seed))
                    log.info("%s %s: %s", tier, variant, point)
                    sweep.append(point)
            finally:
                stop(target)
            results[tier][variant] = {"ready_s": round(ready_s, 1), "sweep": sweep}

    report = {
        "what": "closed-loop load on loopback: C clients, each POST /predictions/{model} with a random "
                "MovieLens user id and k=10 back to back",
        "settings": {"concurrency": levels, "duration_s": args.duration_s, "warmup_s": args.warmup_s,
                     "tierscale_max_batch_size": args.batch_size, "tierscale_max_batch_delay_ms": args.batch_delay_ms,
                     "torchserve_batch_size": args.torchserve_batch_size, "torchserve_workers": 1,
                     "tierscale_workers": 1, "torch_threads_both": 1},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
        "ratio_at_torchserve_p99": compare(results),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratio_at_torchserve_p99"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
