"""The tier profile file: service time and offline quality of each model-server tier.

Format (YAML, `format: tierscale-tier-profile/v1`):

    format: tierscale-tier-profile/v1
    status: measured            # or provisional: numbers not yet measured by the calibration command
    description: free text saying where the numbers come from
    warmup_s: 60                # from pod start to Ready (model load, item tower), seconds
    tiers:                      # cheapest first, names as in the RecommenderDeployment
      - name: small
        gpus_per_replica: 1
        servers_per_replica: 1  # requests a replica serves in parallel (queueing servers)
        service_ms: {mean: 5.0, cv: 0.3}   # per-request service time at one server
        quality: {hr_at_10: 0.12, ndcg_at_10: 0.06}   # offline evaluation, test split

`service_ms.mean` is the time one server is busy per request, so a replica's capacity is
servers_per_replica * 1000 / mean requests per second. `cv` is the coefficient of variation
(standard deviation / mean) of the service time. The calibration command derives both from the
server benchmark (see `tierscale_operator.sim.calibrate`).
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILE_FORMAT = "tierscale-tier-profile/v1"
STATUSES = ("measured", "provisional")
MEASURED_PROFILE = "measured.yaml"
PROVISIONAL_PROFILE = "provisional.yaml"


class ProfileError(ValueError):
    """A tier profile file is invalid; the message names the file, the field and the value."""


@dataclasses.dataclass(frozen=True)
class TierProfile:
    name: str
    gpus_per_replica: int
    servers_per_replica: int
    service_ms_mean: float
    service_ms_cv: float
    hr_at_10: float
    ndcg_at_10: float

    @property
    def capacity_rps_per_replica(self) -> float:
        return self.servers_per_replica * 1000.0 / self.service_ms_mean


@dataclasses.dataclass(frozen=True)
class ServiceProfile:
    status: str
    description: str
    warmup_s: float
    tiers: tuple[TierProfile, ...]
    path: str = ""

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def to_yaml(self) -> str:
        data = {
            "format": PROFILE_FORMAT,
            "status": self.status,
            "description": self.description,
            "warmup_s": self.warmup_s,
            "tiers": [
                {
                    "name": t.name,
                    "gpus_per_replica": t.gpus_per_replica,
                    "servers_per_replica": t.servers_per_replica,
                    "service_ms": {"mean": t.service_ms_mean, "cv": t.service_ms_cv},
                    "quality": {"hr_at_10": t.hr_at_10, "ndcg_at_10": t.ndcg_at_10},
                }
                for t in self.tiers
            ],
        }
        return yaml.safe_dump(data, sort_keys=False, width=100)


def default_profile_path() -> Path:
    """Return the shipped profile: `measured.yaml` once the calibration command wrote it, else `provisional.yaml`."""
    folder = Path(str(resources.files("tierscale_operator.sim") / "profiles"))
    measured = folder / MEASURED_PROFILE
    return measured if measured.is_file() else folder / PROVISIONAL_PROFILE


def load_profile(path: str | Path | None = None) -> ServiceProfile:
    """Read and validate a profile file; None reads the default shipped with the package."""
    path = Path(path) if path is not None else default_profile_path()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ProfileError(f"cannot read tier profile {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ProfileError(f"tier profile {path} is not valid YAML: {error}") from error
    return parse_profile(data, str(path))


def parse_profile(data: Any, where: str = "<profile>") -> ServiceProfile:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: the profile must be a mapping, got {type(data).__name__}")
    if data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{where}: format must be {PROFILE_FORMAT!r}, got {data.get('format')!r}")
    status = data.get("status")
    if status not in STATUSES:
        raise ProfileError(f"{where}: status must be one of {STATUSES}, got {status!r}")
    warmup_s = _number(data, "warmup_s", where, low=0.0)
    tiers_data = data.get("tiers")
    if not isinstance(tiers_data, list) or not tiers_data:
        raise ProfileError(f"{where}: tiers must be a non-empty list, got {tiers_data!r}")

    tiers = []
    for i, tier in enumerate(tiers_data):
        field = f"{where}: tiers[{i}]"
        if not isinstance(tier, dict):
            raise ProfileError(f"{field} must be a mapping, got {tier!r}")
        name = tier.get("name")
        if not isinstance(name, str) or not name:
            raise ProfileError(f"{field}.name must be a non-empty string, got {name!r}")
        service = tier.get("service_ms")
        quality = tier.get("quality")
        if not isinstance(service, dict):
            raise ProfileError(f"{field}.service_ms must be a mapping with mean and cv, got {service!r}")
        if not isinstance(quality, dict):
            raise ProfileError(f"{field}.quality must be a mapping with hr_at_10 and ndcg_at_10, got {quality!r}")
        tiers.append(TierProfile(
            name=name,
            gpus_per_replica=_integer(tier, "gpus_per_replica", field, default=1),
            servers_per_replica=_integer(tier, "servers_per_replica", field, default=1),
            service_ms_mean=_number(service, "mean", f"{field}.service_ms", low=0.0, low_open=True),
            service_ms_cv=_number(service, "cv", f"{field}.service_ms", low=0.0),
            hr_at_10=_number(quality, "hr_at_10", f"{field}.quality", low=0.0, high=1.0),
            ndcg_at_10=_number(quality, "ndcg_at_10", f"{field}.quality", low=0.0, high=1.0),
        ))
        if tiers[-1].ndcg_at_10 > tiers[-1].hr_at_10:
            raise ProfileError(f"{field}.quality: ndcg_at_10 ({tiers[-1].ndcg_at_10}) cannot exceed "
                               f"hr_at_10 ({tiers[-1].hr_at_10}) with one relevant item")
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: tier names must be unique, got {names}")
    return ServiceProfile(status=status, description=str(data.get("description", "")), warmup_s=warmup_s,
                          tiers=tuple(tiers), path=where)


def _number(data: dict[str, Any], key: str, where: str, *, low: float, high: float = math.inf,
            low_open: bool = False) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where}.{key} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        raise ProfileError(f"{where}.{key} must be {'>' if low_open else '>='} {low}"
                           f"{'' if high == math.inf else f' and <= {high}'}, got {value}")
    return float(value)


def _integer(data: dict[str, Any], key: str, where: str, *, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProfileError(f"{where}.{key} must be an integer >= 1, got {value!r}")
    return value
