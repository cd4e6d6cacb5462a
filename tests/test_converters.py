"""Dataset converters: MovieLens and Tenrec to RecBole atomic files, the synthetic Tenrec generator,
and the atomic-output guarantees (nothing half-written, a good conversion never replaced by a bad one).

The MovieLens tests read the real ml-latest-small release from ``../shared/data`` beside the
repository (never copied into it) and are skipped when it is absent.
"""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_pcl.data.converters import atomic, convert_movielens, convert_tenrec, generate_synthetic_tenrec
from recbole_pcl.utils.errors import PCLError

# On one pytest worker: its module fixtures (converted datasets) are built once
pytestmark = pytest.mark.xdist_group("converters")

ML_SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
RAW_TENREC = [
    "user_id",
    "item_id",
    "click",
    "follow",
    "like",
    "share",
    "video_category",
    "watching_times",
    "gender",
    "age",
]


@pytest.fixture(scope="module")
def ml_small():
    if not (ML_SMALL / "ratings.csv").is_file() or not (ML_SMALL / "movies.csv").is_file():
        pytest.skip(f"real MovieLens test data absent: expected ratings.csv and movies.csv in {ML_SMALL}")
    return ML_SMALL


@pytest.fixture(scope="module")
def ml_converted(ml_small, tmp_path_factory):
    """ml-latest-small converted once into <data_path>/mls (RecBole's dataset folder layout)."""
    data_path = tmp_path_factory.mktemp("ml_data")
    out = convert_movielens(ml_small, data_path / "mls", "mls", chunksize=30_000)  # 4 chunks
    return data_path, out


def read_atomic(path):
    """An atomic file as text columns named without their ``:type``, empty cells as ''."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def header(path):
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\n").split("\t")


def leftovers(parent):
    """Temporary / swapped-out directories a conversion might have left beside its output."""
    return sorted(p.name for p in Path(parent).iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def recbole_sequential_dataset(data_path, dataset, load_col):
    from recbole.data.dataset import SequentialDataset

    config_dict = {
        "data_path": str(data_path),
        "load_col": load_col,
        "state": "WARNING",
        "show_progress": False,
    }
    from recbole_pcl.compat import dataset_class
    from recbole_pcl.config import Config

    return dataset_class(SequentialDataset)(Config(model="SASRec", dataset=dataset, config_dict=config_dict))


# ---------------------------------------------------------------------------------------- MovieLens
def test_movielens_inter_keeps_every_rating(ml_small, ml_converted):
    _, out = ml_converted
    assert header(out / "mls.inter") == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    inter = read_atomic(out / "mls.inter")
    raw = pd.read_csv(ml_small / "ratings.csv", dtype=str)
    # Ratings of movies absent from movies.csv are dropped. The stored copy of ml-latest-small ends
    # with one such damaged row ("999,999999,..."), not in the published release; the numbers below
    # are the release's, from its README.
    movies = pd.read_csv(ml_small / "movies.csv", dtype=str)
    raw = raw[raw["movieId"].isin(movies["movieId"])].reset_index(drop=True)
    assert len(inter) == 100_836
    assert inter["user_id"].nunique() == 610
    assert inter["item_id"].nunique() == raw["movieId"].nunique() == 9_724
    # Same rows in the same order, values unchanged (ratings stay half stars).
    assert (inter["user_id"] == raw["userId"]).all() and (inter["item_id"] == raw["movieId"]).all()
    np.testing.assert_array_equal(inter["rating"].astype(float), raw["rating"].astype(float))
    np.testing.assert_array_equal(inter["timestamp"].astype(np.int64), raw["timestamp"].astype(np.int64))
    assert sorted(inter["rating"].astype(float).unique()) == [x / 2 for x in range(1, 11)]


def test_movielens_item_titles_years_and_genres(ml_small, ml_converted):
    _, out = ml_converted
    # The field names of RecBole's shipped ml-100k, so one task yaml serves both.
    import recbole

    ml100k_item = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.item"
    assert header(out / "mls.item") == header(ml100k_item)
    items = read_atomic(out / "mls.item").set_index("item_id")
    assert len(items) == 9_742 and items.index.is_unique  # every movie of movies.csv, rated or not
    assert items.loc["1"].tolist() == ["Toy Story", "1995", "Adventure Animation Children Comedy Fantasy"]
    assert items.loc["2"].tolist() == ["Jumanji", "1995", "Adventure Children Fantasy"]
    assert items.loc["27008"].tolist() == [
        "From Dusk Till Dawn 2: Texas Blood Money",
        "1999",
        "Comedy Crime Horror",
    ]  # trailing space
    assert items.loc["40697"].tolist() == ["Babylon 5", "", "Sci-Fi"]  # no year in the title
    assert items.loc["143410"].tolist() == ["Hyena Road", "", ""]  # (no genres listed)
    assert items.loc["171749"].tolist() == ["Death Note: Desu nôto", "2006", ""]  # (2006–2007): first year
    assert items.loc["7789", "movie_title"] == "11'09\"01 - September 11"  # quotes survive the round trip
    assert (items["class"] == "").sum() == 34
    assert set(" ".join(items["class"]).split()) == {
        "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
        "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    }  # fmt: skip


def test_movielens_output_loads_in_recbole(ml_converted, monkeypatch):
    monkeypatch.setattr("sys.argv", ["x"])
    data_path, _ = ml_converted
    load_col = {
        "inter": ["user_id", "item_id", "rating", "timestamp"],
        "item": ["item_id", "movie_title", "class"],
    }
    dataset = recbole_sequential_dataset(data_path, "mls", load_col)
    assert dataset.inter_num == 100_836
    assert dataset.user_num == 611 and dataset.item_num == 9_743  # + RecBole's [PAD]
    toy_story = dataset.token2id("item_id", "1")
    classes = dataset.item_feat["class"][toy_story]
    assert [dataset.id2token("class", int(c)) for c in classes if c] == [
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    ]
    no_genre = dataset.token2id("item_id", "143410")
    assert int((dataset.item_feat["class"][no_genre] != 0).sum()) == 0
    rows = dataset.inter_feat[dataset.inter_feat["user_id"] == dataset.token2id("user_id", "1")]
    first = rows[rows["item_id"] == toy_story]
    assert float(first["rating"][0]) == 4.0 and float(first["timestamp"][0]) == 964982703.0


def test_movielens_chunk_size_does_not_change_output(ml_small, ml_converted, tmp_path):
    _, out = ml_converted
    single = convert_movielens(ml_small, tmp_path / "one", "mls", chunksize=200_000)  # one chunk
    for name in ("mls.inter", "mls.item"):
        assert (single / name).read_bytes() == (out / name).read_bytes()


# ---------------------------------------------------------------------------------------- Tenrec
@pytest.fixture(scope="module")
def tenrec_csv(tmp_path_factory):
    return generate_synthetic_tenrec(
        tmp_path_factory.mktemp("tenrec") / "QB-video.csv", n_users=200, n_items=150, seed=7
    )


@pytest.fixture(scope="module")
def tenrec_converted(tenrec_csv, tmp_path_factory):
    data_path = tmp_path_factory.mktemp("tenrec_data")
    return data_path, convert_tenrec(tenrec_csv, data_path / "tr", "tr", chunksize=997)


def test_tenrec_small_chunks_equal_one_chunk(tenrec_csv, tenrec_converted, tmp_path):
    _, out = tenrec_converted
    whole = convert_tenrec(tenrec_csv, tmp_path / "tr", "tr", chunksize=10_000_000)
    assert sum(1 for _ in open(tenrec_csv)) - 1 > 5 * 997  # the small chunk size really splits the file
    for name in ("tr.inter", "tr.item", "tr.user"):
        assert (whole / name).read_bytes() == (out / name).read_bytes(), name


def test_tenrec_inter_keeps_clicks_in_order(tenrec_csv, tenrec_converted):
    _, out = tenrec_converted
    raw = pd.read_csv(tenrec_csv, dtype=str)
    inter = read_atomic(out / "tr.inter")
    assert list(inter.columns) == [
        "user_id",
        "item_id",
        "timestamp",
        "click",
        "like",
        "follow",
        "share",
        "watching_times",
    ]
    clicked = raw[raw["click"] == "1"]
    assert 0 < len(clicked) < len(raw)  # the input does have impressions (click = 0) to drop
    assert len(inter) == len(clicked) and (inter["click"] == "1").all()
    # timestamp = the row's position in the raw file, so each user's click order is kept.
    np.testing.assert_array_equal(inter["timestamp"].astype(int), clicked.index.to_numpy())
    for column in ("user_id", "item_id", "like", "follow", "share", "watching_times"):
        assert (inter[column].to_numpy() == clicked[column].to_numpy()).all(), column
    for user in ("0", "57", "199"):
        ordered = inter[inter["user_id"] == user].sort_values("timestamp", key=lambda s: s.astype(int))
        assert ordered["item_id"].tolist() == raw[(raw["user_id"] == user) & (raw["click"] == "1")]["item_id"].tolist()


def test_tenrec_item_and_user_tables(tenrec_csv, tenrec_converted):
    _, out = tenrec_converted
    raw = pd.read_csv(tenrec_csv, dtype=str)
    clicked = raw[raw["click"] == "1"]
    items = read_atomic(out / "tr.item")
    users = read_atomic(out / "tr.user")
    assert header(out / "tr.item") == ["item_id:token", "video_category:token"]
    assert header(out / "tr.user") == ["user_id:token", "gender:token", "age:token"]
    # Exactly the items / users of the interactions, each once.
    assert sorted(items["item_id"]) == sorted(clicked["item_id"].unique())
    assert sorted(users["user_id"]) == sorted(clicked["user_id"].unique())
    category = dict(zip(raw["item_id"], raw["video_category"]))  # constant per item in the generator
    assert (items["video_category"] == items["item_id"].map(category)).all()
    raw_users = raw.drop_duplicates("user_id").set_index("user_id")
    expected_age = raw_users.loc[users["user_id"], "age"].replace("0", "").to_numpy()
    expected_gender = raw_users.loc[users["user_id"], "gender"].replace("0", "").to_numpy()
    assert (users["age"].to_numpy() == expected_age).all() and (users["gender"].to_numpy() == expected_gender).all()
    assert 0 < (users["age"] == "").sum() < len(users) / 4  # unknown ages exist and are written empty
    assert set(users["age"]) - {""} <= {str(a) for a in range(1, 8)} and "0" not in set(users["gender"])


def test_tenrec_output_loads_in_recbole(tenrec_converted, monkeypatch):
    monkeypatch.setattr("sys.argv", ["x"])
    data_path, out = tenrec_converted
    load_col = {
        "inter": ["user_id", "item_id", "timestamp", "like"],
        "item": ["item_id", "video_category"],
        "user": ["user_id", "gender", "age"],
    }
    dataset = recbole_sequential_dataset(data_path, "tr", load_col)
    users = read_atomic(out / "tr.user")
    assert dataset.inter_num == len(read_atomic(out / "tr.inter"))
    unknown = users.loc[users["age"] == "", "user_id"].iloc[0]
    known = users[users["age"] != ""].iloc[0]
    assert int(dataset.user_feat["age"][dataset.token2id("user_id", unknown)]) == 0  # missing -> [PAD]
    age_id = int(dataset.user_feat["age"][dataset.token2id("user_id", known["user_id"])])
    assert dataset.id2token("age", age_id) == known["age"]


def test_tenrec_without_clicks_gives_empty_tables(tenrec_csv, tmp_path):
    raw = pd.read_csv(tenrec_csv, nrows=300)
    impressions = tmp_path / "impressions.csv"
    raw[raw["click"] == 0].to_csv(impressions, index=False)
    out = convert_tenrec(impressions, tmp_path / "imp", "imp", chunksize=10)
    for name, fields in (("imp.inter", 8), ("imp.item", 2), ("imp.user", 3)):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == 1 and len(lines[0].split("\t")) == fields, name


# ---------------------------------------------------------------------------------------- synthetic
def test_synthetic_tenrec_schema_determinism_and_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_pcl.data.converters.tenrec"):
        a = generate_synthetic_tenrec(tmp_path / "a.csv", n_users=50, seed=3)
    assert any("SYNTHETIC" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    b = generate_synthetic_tenrec(tmp_path / "b.csv", n_users=50, seed=3)
    c = generate_synthetic_tenrec(tmp_path / "c.csv", n_users=50, seed=4)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    raw = pd.read_csv(a)
    assert list(raw.columns) == RAW_TENREC
    assert raw["user_id"].nunique() == 50 and set(raw["click"]) == {0, 1}
    lengths = raw[raw["click"] == 1].groupby("user_id").size()
    assert lengths.min() >= 20 and lengths.max() <= 80
    assert set(raw["gender"]) <= {0, 1, 2} and set(raw["age"]) <= set(range(8))
    assert (raw.loc[raw["click"] == 0, ["like", "follow", "share", "watching_times"]] == 0).all().all()
    assert raw.groupby("item_id")["video_category"].nunique().max() == 1
    assert raw.groupby("user_id")[["gender", "age"]].nunique().max().max() == 1


def _age_margin(raw, hist):
    """Accuracy of the nearest age-centroid of category histograms (fitted on half the users, tested on
    the other half) minus the majority class's."""
    age = raw.groupby("user_id")["age"].first().to_numpy()
    known = np.flatnonzero(age > 0)
    train, test = known[::2], known[1::2]
    ages = np.unique(age[train])
    centroids = np.stack([hist[train][age[train] == a].mean(axis=0) for a in ages])
    predicted = ages[np.argmin(((hist[test][:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)]
    return (predicted == age[test]).mean() - (age[test] == np.bincount(age[train]).argmax()).mean()


def _category_histograms(clicks):
    hist = pd.crosstab(clicks["user_id"], clicks["video_category"]).to_numpy().astype(float)
    return hist / hist.sum(axis=1, keepdims=True)


def test_synthetic_tenrec_is_learnable(tmp_path):
    """Categories are sticky from one click to the next, age is predictable from behaviour, likes go
    with affinity."""
    raw = pd.read_csv(generate_synthetic_tenrec(tmp_path / "s.csv", seed=11))  # defaults: 1000 users
    clicks = raw[raw["click"] == 1]
    same_user = clicks["user_id"].to_numpy()[1:] == clicks["user_id"].to_numpy()[:-1]
    cat = clicks["video_category"].to_numpy()
    stay = (cat[1:] == cat[:-1])[same_user].mean()
    hist = _category_histograms(clicks)
    chance = (hist**2).sum(axis=1).mean()  # P(same category) if a user's clicks were shuffled
    assert stay > chance + 0.2

    # Age: how well one classifier does depends on the seed's category leanings: on average over seeds
    margins = [_age_margin(raw, hist)]
    for seed in (12, 13, 14):
        other = pd.read_csv(generate_synthetic_tenrec(tmp_path / f"s{seed}.csv", seed=seed))
        margins.append(_age_margin(other, _category_histograms(other[other["click"] == 1])))
    assert np.mean(margins) > 0.05, margins

    # Likes go with affinity: users like more within their favourite category than outside it.
    favourite = pd.Series(hist.argmax(axis=1), index=np.unique(clicks["user_id"]))
    in_favourite = clicks["video_category"].to_numpy() == favourite.loc[clicks["user_id"]].to_numpy()
    like = clicks["like"].to_numpy()
    assert like[in_favourite].mean() > 1.3 * like[~in_favourite].mean()


def test_synthetic_tenrec_streams_users_in_chunks(tmp_path):
    """Users are written chunk by chunk (bounded memory); every user's rows are contiguous and in order."""
    path = generate_synthetic_tenrec(tmp_path / "c.csv", n_users=250, n_items=120, seed=5, chunk_users=64)
    raw = pd.read_csv(path)
    users = raw["user_id"].to_numpy()
    assert sorted(set(users)) == list(range(250)) and (np.diff(users) >= 0).all()
    assert raw.groupby("user_id")["click"].sum().between(20, 80).all()
    again = pd.read_csv(generate_synthetic_tenrec(tmp_path / "d.csv", n_users=250, n_items=120, seed=5, chunk_users=64))
    pd.testing.assert_frame_equal(raw, again)


# ---------------------------------------------------------------------------------------- errors
def write_movielens(src, ratings_rows, header="userId,movieId,rating,timestamp"):
    src.mkdir(parents=True, exist_ok=True)
    (src / "ratings.csv").write_text(header + "\n" + "".join(r + "\n" for r in ratings_rows))
    (src / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Crime\n")
    return src


GOOD_RATINGS = [f"{u},{m},{(u + m) % 10 / 2 + 0.5},{1000 + u * 10 + m}" for u in range(1, 30) for m in (1, 2)]


def test_ratings_of_unlisted_movies_are_dropped_with_a_warning(tmp_path, caplog):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS[:6] + ["7,999,4.5,77"] + GOOD_RATINGS[6:] + ["8,998,1.0,78"])
    with caplog.at_level(logging.WARNING, logger="recbole_pcl.data.converters.movielens"):
        out = convert_movielens(src, tmp_path / "ml", "ml", chunksize=5)
    inter = read_atomic(out / "ml.inter")
    assert len(inter) == len(GOOD_RATINGS) and set(inter["item_id"]) == {"1", "2"}
    expected = "dropped 2 rating(s) of movies not listed in movies.csv (first: line 8, movieId 999)"
    assert f"{(src / 'ratings.csv').absolute()}: {expected}" in caplog.text


def test_missing_file_names_the_file(tmp_path):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS)
    (src / "movies.csv").unlink()
    with pytest.raises(PCLError) as err:
        convert_movielens(src, tmp_path / "out", "ml")
    assert str(err.value) == f"{(src / 'movies.csv').absolute()}: file not found"
    with pytest.raises(PCLError, match="no-such.csv: file not found"):
        convert_tenrec(tmp_path / "no-such.csv", tmp_path / "out", "tr")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_missing_column_names_file_and_column(tmp_path, tenrec_csv):
    src = write_movielens(tmp_path / "src", ["1,1,1000", "2,1,1001"], header="userId,movieId,timestamp")
    with pytest.raises(PCLError) as err:
        convert_movielens(src, tmp_path / "out", "ml")
    message = str(err.value)
    assert message == f"{(src / 'ratings.csv').absolute()}: missing column 'rating' (found: userId, movieId, timestamp)"
    assert "\n" not in message

    raw = pd.read_csv(tenrec_csv, nrows=50).drop(columns=["click"])
    bad = tmp_path / "QK-video.csv"
    raw.to_csv(bad, index=False)
    with pytest.raises(PCLError, match=r"QK-video.csv: missing column 'click' \(found: user_id, item_id, follow"):
        convert_tenrec(bad, tmp_path / "out", "tr")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_bad_value_names_file_column_and_line(tmp_path):
    rows = list(GOOD_RATINGS)
    rows[40] = "21,2,four,1212"
    src = write_movielens(tmp_path / "src", rows)
    with pytest.raises(PCLError) as err:
        convert_movielens(src, tmp_path / "out", "ml", chunksize=16)
    assert (
        str(err.value)
        == f"{(src / 'ratings.csv').absolute()}: column 'rating' has a non-numeric value 'four' on line 42"
    )


def test_repeated_movie_id_names_file_column_and_line(tmp_path):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS)
    with open(src / "movies.csv", "a") as f:
        f.write("3,Up (2009),Animation\n1,Toy Story again (1995),Comedy\n")
    with pytest.raises(PCLError) as err:
        convert_movielens(src, tmp_path / "out", "ml")
    assert str(err.value) == f"{(src / 'movies.csv').absolute()}: column 'movieId' repeats '1' on line 5"
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_failure_mid_conversion_leaves_nothing(tmp_path, monkeypatch):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS)
    calls = []
    original = atomic.AtomicFileWriter.write

    def write_then_fail(self, frame):
        calls.append(len(frame))
        if len(calls) == 3:  # .item, then one chunk of .inter, then a crash
            raise RuntimeError("disk full")
        original(self, frame)

    monkeypatch.setattr(atomic.AtomicFileWriter, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_movielens(src, tmp_path / "data" / "ml", "ml", chunksize=10)
    assert len(calls) == 3
    assert not (tmp_path / "data" / "ml").exists() and leftovers(tmp_path / "data") == []


def test_failed_run_keeps_previous_complete_output(tmp_path):
    out = convert_movielens(write_movielens(tmp_path / "src", GOOD_RATINGS), tmp_path / "data" / "ml", "ml")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {".complete", "ml.inter", "ml.item"}

    # The source changes (so the output is not reused) and breaks on its last line, after several
    # chunks have been written to the temporary directory.
    rows = GOOD_RATINGS + ["30,1,,1301"]
    write_movielens(tmp_path / "src", rows)
    with pytest.raises(PCLError, match=r"ratings.csv: column 'rating' is empty on line 60"):
        convert_movielens(tmp_path / "src", out, "ml", chunksize=8)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path / "data") == []


def test_complete_output_is_reused_and_a_changed_source_replaces_it(tmp_path, monkeypatch):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS)
    out = convert_movielens(src, tmp_path / "data" / "ml", "ml")
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's private 0700

    def must_not_run(*args, **kwargs):
        raise AssertionError("a complete conversion was redone")

    with monkeypatch.context() as m:
        m.setattr("recbole_pcl.data.converters.movielens.write_interactions", must_not_run)
        assert convert_movielens(src, out, "ml") == out

    write_movielens(src, GOOD_RATINGS[:10])
    os.utime(src / "ratings.csv", ns=(1, 1))  # a different source, even within the same mtime tick
    convert_movielens(src, out, "ml")
    assert len(read_atomic(out / "ml.inter")) == 10 and leftovers(tmp_path / "data") == []


def test_refuses_a_directory_that_is_not_a_conversion(tmp_path):
    src = write_movielens(tmp_path / "src", GOOD_RATINGS)
    mine = tmp_path / "data" / "ml"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(PCLError, match=r"ml: exists but is not a finished conversion"):
        convert_movielens(src, mine, "ml")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and leftovers(tmp_path / "data") == []
    with pytest.raises(PCLError, match="dataset name '../x'"):
        convert_movielens(src, tmp_path / "other", "../x")


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
