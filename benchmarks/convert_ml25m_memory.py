"""Memory and time of ``convert_movielens`` on a MovieLens-25M-sized input.

Writes SYNTHETIC ``ratings.csv`` / ``movies.csv`` files in the ML-25M format and size (25,000,095
ratings by 162,541 users of 59,047 movies; random values, not MovieLens data) into a temporary
directory, converts them in a child process, and prints the number of rows, the conversion's wall
time and its peak resident memory (``ru_maxrss`` of the child), also as a fraction of 24 GiB.

    python benchmarks/convert_ml25m_memory.py                 # full size (several minutes, ~1.4 GB disk)
    python benchmarks/convert_ml25m_memory.py --ratings 2000000 --users 13000   # quick look

The conversion runs in its own process so that its peak memory is not mixed up with the
generator's; the parent's own peak is printed too.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3
BUDGET = 24 * GIB
GENRES = np.array(
    ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
     "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
)  # fmt: skip
HALF_STARS = np.arange(1, 11) / 2
# Roughly ML-25M's rating histogram, 0.5 .. 5.0.
HALF_STAR_P = np.array([1.6, 3.2, 1.6, 6.6, 5.1, 19.6, 12.5, 26.6, 8.8, 14.4])
HALF_STAR_P = HALF_STAR_P / HALF_STAR_P.sum()


def user_counts(rng, n_users, n_ratings, minimum=20):
    """Ratings per user: heavy-tailed like ML-25M (at least 20 each), summing to ``n_ratings``."""
    raw = rng.lognormal(mean=0.0, sigma=1.2, size=n_users)
    counts = minimum + np.floor(raw / raw.sum() * (n_ratings - minimum * n_users)).astype(np.int64)
    shortfall = n_ratings - counts.sum()
    counts[rng.choice(n_users, size=shortfall, replace=False)] += 1  # floor() left < n_users over
    return counts


def write_movies(path, rng, movie_ids):
    """``movies.csv`` with titles "Synthetic Movie N, The (year)" and 0-4 genres."""
    n = len(movie_ids)
    n_genres = rng.integers(0, 5, size=n)
    genres = [
        "|".join(sorted(rng.choice(GENRES, size=k, replace=False))) if k else "(no genres listed)" for k in n_genres
    ]
    titles = [f"Synthetic Movie {m}, The ({y})" for m, y in zip(movie_ids, rng.integers(1900, 2020, size=n))]
    pd.DataFrame({"movieId": movie_ids, "title": titles, "genres": genres}).to_csv(path, index=False)


def write_ratings(path, rng, counts, movie_ids, block_rows=1_000_000):
    """``ratings.csv`` sorted by user, written a block of users at a time (bounded memory)."""
    popularity = 1.0 / np.arange(1, len(movie_ids) + 1) ** 0.9  # Zipf-like, as in MovieLens
    cdf = np.cumsum(rng.permutation(popularity))
    cdf /= cdf[-1]
    ends = np.cumsum(counts)
    first_user = 0
    with open(path, "w", newline="") as f:
        f.write("userId,movieId,rating,timestamp\n")
        while first_user < len(counts):
            start = ends[first_user - 1] if first_user else 0
            last_user = int(np.searchsorted(ends, start + block_rows, side="right"))
            last_user = max(last_user, first_user + 1)
            block_counts = counts[first_user:last_user]
            n = int(block_counts.sum())
            user = np.repeat(np.arange(first_user + 1, last_user + 1), block_counts)
            movie = movie_ids[np.minimum(np.searchsorted(cdf, rng.random(n)), len(movie_ids) - 1)]
            rating = rng.choice(HALF_STARS, size=n, p=HALF_STAR_P)
            # Each user's timestamps increase from a random start (1995..2019).
            gaps = np.cumsum(rng.integers(1, 86_400, size=n))
            offset = gaps - np.repeat(gaps[np.cumsum(block_counts) - block_counts], block_counts)
            begin = rng.integers(789_000_000, 1_560_000_000, size=len(block_counts))
            timestamp = np.repeat(begin, block_counts) + offset
            pd.DataFrame({"userId": user, "movieId": movie, "rating": rating, "timestamp": timestamp}).to_csv(
                f, header=False, index=False, lineterminator="\n"
            )
            first_user = last_user


def generate(src, n_ratings, n_users, n_movies, seed):
    rng = np.random.default_rng(seed)
    # Movie ids spread over 1..209171 like ML-25M's.
    movie_ids = np.sort(rng.choice(np.arange(1, 209_172), size=n_movies, replace=False))
    write_movies(src / "movies.csv", rng, movie_ids)
    write_ratings(src / "ratings.csv", rng, user_counts(rng, n_users, n_ratings), movie_ids)


CHILD = """
import json, resource, sys, time
from recbole_pcl.data.converters import convert_movielens
src, out, chunksize = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
convert_movielens(src, out, "ml-25m-synthetic", chunksize=chunksize)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def convert_in_child(src, out, chunksize):
    """Run the conversion in a fresh interpreter; returns its own timing and peak RSS."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), str(chunksize)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=25_000_095)
    parser.add_argument("--users", type=int, default=162_541)
    parser.add_argument("--movies", type=int, default=59_047)
    parser.add_argument("--chunksize", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--workdir", help="where to put the temporary files (default: system temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ml25m-bench-", dir=args.workdir) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "dataset" / "ml-25m-synthetic"
        src.mkdir()
        start = time.perf_counter()
        generate(src, args.ratings, args.users, args.movies, args.seed)
        generated = time.perf_counter() - start
        size = (src / "ratings.csv").stat().st_size
        print(
            f"generated SYNTHETIC ML-25M-format input: {args.ratings:,} ratings, {args.users:,} users, "
            f"{args.movies:,} movies, ratings.csv {size / GIB:.2f} GiB in {generated:.1f} s",
            flush=True,
        )

        child = convert_in_child(src, out, args.chunksize)
        with open(out / "ml-25m-synthetic.inter") as f:
            rows = sum(1 for _ in f) - 1
        children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        parent_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    peak = max(child["maxrss_kib"], children_kib) * 1024  # Linux reports KiB
    print(f"rows converted:           {rows:,}")
    print(f"conversion wall time:     {child['seconds']:.1f} s  (chunksize {args.chunksize:,})")
    print(f"conversion peak RSS:      {peak / GIB:.2f} GiB  = {peak / BUDGET:.1%} of 24 GiB  (child ru_maxrss)")
    print(f"generator peak RSS:       {parent_kib * 1024 / GIB:.2f} GiB  (this process, not the conversion)")
    if rows != args.ratings:
        sys.exit(f"expected {args.ratings:,} rows, got {rows:,}")


if __name__ == "__main__":
    main()
