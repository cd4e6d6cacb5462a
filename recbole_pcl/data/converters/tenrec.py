"""Tenrec (``QB-video.csv`` / ``QK-video.csv``) -> RecBole atomic files, and a SYNTHETIC Tenrec-format
data generator for tests and demos.

Raw Tenrec video files have the columns
``user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age`` and no
timestamp: each user's rows are in the order the user saw them. :func:`convert_tenrec` writes

* ``{name}.inter``: ``user_id:token item_id:token timestamp:float click:float like:float
  follow:float share:float watching_times:float``. ``timestamp`` is the row's position in the raw
  file (0 = first data row), which keeps every user's order. **Only rows with ``click == 1`` are
  kept**: the others are impressions the user did not watch, not interactions (so ``click`` is 1 on
  every written row; it is kept so task configs may name it).
* ``{name}.item``: ``item_id:token video_category:token``, the first category seen for each item.
* ``{name}.user``: ``user_id:token gender:token age:token``, first values seen for each user; the
  code 0 ("unknown") is written as an empty cell, which RecBole loads as a missing value.

The ``.item`` and ``.user`` tables list exactly the items and users of the ``.inter`` file. The raw
file (14 GiB for QK-video) is read ``chunksize`` rows at a time; interactions are written chunk by
chunk, while the per-item and per-user tables are accumulated (far smaller than the interactions).

:func:`generate_synthetic_tenrec` writes a SYNTHETIC file in exactly the raw Tenrec schema. It is not
Tenrec data: it only mimics its format and has learnable structure (see its docstring).
"""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_pcl.data.converters.atomic import (
    Column,
    atomic_file,
    check_dataset_name,
    convert_atomically,
    describe_sources,
    read_csv_chunks,
)

logger = logging.getLogger(__name__)

RAW_COLUMNS = [
    "user_id", "item_id", "click", "follow", "like", "share",
    "video_category", "watching_times", "gender", "age",
]  # fmt: skip
TENREC_COLUMNS = [
    Column("user_id"),
    Column("item_id"),
    Column("click", "number"),
    Column("follow", "number"),
    Column("like", "number"),
    Column("share", "number"),
    Column("video_category"),
    Column("watching_times", "number"),
    # Demographics may be unknown (0) or, in a damaged file, empty: both become missing.
    Column("gender", required=False),
    Column("age", required=False),
]
INTER_FIELDS = {
    "user_id": "token", "item_id": "token", "timestamp": "float", "click": "float",
    "like": "float", "follow": "float", "share": "float", "watching_times": "float",
}  # fmt: skip
ITEM_FIELDS = {"item_id": "token", "video_category": "token"}
USER_FIELDS = {"user_id": "token", "gender": "token", "age": "token"}
UNKNOWN_CODE = "0"


def convert_tenrec(csv_path, out_dir, dataset_name, chunksize=1_000_000) -> Path:
    """Convert a raw Tenrec video CSV into ``out_dir/{dataset_name}.inter|.item|.user``.

    ``out_dir`` is the RecBole dataset folder (``<data_path>/<dataset_name>``). It appears only when
    the conversion fully succeeded; if it already holds this very conversion it is returned as is.
    The result does not depend on ``chunksize``. Raises :class:`PCLError` for a missing file, column
    or malformed value.
    """
    check_dataset_name(dataset_name)
    csv_path = Path(csv_path)
    description = describe_sources("tenrec", dataset_name, [csv_path])

    def write(tmp_dir: Path) -> None:
        items = FirstSeen(list(ITEM_FIELDS), chunksize)
        users = FirstSeen(list(USER_FIELDS), chunksize)
        with atomic_file(tmp_dir / f"{dataset_name}.inter", INTER_FIELDS) as out:
            for chunk in read_csv_chunks(csv_path, TENREC_COLUMNS, chunksize):
                # The chunk index is the row's position in the whole file: the click order.
                clicked = chunk[chunk["click"] == 1].assign(timestamp=lambda c: c.index.to_numpy())
                out.write(clicked)
                items.add(clicked)
                users.add(clicked)
        with atomic_file(tmp_dir / f"{dataset_name}.item", ITEM_FIELDS) as out:
            out.write(items.table())
        with atomic_file(tmp_dir / f"{dataset_name}.user", USER_FIELDS) as out:
            out.write(unknown_as_missing(users.table(), ["gender", "age"]))

    return convert_atomically(out_dir, description, write)


class FirstSeen:
    """The first row seen for each key (``columns[0]``) over a stream of chunks, in order of first
    appearance.

    Each chunk is reduced to its distinct keys at once; the reduced parts are merged when they hold
    as many rows as the merged table (and at least ``compact_rows``), so memory follows the number
    of distinct keys, not of rows, and merging costs amortised linear time.
    """

    def __init__(self, columns: list[str], compact_rows: int):
        self.columns = list(columns)
        self.key = self.columns[0]
        self.compact_rows = max(int(compact_rows), 1)
        self._parts: list[pd.DataFrame] = []
        self._pending = 0
        self._merged = 0

    def add(self, frame: pd.DataFrame) -> None:
        part = frame[self.columns].drop_duplicates(self.key, keep="first")
        self._parts.append(part)
        self._pending += len(part)
        if self._pending >= max(self.compact_rows, self._merged):
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) > 1:
            # keep="first" over parts kept in stream order = the first value ever seen.
            merged = pd.concat(self._parts, ignore_index=True).drop_duplicates(self.key, keep="first")
            self._parts = [merged]
        self._merged = len(self._parts[0]) if self._parts else 0
        self._pending = 0

    def table(self) -> pd.DataFrame:
        self._compact()
        return self._parts[0] if self._parts else pd.DataFrame(columns=self.columns)


def unknown_as_missing(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Tenrec codes unknown gender/age as 0; an empty token is what RecBole treats as missing."""
    frame = frame.copy()
    for column in columns:
        values = frame[column].fillna("").astype(str).str.strip()
        frame[column] = values.where(values != UNKNOWN_CODE, "")
    return frame


# =====================================================================================================
# SYNTHETIC data generator. Everything below produces MADE-UP data in the Tenrec file format; it is
# not Tenrec and must never be reported as results on Tenrec.
# =====================================================================================================
LATENT_DIM = 8
STAY_IN_CATEGORY = 0.7  # Markov tendency: probability the next watched video keeps the category
IMPRESSION_RATE = 0.25  # probability that an unwatched impression (click = 0) precedes a click
AFFINITY_WEIGHT = 1.5  # item choice ~ popularity * exp(AFFINITY_WEIGHT * standardised affinity)
LIKE_OFFSET = 4.0  # P(like) = sigmoid(2 * affinity - LIKE_OFFSET): rare, and rising with affinity
UNKNOWN_RATE = 0.05  # fraction of users whose gender / age is unknown (code 0)


def generate_synthetic_tenrec(
    csv_path, n_users=1000, n_items=800, n_categories=10, seed=2020, min_len=20, max_len=80, chunk_users=2000
) -> Path:
    """Write a SYNTHETIC CSV in exactly the raw Tenrec schema, deterministic for ``seed`` (and
    ``chunk_users``).

    Structure a model can learn:

    * each item has a category and a latent vector near its category's centroid, and a popularity;
    * each user has interests, a Dirichlet mixture over categories, and a latent vector near the
      mixture of those centroids;
    * a user watches ``min_len..max_len`` videos; the category of the next one stays the same with
      probability 0.7 (sequential dependence), else is redrawn from the interests; within a category
      an item is drawn with probability ~ popularity * exp(1.5 * user-item affinity);
    * like (thumb-up) probability rises with affinity; follow and share mostly go with a like;
      watching_times grows with affinity;
    * age (1-7) and gender (1-2) are drawn from the interests (each category leans to some ages and
      a gender), so they are predictable from behaviour; 5% of each are unknown (0);
    * about one click in four is preceded by an impression the user did not watch (click = 0).

    Users are written one after the other, each user's rows in watching order, like raw Tenrec.
    Users are generated and written ``chunk_users`` at a time, so memory stays bounded
    (``chunk_users x n_items`` affinities) however many users there are.
    """
    if n_categories < 1 or n_items < n_categories or n_users < 1 or not 1 <= min_len <= max_len or chunk_users < 1:
        raise ValueError(
            "need n_users >= 1, n_items >= n_categories >= 1, 1 <= min_len <= max_len and chunk_users >= 1"
        )
    rng = np.random.default_rng(seed)
    items = _synthetic_items(rng, n_items, n_categories)
    # Each category leans to a couple of age groups and to one gender.
    leans = {"age": rng.dirichlet(np.full(7, 0.1), size=n_categories), "gender": rng.beta(0.4, 0.4, size=n_categories)}
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed, so an interrupted run never leaves a truncated file.
    partial = csv_path.with_name(f".{csv_path.name}.partial-{os.getpid()}")
    scale = None
    try:
        with open(partial, "w", encoding="utf-8", newline="") as f:
            f.write(",".join(RAW_COLUMNS) + "\n")
            for first in range(0, n_users, chunk_users):
                chunk_rng = np.random.default_rng([seed, first // chunk_users])
                users = np.arange(first, min(first + chunk_users, n_users))
                interests, user_vec, gender, age = _synthetic_users(chunk_rng, len(users), items["centroids"], leans)
                affinity = (user_vec @ items["vec"].T).astype(np.float32)
                if scale is None:  # standardised by the first chunk, so the scales below mean something
                    scale = (float(affinity.mean()), float(affinity.std()))
                affinity = (affinity - scale[0]) / scale[1]
                _synthetic_chunk(chunk_rng, users, interests, affinity, gender, age, items, min_len, max_len).to_csv(
                    f, header=False, index=False, lineterminator="\n"
                )
        os.replace(partial, csv_path)
    finally:
        partial.unlink(missing_ok=True)
    logger.warning("%s is SYNTHETIC Tenrec-format data (seed %d), not the real Tenrec dataset", csv_path, seed)
    return csv_path


def _synthetic_chunk(rng, users, interests, affinity, gender, age, items, min_len, max_len):
    """The rows of ``users`` (a chunk), each user's in watching order."""
    parts = [
        _synthetic_user_rows(rng, u, interests[i], affinity[i], items, min_len, max_len) for i, u in enumerate(users)
    ]
    local = np.repeat(np.arange(len(users)), [len(p[0]) for p in parts])
    item = np.concatenate([p[0] for p in parts])
    click = np.concatenate([p[1] for p in parts])
    aff = affinity[local, item]
    like = (rng.random(len(item)) < _sigmoid(2.0 * aff - LIKE_OFFSET)) & (click == 1)
    follow = (rng.random(len(item)) < np.where(like, 0.25, 0.01)) & (click == 1)
    share = (rng.random(len(item)) < np.where(like, 0.15, 0.005)) & (click == 1)
    watching = np.where(click == 1, 1 + rng.poisson(np.exp(0.5 * aff)), 0)
    return pd.DataFrame(
        {
            "user_id": users[local],
            "item_id": item,
            "click": click,
            "follow": follow.astype(int),
            "like": like.astype(int),
            "share": share.astype(int),
            "video_category": items["category"][item],
            "watching_times": watching,
            "gender": gender[local],
            "age": age[local],
        }
    )[RAW_COLUMNS]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _synthetic_items(rng, n_items, n_categories):
    """Categories (each used at least once), latent vectors near category centroids, popularity."""
    centroids = rng.normal(size=(n_categories, LATENT_DIM)) * 1.5
    category = rng.permutation(np.arange(n_items) % n_categories)
    vec = centroids[category] + 0.7 * rng.normal(size=(n_items, LATENT_DIM))
    popularity = rng.lognormal(0.0, 1.0, size=n_items)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    return {
        "centroids": centroids,
        "category": category,
        "vec": vec,
        "popularity": popularity,
        "cum_popularity": np.cumsum(popularity),
        "by_category": by_category,
    }


def _synthetic_users(rng, n_users, centroids, leans):
    """Interests, latent vectors and demographics that depend on the interests (``leans``: each
    category's age distribution and probability of gender 2)."""
    n_categories = len(centroids)
    interests = rng.dirichlet(np.full(n_categories, 0.3), size=n_users)
    user_vec = interests @ centroids + 0.7 * rng.normal(size=(n_users, LATENT_DIM))
    # Cubing sharpens the mixture so the dominant interests decide.
    age_p = (interests @ leans["age"]) ** 3
    age_p /= age_p.sum(axis=1, keepdims=True)
    age = 1 + (rng.random((n_users, 1)) > np.cumsum(age_p, axis=1)).sum(axis=1)
    age = np.minimum(age, 7)
    gender = np.where(rng.random(n_users) < interests @ leans["gender"], 2, 1)
    age[rng.random(n_users) < UNKNOWN_RATE] = 0
    gender[rng.random(n_users) < UNKNOWN_RATE] = 0
    return interests, user_vec, gender, age


def _synthetic_user_rows(rng, user, interests, affinity, items, min_len, max_len):
    """One user's (items, clicks) in watching order: clicked videos, some preceded by an impression.

    Repeats are allowed (users rewatch), as in real logs.
    """
    length = int(rng.integers(min_len, max_len + 1))
    cum_interest = np.cumsum(interests)
    # Category chain: stay with probability STAY_IN_CATEGORY, else redraw from the interests; each
    # position takes the category drawn at the latest redraw.
    redraw = rng.random(length) >= STAY_IN_CATEGORY
    fresh = np.minimum(np.searchsorted(cum_interest, rng.random(length) * cum_interest[-1]), len(interests) - 1)
    redraw[0] = True
    categories = fresh[np.maximum.accumulate(np.where(redraw, np.arange(length), 0))]
    # Items within each category: probability ~ popularity * exp(affinity).
    weight = items["popularity"] * np.exp(AFFINITY_WEIGHT * affinity)
    watched = np.empty(length, dtype=np.int64)
    for c in np.unique(categories):
        at = np.flatnonzero(categories == c)
        candidates = items["by_category"][c]
        cum = np.cumsum(weight[candidates])
        pick = np.minimum(np.searchsorted(cum, rng.random(len(at)) * cum[-1]), len(candidates) - 1)
        watched[at] = candidates[pick]
    # Impressions (click = 0) of popular items, slotted just before some clicks.
    impression_before = np.flatnonzero(rng.random(length) < IMPRESSION_RATE)
    shown = np.minimum(
        np.searchsorted(items["cum_popularity"], rng.random(len(impression_before)) * items["cum_popularity"][-1]),
        len(items["cum_popularity"]) - 1,
    )
    order = np.concatenate([2 * np.arange(length) + 1, 2 * impression_before])
    item = np.concatenate([watched, shown])
    click = np.concatenate([np.ones(length, dtype=np.int64), np.zeros(len(shown), dtype=np.int64)])
    sort = np.argsort(order, kind="stable")
    return item[sort], click[sort]
