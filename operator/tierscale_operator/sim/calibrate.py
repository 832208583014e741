"""Calibrate the simulator's tier profile from the model server's own measurements.

Inputs, both written by the model server's commands (read as JSON, the server is never imported):

- `reports/quality.json` (`make eval-quality`): `tiers.<name>.test["hr@10"]` and `["ndcg@10"]`.
- `reports/bench-server.json` (`make bench-server`): `results.<name>.<variant>` with `ready_s` and a
  `sweep` of closed-loop points {concurrency, requests_per_s, p50_ms, p95_ms, p99_ms}.

Mapping to the profile (see `tierscale_operator.sim.profile` for the format):

- service time: a lognormal fitted to the concurrency-1 point, sigma = ln(p95 / p50) / 1.645, so
  mean = p50 * exp(sigma^2 / 2) and cv = sqrt(exp(sigma^2) - 1);
- servers per replica: round(max requests_per_s of the sweep * mean / 1000), at least 1, so the
  M/G/c capacity matches the throughput dynamic batching reached;
- warm-up: the largest `ready_s` over the tiers (process start to a scoring worker), rounded up to
  a whole second;
- quality: HR@10 and NDCG@10 on the test split.

    python -m tierscale_operator.sim.calibrate --quality reports/quality.json \
        --bench reports/bench-server.json --out operator/tierscale_operator/sim/profiles/measured.yaml

NOTE: the benchmark measures whatever machine it ran on (CPU here); a profile for GPU nodes must be
measured on one. Image pull and scheduling time are not in `ready_s`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path
from typing import Any

from tierscale_operator.sim.profile import ServiceProfile, TierProfile, load_profile, parse_profile

Z95 = 1.6448536269514722


class CalibrationError(ValueError):
    """An input report lacks a value the profile needs; the message names the file and the key."""


def lognormal_from_percentiles(p50_ms: float, p95_ms: float) -> tuple[float, float]:
    """Return (mean, cv) of the lognormal with the given median and 95th percentile."""
    if not 0 < p50_ms <= p95_ms:
        raise CalibrationError(f"need 0 < p50 <= p95, got p50={p50_ms} ms, p95={p95_ms} ms")
    sigma = math.log(p95_ms / p50_ms) / Z95
    return p50_ms * math.exp(sigma**2 / 2), math.sqrt(math.expm1(sigma**2))


def calibrate(quality: dict[str, Any], bench: dict[str, Any], *, tiers: list[tuple[str, int]], variant: str = "tierscale",
              quality_path: str = "quality.json", bench_path: str = "bench-server.json") -> ServiceProfile:
    """Build a measured profile for `tiers` ((name, GPUs per replica), cheapest first)."""
    profiles = []
    ready_s = []
    for name, gpus in tiers:
        test = _get(quality, ("tiers", name, "test"), quality_path)
        hr, ndcg = _number(test, "hr@10", f"{quality_path}: tiers.{name}.test"), _number(
            test, "ndcg@10", f"{quality_path}: tiers.{name}.test")

        measured = _get(bench, ("results", name, variant), bench_path)
        sweep = measured.get("sweep") or []
        where = f"{bench_path}: results.{name}.{variant}.sweep"
        single = [p for p in sweep if p.get("concurrency") == 1]
        if not single:
            raise CalibrationError(f"{where} has no concurrency-1 point to fit the service time from")
        mean_ms, cv = lognormal_from_percentiles(_number(single[0], "p50_ms", where), _number(single[0], "p95_ms", where))
        best_rps = max(_number(p, "requests_per_s", where) for p in sweep)
        servers = max(1, round(best_rps * mean_ms / 1000.0))
        ready_s.append(_number(measured, "ready_s", f"{bench_path}: results.{name}.{variant}"))

        profiles.append(TierProfile(name=name, gpus_per_replica=gpus, servers_per_replica=servers,
                                    service_ms_mean=round(mean_ms, 3), service_ms_cv=round(cv, 3),
                                    hr_at_10=hr, ndcg_at_10=ndcg))

    today = datetime.date.today().isoformat()
    description = (
        f"Measured on {today}: service times from the concurrency-1 point and capacity from the best "
        f"throughput of the '{variant}' variant in {bench_path}; quality from the test split in {quality_path}; "
        "warm-up is the slowest tier's time to ready."
    )
    profile = ServiceProfile(status="measured", description=description, warmup_s=float(math.ceil(max(ready_s))),
                             tiers=tuple(profiles))
    return parse_profile(_reload(profile), "calibrated profile")


def _reload(profile: ServiceProfile) -> Any:
    import yaml

    return yaml.safe_load(profile.to_yaml())


def _get(data: Any, keys: tuple[str, ...], where: str) -> Any:
    for depth, key in enumerate(keys):
        if not isinstance(data, dict) or key not in data:
            raise CalibrationError(f"{where} has no {'.'.join(keys[: depth + 1])}")
        data = data[key]
    return data


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationError(f"{where}.{key} must be a finite number, got {value!r}")
    return float(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", type=Path, default=Path("reports/quality.json"), help="offline evaluation report")
    parser.add_argument("--bench", type=Path, default=Path("reports/bench-server.json"), help="server benchmark report")
    parser.add_argument("--variant", default="tierscale", help="server variant of the benchmark to read")
    parser.add_argument("--tiers-from", default=None,
                        help="profile whose tier names and GPUs per replica to keep (default: the shipped one)")
    parser.add_argument("--out", type=Path, required=True, help="profile YAML to write")
    args = parser.parse_args(argv)

    template = load_profile(args.tiers_from)
    for path in (args.quality, args.bench):
        if not path.is_file():
            parser.error(f"{path} not found; run `make eval-quality` and `make bench-server` first")
    profile = calibrate(
        json.loads(args.quality.read_text()), json.loads(args.bench.read_text()),
        tiers=[(t.name, t.gpus_per_replica) for t in template.tiers], variant=args.variant,
        quality_path=str(args.quality), bench_path=str(args.bench),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Written by python -m tierscale_operator.sim.calibrate; do not edit by hand.\n"
                        + profile.to_yaml())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
