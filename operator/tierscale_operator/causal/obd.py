"""Reader for the Open Bandit Dataset small sample shipped in the sdist of obp 0.5.7.

The Open Bandit Dataset (ZOZOTOWN fashion recommendations) logs two policies, uniform Random and
Bernoulli Thompson Sampling (BTS), on three campaigns (all, men, women). The sdist carries
10,000 rows of each under `obp/dataset/obd/{random,bts}/{campaign}/`. Each row is one item shown
at one of three positions, with its click and the behaviour policy's propensity for that item at
that position. `obp/policy/conf/prior_bts.yaml` holds the Beta priors of the production BTS
policy. obp itself is not installed: this module reads the CSV and YAML files straight from the
tarball, which `download_obp_sdist` fetches with pip into the cache.

    python -m tierscale_operator.causal.obd download   # fetch the sdist into the cache
    python -m tierscale_operator.causal.obd summary    # print row counts and mean clicks
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

OBP_VERSION = "0.5.7"
BEHAVIOUR_POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_POSITIONS = 3
_SDIST_PREFIX = f"obp-{OBP_VERSION}/obp"


class ObdDataError(RuntimeError):
    """The obp sdist is missing, could not be downloaded, or does not contain what is expected."""


def cache_dir() -> Path:
    root = os.environ.get("TIERSCALE_CACHE") or str(Path.home() / ".cache" / "tierscale")
    return Path(root) / "downloads" / "obp"


def sdist_path(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"obp-{OBP_VERSION}.tar.gz"


def download_obp_sdist(directory: Path | None = None) -> Path:
    """Fetch the obp sdist with `pip download` unless it is already in the cache; returns its path.

    The sdist declares Python < 3.11, so pip needs --ignore-requires-python to fetch it on newer
    interpreters; nothing is built or installed.
    """
    path = sdist_path(directory)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--ignore-requires-python", "--dest", str(path.parent), f"obp=={OBP_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.exists():
        raise ObdDataError(
            f"pip download of obp=={OBP_VERSION} failed (exit {result.returncode}); "
            f"stderr tail: {result.stderr[-2000:]}"
        )
    return path


def _open_sdist(path: Path | None) -> tarfile.TarFile:
    path = path or sdist_path()
    if not path.exists():
        raise ObdDataError(
            f"{path} not found; run `make obd-data` or "
            "`python -m tierscale_operator.causal.obd download` to fetch the obp sdist"
        )
    return tarfile.open(path, "r:gz")


def _read_member(archive: tarfile.TarFile, name: str) -> str:
    try:
        member = archive.extractfile(name)
    except KeyError as error:
        raise ObdDataError(f"{name} is missing from {archive.name}") from error
    if member is None:
        raise ObdDataError(f"{name} in {archive.name} is not a regular file")
    return member.read().decode("utf-8")


def sdist_sha256(path: Path | None = None) -> str:
    return hashlib.sha256((path or sdist_path()).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ObdLog:
    """One behaviour policy's log on one campaign, rows sorted by timestamp (stable).

    `position` is 0-based. `user_features` are the four hashed categorical user features;
    `affinity` the user-item affinity columns. `item_numeric` is item_feature_0 per item and
    `item_categorical` the hashed item_feature_1..3 per item.
    """

    behaviour_policy: str
    campaign: str
    timestamp: np.ndarray
    hour_of_day: np.ndarray
    action: np.ndarray
    position: np.ndarray
    click: np.ndarray
    propensity: np.ndarray
    user_features: np.ndarray
    affinity: np.ndarray
    item_numeric: np.ndarray
    item_categorical: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_numeric.shape[0])


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def load_obd_log(behaviour_policy: str, campaign: str, *, path: Path | None = None) -> ObdLog:
    """Read one log CSV and its item_context.csv from the sdist."""
    _check_choice("behaviour_policy", behaviour_policy, BEHAVIOUR_POLICIES)
    _check_choice("campaign", campaign, CAMPAIGNS)
    folder = f"{_SDIST_PREFIX}/dataset/obd/{behaviour_policy}/{campaign}"
    with _open_sdist(path) as archive:
        log_text = _read_member(archive, f"{folder}/{campaign}.csv")
        item_text = _read_member(archive, f"{folder}/item_context.csv")

    rows = list(csv.DictReader(io.StringIO(log_text)))
    if not rows:
        raise ObdDataError(f"{folder}/{campaign}.csv has no rows")
    header = list(rows[0].keys())
    user_columns = [column for column in header if column.startswith("user_feature_")]
    affinity_columns = sorted(
        (column for column in header if column.startswith("user-item_affinity_")),
        key=lambda column: int(column.rsplit("_", 1)[1]),
    )
    # A stable sort keeps the file order among the rows of one recommendation list, which share
    # a timestamp.
    rows.sort(key=lambda row: row["timestamp"])

    items = sorted(csv.DictReader(io.StringIO(item_text)), key=lambda row: int(row["item_id"]))
    item_ids = [int(item["item_id"]) for item in items]
    if item_ids != list(range(len(items))):
        raise ObdDataError(f"{folder}/item_context.csv item ids are not 0..{len(items) - 1}")

    positions = np.array([int(row["position"]) for row in rows])
    if positions.min() != 1 or positions.max() != N_POSITIONS:
        raise ObdDataError(f"positions in {folder} span {positions.min()}..{positions.max()}, expected 1..{N_POSITIONS}")
    return ObdLog(
        behaviour_policy=behaviour_policy,
        campaign=campaign,
        timestamp=np.array([row["timestamp"] for row in rows]),
        hour_of_day=np.array([int(row["timestamp"][11:13]) for row in rows]),
        action=np.array([int(row["item_id"]) for row in rows]),
        position=positions - 1,
        click=np.array([float(row["click"]) for row in rows]),
        propensity=np.array([float(row["propensity_score"]) for row in rows]),
        user_features=np.array([[row[column] for column in user_columns] for row in rows]),
        affinity=np.array([[float(row[column]) for column in affinity_columns] for row in rows]),
        item_numeric=np.array([float(item["item_feature_0"]) for item in items]),
        item_categorical=np.array([[item[f"item_feature_{k}"] for k in (1, 2, 3)] for item in items]),
    )


def load_bts_prior(campaign: str, *, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the production BTS policy's Beta prior (alpha, beta) per item for `campaign`."""
    _check_choice("campaign", campaign, CAMPAIGNS)
    with _open_sdist(path) as archive:
        document = yaml.safe_load(_read_member(archive, f"{_SDIST_PREFIX}/policy/conf/prior_bts.yaml"))
    try:
        alpha = np.asarray(document[campaign]["alpha"], dtype=float)
        beta = np.asarray(document[campaign]["beta"], dtype=float)
    except (KeyError, TypeError) as error:
        raise ObdDataError(f"prior_bts.yaml has no alpha/beta for campaign {campaign!r}") from error
    if alpha.shape != beta.shape or (alpha <= 0).any() or (beta <= 0).any():
        raise ObdDataError(f"prior_bts.yaml alpha/beta for {campaign!r} are not positive vectors of one length")
    return alpha, beta


def bts_action_distribution(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    n_positions: int = N_POSITIONS,
    n_samples: int = 1_000_000,
    seed: int = 12345,
    chunk: int = 50_000,
) -> np.ndarray:
    """Monte-Carlo probability that BTS shows item a at position k, shape (n_items, n_positions).

    Each draw samples a score per item from Beta(alpha, beta) and shows the items with the
    highest scores at positions 1, 2, 3 in that order, as the production policy did with no
    observed rewards on top of its prior. The standard error of each probability is at most
    0.5 / sqrt(n_samples).
    """
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    n_items = alpha.shape[0]
    if n_positions > n_items:
        raise ValueError(f"n_positions ({n_positions}) exceeds the number of items ({n_items})")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_items, n_positions))
    done = 0
    while done < n_samples:
        size = min(chunk, n_samples - done)
        scores = rng.beta(alpha, beta, size=(size, n_items))
        top = np.argpartition(-scores, n_positions - 1, axis=1)[:, :n_positions]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1)
        for position in range(n_positions):
            counts[:, position] += np.bincount(ranked[:, position], minlength=n_items)
        done += size
    return counts / n_samples


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch or summarise the Open Bandit Dataset sample from the obp sdist.")
    parser.add_argument("command", choices=["download", "summary"])
    args = parser.parse_args(argv)
    if args.command == "download":
        print(download_obp_sdist())
        return 0
    for behaviour in BEHAVIOUR_POLICIES:
        for campaign in CAMPAIGNS:
            log = load_obd_log(behaviour, campaign)
            print(f"{behaviour:6s} {campaign:5s} rows={log.n_rows} items={log.n_items} mean_click={log.click.mean():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
