"""MovieLens (ml-latest, ml-25m, ml-20m ... CSV releases) -> RecBole atomic files.

Input ``src_dir`` holds ``ratings.csv`` (``userId,movieId,rating,timestamp``) and ``movies.csv``
(``movieId,title,genres``). Output, in ``out_dir``:

* ``{name}.inter``: ``user_id:token item_id:token rating:float timestamp:float``, one row per
  rating, in the order of ``ratings.csv``; values are written as read (ratings stay in half stars).
  A rating of a movie missing from ``movies.csv`` is dropped with a warning (damaged data: MovieLens
  guarantees the two files share their movie ids; the real ML-25M has no such row).
* ``{name}.item``: ``item_id:token movie_title:token_seq release_year:token class:token_seq``, the
  field names of RecBole's shipped ml-100k so the same task yaml applies to both. ``"Toy Story
  (1995)"`` becomes title ``Toy Story`` and year ``1995``; a range such as ``(2006–2007)`` gives its
  first year; a title without a year keeps its whole text and an empty year. Genres
  ``Adventure|Animation`` become ``Adventure Animation``; ``(no genres listed)`` becomes empty.
  Every movie of ``movies.csv`` is listed, rated or not.

``ratings.csv`` (25M rows for ML-25M) is read ``chunksize`` rows at a time and each chunk is written
out before the next is read, so memory is bounded by the chunk, not the file.
"""

import logging
from pathlib import Path

import pandas as pd

from recbole_pcl.data.converters.atomic import (
    Column,
    atomic_file,
    check_dataset_name,
    convert_atomically,
    describe_sources,
    read_csv_chunks,
)
from recbole_pcl.utils.errors import PCLError

logger = logging.getLogger(__name__)

RATING_COLUMNS = [
    Column("userId"),
    Column("movieId"),
    Column("rating", "number"),
    Column("timestamp", "number"),
]
# Titles and genres may legitimately be empty; ids may not.
MOVIE_COLUMNS = [Column("movieId"), Column("title", required=False), Column("genres", required=False)]

INTER_FIELDS = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
ITEM_FIELDS = {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"}

NO_GENRES = "(no genres listed)"
# "Title (1995)", "Title (2006–2007)", "Title (2007-)", possibly with trailing spaces.
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\s*\)\s*$"


def convert_movielens(src_dir, out_dir, dataset_name, chunksize=1_000_000) -> Path:
    """Convert a MovieLens CSV release in ``src_dir`` into ``out_dir/{dataset_name}.inter|.item``.

    ``out_dir`` is the RecBole dataset folder (``<data_path>/<dataset_name>``). It appears only when
    the conversion fully succeeded; if it already holds this very conversion it is returned as is.
    Raises :class:`PCLError` for a missing file, column or malformed value.
    """
    check_dataset_name(dataset_name)
    src_dir = Path(src_dir)
    ratings, movies = src_dir / "ratings.csv", src_dir / "movies.csv"
    description = describe_sources("movielens", dataset_name, [ratings, movies])

    def write(tmp_dir: Path) -> None:
        # Movies first: a problem in the small file is reported before the long pass over ratings,
        # and the ratings pass needs the movie ids.
        movie_ids = write_items(movies, tmp_dir / f"{dataset_name}.item", chunksize)
        write_interactions(ratings, tmp_dir / f"{dataset_name}.inter", chunksize, movie_ids)

    return convert_atomically(out_dir, description, write)


def write_interactions(ratings_csv: Path, inter_path: Path, chunksize: int, movie_ids: pd.Index) -> int:
    """Stream ``ratings.csv`` into the ``.inter`` file; returns the number of rows written.

    Ratings of a movie that ``movies.csv`` does not list are dropped with a warning: MovieLens
    documents that both files use the same movie ids, so such a row is damaged data, and kept it
    would become an item without title or genres.
    """
    dropped, first_dropped = 0, None
    with atomic_file(inter_path, INTER_FIELDS) as out:
        for chunk in read_csv_chunks(ratings_csv, RATING_COLUMNS, chunksize):
            known = chunk["movieId"].isin(movie_ids)
            if not known.all():
                dropped += int((~known).sum())
                if first_dropped is None:
                    row = int((~known).idxmax())
                    first_dropped = f"line {row + 2}, movieId {chunk['movieId'][row]}"
                chunk = chunk[known]
            out.write(chunk.rename(columns={"userId": "user_id", "movieId": "item_id"}).astype({"rating": "float64"}))
    if dropped:
        logger.warning(
            "%s: dropped %d rating(s) of movies not listed in movies.csv (first: %s)",
            Path(ratings_csv).absolute(),
            dropped,
            first_dropped,
        )
    return out.rows


def write_items(movies_csv: Path, item_path: Path, chunksize: int) -> pd.Index:
    """Write the ``.item`` file and return the movie ids; ``movies.csv`` is small (62k rows for
    ML-25M), read whole."""
    movies = pd.concat(list(read_csv_chunks(movies_csv, MOVIE_COLUMNS, chunksize)))
    duplicated = movies["movieId"].duplicated()
    if duplicated.any():
        row = int(duplicated.idxmax())
        raise PCLError(
            f"{Path(movies_csv).absolute()}: column 'movieId' repeats {movies['movieId'][row]!r} on line {row + 2}"
        )
    title, year = split_title_year(movies["title"])
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "movie_title": title,
            "release_year": year,
            "class": genre_tokens(movies["genres"]),
        }
    )
    with atomic_file(item_path, ITEM_FIELDS) as out:
        out.write(items)
    return pd.Index(movies["movieId"])


def split_title_year(titles: pd.Series):
    """``"Toy Story (1995)"`` -> (``"Toy Story"``, ``"1995"``); no year -> (whole title, ``""``).

    Runs of whitespace become one space: titles are token_seq fields, split on spaces.
    """
    titles = titles.fillna("").astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
    parts = titles.str.extract(_TITLE_YEAR)
    has_year = parts["year"].notna()
    title = titles.where(~has_year, parts["title"])
    year = parts["year"].where(has_year, "")
    return title, year


def genre_tokens(genres: pd.Series) -> pd.Series:
    """``"Adventure|Animation"`` -> ``"Adventure Animation"``; ``"(no genres listed)"`` -> ``""``.

    A space inside a genre name would split it into two tokens, so it becomes ``_``.
    """
    genres = genres.fillna("").astype(str).str.strip()
    genres = genres.where(genres != NO_GENRES, "")
    tokens = genres.str.split("|").map(lambda names: " ".join("_".join(name.split()) for name in names if name.strip()))
    return tokens
