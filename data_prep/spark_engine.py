"""The Spark engine of `data_prep build` (`--engine spark`): the local engine's pipeline as Spark DataFrame
operations, writing the same corpus folder.

    pass 0  `spark_sources.canonical_frame`: the source read by Spark as the canonical log
    pass 1  time window, same-day de-duplication (a window function), the per-user table ranked by user id (Spark);
            its counts are collected in that order (a few numbers per user: the ids stay in Spark)
    filters and split: the local engine's `filter_and_split_users` on those counts, the rank standing in for the id
    pass 2  vocabulary counts of the train rows and the distinct descriptions (Spark aggregations, collected), then
            the local engine's vocabulary rules (`vocabularies_from_counts`) and text embeddings (`_write_texts`)
    pass 3  per-user rows: users hashed into buckets, each bucket encoded by the local engine's
            `processing.encode_rows` (`applyInPandas`), sorted by user and written as parquet parts by Spark; the
            driver streams the parts into the DatasetDict shards (`assemble_splits`) and `finish_build` writes
            vocab.json and metadata.json.

`build_dataset(..., engine="spark")` validates the output location and the options before Spark starts, and
commits the temporary folder exactly as the local engine does. pyspark is imported only here, and only when the
engine runs. On a cluster the input files and `--out` must lie on a filesystem every node mounts at the same path,
and the workers need this package installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modeling_shopperbert.contract import CATEGORY_FIELDS
from modeling_shopperbert.row_encoding import SECONDS_PER_DAY

from . import processing as P
from .build import (
    _BuildRun,
    _check_purchases_left,
    _Rows,
    _Split,
    _Vocabularies,
    _widen_years,
    _write_texts,
    assemble_splits,
    filter_and_split_users,
    finish_build,
    loaded_users,
    vocabularies_from_counts,
)
from .dataset_writer import MAX_SHARD_BYTES, ShardWriter
from .schema import DataPrepError

SPLITS = {1: "train", 2: "validation"}
PURCHASES_PER_BUCKET = 1_000_000  # pass 3 encodes about this many purchases per pandas call


def check_spark_available() -> None:
    """Refuse `--engine spark` (before any work) when pyspark or Java is missing."""
    try:
        spec = importlib.util.find_spec("pyspark")
    except (ImportError, ValueError):  # ValueError: a pyspark module without a spec (blocked in sys.modules)
        spec = None
    if spec is None:
        raise DataPrepError("--engine spark needs pyspark: pip install 'shopperbert[spark]' (or pip install "
                            "pyspark), or use --engine local")
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise DataPrepError("--engine spark needs Java (17 or newer): install it or set JAVA_HOME, or use "
                            "--engine local")


@contextmanager
def spark_session(master: str | None, progress: bool = True):
    """The active SparkSession (e.g. one a test or a notebook started; `master` is then ignored), else a new one on
    `master` (default: the master `spark-submit` was given, else `local[*]`), stopped afterwards; a new one shows
    Spark's console progress bar of each stage when `progress`. Times are read in UTC, so that naive timestamps keep
    their wall-clock time."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers run this interpreter
        builder = (SparkSession.builder.appName("shopperbert data_prep build")
                   .config("spark.ui.showConsoleProgress", "true" if progress else "false"))
        if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # that variable: launched by spark-submit
            master = master or "local[*]"
            builder = builder.master(master)
        if master and master.startswith("local"):  # Spark's 200 shuffle partitions cost minutes on a few cores
            builder = builder.config("spark.sql.shuffle.partitions", str(2 * _local_cores(master)))
            memory = _local_driver_memory()
            if memory:  # a local master runs every task in the driver's JVM: Spark's default 1g heap ran out of
                builder = builder.config("spark.driver.memory", memory)  # memory at 100k synthetic users (6.4M rows)
        spark = builder.getOrCreate()
    else:
        spark = active
    settings = {"spark.sql.session.timeZone": "UTC", "spark.sql.execution.arrow.pyspark.enabled": "true"}
    previous = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield spark
    finally:
        if active is None:
            spark.stop()
        else:
            for key, value in previous.items():
                spark.conf.set(key, value)


def _local_driver_memory() -> str | None:
    """The JVM heap of a local master this module starts: half the machine's memory (at most 32g), unless the user
    chose one (`SPARK_DRIVER_MEMORY`, or `--driver-memory` / `spark.driver.memory` in `PYSPARK_SUBMIT_ARGS`)."""
    chosen = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    if os.environ.get("SPARK_DRIVER_MEMORY") or "driver-memory" in chosen or "spark.driver.memory" in chosen:
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return f"{max(1, min(total // 2 // 1024**3, 32))}g"


def _local_cores(master: str) -> int:
    """The cores of a `local`, `local[N]` or `local[*]` master."""
    inside = master[master.find("[") + 1:master.find("]")] if "[" in master else "1"
    return int(inside) if inside.isdigit() else os.cpu_count() or 1


def spark_build(run: _BuildRun, master: str | None) -> dict:
    """Write the corpus files of `run` into `run.tmp` with Spark; returns the metadata (as `build._build` does)."""
    from .spark_sources import canonical_frame

    with spark_session(master, progress=run.progress) as spark:
        run.log(f"Spark {spark.version} on {spark.sparkContext.master}")
        loaded, compact, ranked = _load(run, canonical_frame(spark, run.source))
        split = filter_and_split_users(run, loaded.users, lambda start: _covered_windows(compact, ranked, len(
            loaded.users), start, run.options), id_rank=np.arange(len(loaded.users)))
        kept = _kept_rows(spark, compact, ranked, split)
        vocabularies = _vocabularies(run, kept, split)
        texts = _write_texts(run, vocabularies.descriptions)
        rows = _write_user_rows(run, kept, split, vocabularies)
        compact.unpersist()
        kept.unpersist()
    return finish_build(run, loaded, split, vocabularies, texts, rows)


# -- pass 1: time window, de-duplication, the user table ---------------------------------------------------------------

def _load(run: _BuildRun, raw):
    """Counts, time window and de-duplication; returns (`_Loaded` whose user table is in user-id order without the
    ids, the compact log persisted, the users ranked by id (user_id, rank; read from parquet in the scratch
    folder))."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    first = raw.agg(F.count(F.lit(1)).alias("n"), F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    counts = {"raw_rows": int(first["n"]), "rows_in_time_window": 0, "duplicates_removed": 0, "rows_after_dedup": 0}
    windowed = raw
    if run.start_ts is not None:
        windowed = windowed.filter(F.col("ts") >= P.timestamp_to_seconds(run.start_ts))
    if run.end_ts is not None:
        windowed = windowed.filter(F.col("ts") < P.timestamp_to_seconds(run.end_ts))
    counts["rows_in_time_window"] = windowed.count() if counts["raw_rows"] else 0
    _check_purchases_left(run, counts, first["lo"], first["hi"])
    compact = (_deduplicate(windowed) if run.options.dedup else windowed).persist(StorageLevel.MEMORY_AND_DISK)
    ranked = _rank_by_id(compact.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"), F.min("ts").alias("first_ts"),
                                                         F.max("ts").alias("last_ts")), run.work / "spark-users")
    table = ranked.select("rank", "n", "first_ts", "last_ts").toPandas()
    rank = table["rank"].to_numpy()
    if not np.array_equal(np.sort(rank), np.arange(len(rank))):
        raise RuntimeError(f"the ranks of {len(rank)} user ids are not 0..{len(rank) - 1}")  # internal invariant
    columns = {}
    for col in ("n", "first_ts", "last_ts"):
        columns[col] = np.empty(len(table), dtype=np.int64)
        columns[col][rank] = table[col].to_numpy()  # row r: the user of rank r
    del table, rank
    users = pd.DataFrame(columns)
    counts["rows_after_dedup"] = int(users["n"].sum())
    counts["duplicates_removed"] = counts["rows_in_time_window"] - counts["rows_after_dedup"]
    run.timings["load_dedup_seconds"] = round(time.perf_counter() - t0, 2)
    return loaded_users(run, users, counts, int(first["lo"]), int(first["hi"])), compact, ranked


def _rank_by_id(users, folder):
    """`users` with a column rank: the position of its user_id in byte (code-point) order, 0 first, as
    `processing.id_order` orders ids. Computed across partitions (a range-partitioned sort, then each partition's
    offset), not in one window over every user. The sorted users with their partition and row number are written to
    parquet in `folder` once and read back: a sort evaluated again may draw other partition boundaries (Spark samples
    them), so the offsets counted must be those of the rows ranked, and nothing downstream may recompute the sort."""
    from pyspark.sql import functions as F

    (users.orderBy("user_id").withColumn("_part", F.spark_partition_id())
     .withColumn("_row", F.monotonically_increasing_id()).write.parquet(str(folder)))
    ordered = users.sparkSession.read.parquet(str(folder))
    sizes = dict(ordered.groupBy("_part").count().collect())
    offsets, total = {}, 0
    for part in sorted(sizes):
        offsets[part], total = total, total + sizes[part]
    offset = F.create_map(*[F.lit(v) for part in sorted(offsets) for v in (part, offsets[part])])
    in_part = F.col("_row") - F.shiftleft(F.col("_part").cast("long"), 33)  # monotonically_increasing_id's layout
    return ordered.withColumn("rank", (offset[F.col("_part")] + in_part).cast("long")).drop("_part", "_row")


def _deduplicate(frame):
    """Keep the first purchase (by time, then read order) of each product by each user on each calendar day; the
    product is `product_id` when known, else (description, categories), as `processing.compact_log` decides."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    known = F.col("product_id").isNotNull()
    keys = [F.col("user_id"), F.col("product_id"), F.floor(F.col("ts") / SECONDS_PER_DAY)]
    keys += [F.when(~known, F.col(c)) for c in ("description",) + CATEGORY_FIELDS]
    order = Window.partitionBy(*keys).orderBy("ts", "_file", "_row")
    return frame.withColumn("_k", F.row_number().over(order)).filter(F.col("_k") == 1).drop("_k")


def _covered_windows(compact, ranked, count: int, period_start: int, options: P.ProcessingOptions) -> np.ndarray:
    """Per user in rank order (`count` users): the activity windows holding a purchase (`processing.window_ids`, in
    batches)."""
    from pyspark.sql import functions as F

    rate = options.min_monthly_rate

    def windows(batches):
        for batch in batches:
            yield pd.DataFrame({"user_id": batch["user_id"],
                                "w": P.window_ids(batch["ts"].to_numpy(), period_start, rate)})

    covered = (compact.select("user_id", "ts").mapInPandas(windows, "user_id string, w long").distinct()
               .groupBy("user_id").agg(F.count(F.lit(1)).alias("windows")).join(ranked.select("user_id", "rank"),
                                                                                 on="user_id")
               .select("rank", "windows").toPandas())
    out = np.zeros(count, dtype=np.int64)
    out[covered["rank"].to_numpy()] = covered["windows"].to_numpy()
    return out


def _kept_rows(spark, compact, ranked, split: _Split):
    """The compact log of the kept users with their split (1 train, 2 validation), persisted; the split reaches
    Spark by rank (`split.kept`: the kept ranks)."""
    from pyspark import StorageLevel

    status = pd.DataFrame({"rank": np.flatnonzero(split.kept).astype(np.int64),
                           "split": split.users["split"].to_numpy().astype(np.int32)})
    users = ranked.join(spark.createDataFrame(status, schema="rank long, split int"), on="rank").select("user_id",
                                                                                                       "split")
    return compact.join(users, on="user_id", how="inner").persist(StorageLevel.MEMORY_AND_DISK)


# -- pass 2: vocabularies and descriptions -----------------------------------------------------------------------------

def _vocabularies(run: _BuildRun, kept, split: _Split) -> _Vocabularies:
    """Category counts of the train rows and description counts of the kept rows (Spark), then the local engine's
    vocabulary rules; the year range comes from the user table's first and last purchases."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    pairs = F.explode(F.array(*[F.struct(F.lit(level).alias("level"), F.col(level).alias("value"))
                                for level in CATEGORY_FIELDS])).alias("pair")
    level_counts = (kept.filter(F.col("split") == 1).select(pairs).select("pair.level", "pair.value")
                    .filter(F.col("value").isNotNull()).groupBy("level", "value").count().toPandas())
    counts = {level: _value_counts(level_counts[level_counts["level"] == level]) for level in CATEGORY_FIELDS}
    users = split.users
    train = users[users["split"] == 1]
    train_years = _widen_years([None, None], np.array([train["first_ts"].min(), train["last_ts"].max()]))
    all_years = _widen_years([None, None], np.array([users["first_ts"].min(), users["last_ts"].max()]))
    vocabularies = vocabularies_from_counts(run, [counts], train_years, all_years, [_description_parts(kept)])
    run.timings["vocab_seconds"] = round(time.perf_counter() - t0, 2)
    return vocabularies


def _value_counts(frame: pd.DataFrame) -> pd.Series:
    """value -> count, as `processing.count_category_values` gives it for one level."""
    return pd.Series(frame["count"].to_numpy(dtype=np.int64), index=pd.Index(frame["value"].to_numpy(dtype=object),
                                                                              dtype=object))


def _description_parts(kept) -> tuple:
    """(descriptions with their purchase counts, distinct (description, product_id) pairs or None), as
    `build._description_stats` gives them."""
    from pyspark.sql import functions as F

    descriptions = kept.groupBy("description").agg(F.count(F.lit(1)).alias("num_purchases")).toPandas()
    descriptions = descriptions.astype({"description": object, "num_purchases": np.int64})
    pairs = (kept.filter(F.col("product_id").isNotNull()).select("description", "product_id").distinct()
             .toPandas().astype(object))
    return descriptions, (pairs if len(pairs) else None)


# -- pass 3: the per-user rows ----------------------------------------------------------------------------------------

def _write_user_rows(run: _BuildRun, kept, split: _Split, vocabularies: _Vocabularies) -> _Rows:
    """Encode the users in buckets (`processing.encode_rows`), write each split sorted by user as parquet parts, then
    stream the parts into the DatasetDict shards."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    users = split.users
    buckets = max(kept.sparkSession.sparkContext.defaultParallelism,
                  math.ceil(int(users["n"].sum()) / PURCHASES_PER_BUCKET))
    encoded = (kept.withColumn("_bucket", F.pmod(F.hash("user_id"), F.lit(buckets)))
               .groupBy("_bucket").applyInPandas(_bucket_encoder(vocabularies), _encoded_schema())
               .persist(StorageLevel.MEMORY_AND_DISK))
    writers, split_counts = {}, {}
    for code, name in SPLITS.items():
        folder = run.work / f"spark-{name}"
        encoded.filter(F.col("split") == code).drop("split").orderBy("user_id").write.parquet(str(folder))
        writers[name] = _shards_from_parts(folder, run.work / name)
        members = users[users["split"] == code]
        split_counts[name] = {"users": int(len(members)), "purchases": int(members["n"].sum())}
    encoded.unpersist()
    run.timings["encode_seconds"] = round(time.perf_counter() - t0, 2)
    assemble_splits(run, writers, split_counts)
    return _Rows(split_counts=split_counts, lengths=users["n"].to_numpy())


def _bucket_encoder(vocabularies: _Vocabularies):
    """The `applyInPandas` function: a bucket's purchases (complete users) -> its per-user rows and their split."""
    vocab, base_year, year_size = vocabularies.vocab, vocabularies.date_base_year, vocabularies.year_vocab_size
    descriptions = vocabularies.descriptions["description"].to_numpy(dtype=object)

    def encode(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(["user_id", "ts", "_file", "_row"], kind="stable").reset_index(drop=True)
        compact = pd.DataFrame({"user_id": frame["user_id"].astype(object).astype("category"),
                                "ts": frame["ts"].to_numpy(dtype=np.int64)})
        for column in CATEGORY_FIELDS + ("description",):
            compact[column] = frame[column].astype(object).astype("category")
        table = P.encode_rows(compact, vocab, pd.Index(descriptions, dtype=object), base_year, year_size)
        rows = table.to_pandas()
        rows["split"] = frame.groupby("user_id", sort=True)["split"].first().to_numpy(dtype=np.int32)
        return rows

    return encode


def _encoded_schema() -> str:
    """`processing.output_schema` in Spark's DDL, plus the split."""
    names = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint"}
    fields = []
    for field in P.output_schema():
        kind = field.type
        fields.append(f"{field.name} " + (f"array<{names[kind.value_type]}>" if pa.types.is_list(kind)
                                          else names[kind]))
    return ", ".join(fields + ["split int"])


def _shards_from_parts(parts_folder, shard_folder) -> ShardWriter:
    """Stream Spark's sorted parquet parts (in part order) into a split's Arrow shards."""
    schema = P.output_schema()
    writer = ShardWriter(shard_folder, schema, MAX_SHARD_BYTES)
    try:
        for part in sorted(parts_folder.glob("part-*.parquet")):
            for batch in pq.ParquetFile(part).iter_batches(batch_size=4096, columns=schema.names):
                writer.write(pa.Table.from_batches([batch]).cast(schema))
    finally:
        writer.close()
    shutil.rmtree(parts_folder, ignore_errors=True)
    return writer


__all__ = ["check_spark_available", "spark_build", "spark_session"]
