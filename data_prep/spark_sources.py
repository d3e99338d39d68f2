"""Sources as Spark DataFrames: the canonical purchase log of `data_prep.schema`, read by Spark (the Spark engine's
pass 0; `data_prep.spark_engine` runs the rest).

`canonical_frame(spark, source)` returns one row per purchase with the columns

    user_id (string), ts (long: unix seconds of the naive wall-clock time), category_1..4, description, product_id
    (strings; missing = null, a missing description = "unknown product"), _file (int) and _row (long)

where (_file, _row) orders the rows as the local engine reads them (files in their sorted order, then file order;
equal times keep that order). What is not per-row work is the local engine's own code: the file and column checks
(`sources.check_file_columns`), the Complete Journey product table, the required-column and timestamp errors, and
text timestamps are parsed in batches by `schema.parse_text_timestamps`. pyspark is imported by the caller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modeling_shopperbert.contract import CATEGORY_FIELDS

from .completejourney import _completejourney_product_table, completejourney_data_dir
from .schema import (
    CANONICAL_NAMES,
    MISSING_DESCRIPTION,
    DataPrepError,
    _check_epoch_seconds,
    check_required_columns,
    parse_text_timestamps,
    unparsable_timestamp_error,
)
from .sources import (
    CompleteJourneySource,
    FileSource,
    LogSource,
    _csv_options,
    _parquet_schema,
    check_file_columns,
)

STRING_COLUMNS = ("user_id",) + CATEGORY_FIELDS + ("description", "product_id")
_EPOCH_DIVISORS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_CSV_OPTIONS = {"sep": "sep", "delimiter": "sep", "encoding": "encoding", "quotechar": "quote",
                "escapechar": "escape", "comment": "comment"}


def canonical_frame(spark, source: LogSource):
    """The canonical log of `source` as a Spark DataFrame (see the module docstring), its values checked: an empty
    user or timestamp, or a timestamp that does not parse, raises the local engine's `DataPrepError`."""
    if isinstance(source, CompleteJourneySource):
        return _completejourney_frame(spark, source)
    if isinstance(source, FileSource):
        frame = _files_frame(spark, source)
        _check_values(frame, source)
        return frame.drop("_ts_raw")
    return _driver_frame(spark, source)


# -- Complete Journey --------------------------------------------------------------------------------------------------

def _completejourney_frame(spark, source: CompleteJourneySource):
    """transactions.parquet read by Spark, joined with the local engine's product table (92k rows, broadcast)."""
    from pyspark.sql import functions as F

    folder = completejourney_data_dir()
    products = pd.read_parquet(folder / "products.parquet")
    table = _completejourney_product_table(products, source.fourth_level)
    table.insert(0, "product_id", products["product_id"].astype(str))
    table = table.astype(object).where(table.notna(), None)
    schema = ", ".join(f"{c} string" for c in table.columns)
    product_frame = spark.createDataFrame(table, schema=schema)
    tx = _numbered(spark.read.parquet(str(folder / "transactions.parquet")), 0)
    tx = tx.select(F.col("household_id").alias("user_id"), F.col("transaction_timestamp").alias("timestamp"),
                   F.col("product_id").cast("string").alias("product_id"), "_file", "_row")
    joined = tx.join(F.broadcast(product_frame), on="product_id", how="left")
    return _canonical_columns(joined, F.col("timestamp").cast("timestamp").cast("long"))


# -- files ------------------------------------------------------------------------------------------------------------

def _files_frame(spark, source: FileSource):
    """Every input file read by Spark with the column mapping, as one canonical frame (plus `_ts_raw`)."""
    if source.mapping.products:
        raise DataPrepError("--engine spark does not join a product table (mapping key 'products') yet; use "
                            "--engine local, or join the product table into the log files first")
    frames = [_file_frame(spark, path, i, source) for i, path in enumerate(source.files)]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame


def _file_frame(spark, path: Path, index: int, source: FileSource):
    """One file: checked by the local engine's `check_file_columns`, read by Spark, mapped, made canonical."""
    mapping = source.mapping
    kind, needed = check_file_columns(path, mapping)
    if kind == "parquet":
        raw = spark.read.parquet(str(path)).select(*needed)
    else:
        raw = spark.read.csv(str(path), header=True, inferSchema=False,
                             **_spark_csv_options(path, mapping.read_options)).select(*needed)
    mapped = _apply_mapping(_numbered(raw, index), mapping)
    check_required_columns([c for c in mapped.columns if not c.startswith("_")], str(path))
    ts_type = _parquet_schema(path).field(_source_name(mapping, "timestamp")).type if kind == "parquet" else None
    seconds = _timestamp_seconds(mapped, ts_type, mapping, str(path))
    return _canonical_columns(mapped.withColumn("_ts_raw", mapped["timestamp"].cast("string")), seconds)


def _spark_csv_options(path: Path, read_options: dict) -> dict:
    """The mapping's `read_options` (pandas names) as Spark CSV options; others are refused."""
    options = {}
    for key, value in _csv_options(path, read_options).items():
        if key not in _CSV_OPTIONS:
            raise DataPrepError(f"read_options {key!r} is not supported by --engine spark (it supports "
                                f"{sorted(_CSV_OPTIONS)}); use --engine local")
        options[_CSV_OPTIONS[key]] = value
    return {"quote": '"', "escape": '"', **options}


def _source_name(mapping, canonical: str) -> str:
    source = mapping.columns.get(canonical, canonical)
    return source if isinstance(source, str) else ""


def _apply_mapping(raw, mapping):
    """Source columns -> canonical names (a description of several columns joins the non-empty ones with " | ",
    as `sources._apply_mapping` does)."""
    from pyspark.sql import functions as F

    columns = {name: name for name in CANONICAL_NAMES if name in raw.columns}
    columns.update(mapping.columns)
    selected = [F.col("_file"), F.col("_row")]
    for name, source in columns.items():
        if isinstance(source, list):
            parts = [F.when(F.trim(F.col(s).cast("string")) != "", F.trim(F.col(s).cast("string"))) for s in source]
            selected.append(F.concat_ws(" | ", *parts).alias(name))
        else:
            selected.append(F.col(source).alias(name))
    return raw.select(*selected)


def _timestamp_seconds(frame, arrow_type, mapping, origin: str):
    """The `timestamp` column as unix seconds of the wall-clock time (null where a text value does not parse):
    timestamps as they are (timezone-aware ones at `mapping.timezone` or their own zone), numbers as epochs in
    `mapping.timestamp_unit`, text by `schema.parse_text_timestamps` in batches."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = frame["timestamp"]
    dtype = frame.schema["timestamp"].dataType
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        aware = getattr(arrow_type, "tz", None)  # naive timestamps keep their wall-clock time, as in the local engine
        zone = (mapping.timezone or aware) if aware else None
        column = column.cast("timestamp")
        return (F.from_utc_timestamp(column, zone) if zone else column).cast("long")
    if isinstance(dtype, T.NumericType):
        if mapping.timestamp_unit is None:
            biggest = frame.agg(F.max(F.abs(column))).first()[0]
            _check_epoch_seconds(pd.Series([float(biggest or 0)]), origin, "timestamp")
        return F.floor(column / F.lit(_EPOCH_DIVISORS[mapping.timestamp_unit or "s"])).cast("long")
    return _text_seconds_udf(mapping, origin)(column.cast("string"))


def _text_seconds_udf(mapping, origin: str):
    from pyspark.sql.functions import pandas_udf

    fmt, zone = mapping.timestamp_format, mapping.timezone

    @pandas_udf("long")
    def text_seconds(text: pd.Series) -> pd.Series:
        parsed = parse_text_timestamps(text, fmt, zone, f"{origin}: column 'timestamp'")
        seconds = parsed.to_numpy().astype("datetime64[s]").astype(np.int64)
        return pd.Series(seconds, index=text.index).where(parsed.notna().to_numpy(), None).astype("Int64")

    return text_seconds


def _check_values(frame, source: FileSource) -> None:
    """Refuse an empty user or timestamp, or a timestamp that does not parse (the local engine's errors, naming the
    first such file and value; Spark does not know row numbers)."""
    from pyspark.sql import functions as F

    problems = {
        "user": F.col("user_id").isNull(),
        "empty_ts": F.col("_ts_raw").isNull(),
        "bad_ts": F.col("ts").isNull() & F.col("_ts_raw").isNotNull(),
    }
    totals = frame.agg(F.count(F.lit(1)).alias("rows"),
                       *[F.sum(cond.cast("long")).alias(name) for name, cond in problems.items()]).first()
    for name, cond in problems.items():
        if totals[name]:
            first = frame.filter(cond).orderBy("_file", "_row").select("_file", "_ts_raw").first()
            where = str(source.files[first["_file"]])
            if name == "user":
                raise DataPrepError(f"{where}: column 'user_id' is empty in {totals[name]} rows; every purchase "
                                    "needs a user")
            if name == "empty_ts":
                raise DataPrepError(f"{where}: column 'timestamp' is empty in {totals[name]} rows; every purchase "
                                    "needs a timestamp")
            raise unparsable_timestamp_error(f"{where}: cannot parse column 'timestamp' value {first['_ts_raw']!r}",
                                             source.mapping.timestamp_format, int(totals[name]), int(totals["rows"]))


# -- any other source, and the shared column rules --------------------------------------------------------------------

def _driver_frame(spark, source: LogSource):
    """A source Spark cannot read itself (e.g. `DataFrameSource`): its chunks, validated by the local engine, are
    handed to Spark."""
    from pyspark.sql import functions as F

    parts = []
    for index, (_, chunk) in enumerate(source.chunks()):
        table = pd.DataFrame({c: chunk[c].astype(object).where(chunk[c].notna(), None) for c in STRING_COLUMNS})
        table["timestamp"] = chunk["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
        schema = ", ".join(f"{c} string" for c in STRING_COLUMNS) + ", timestamp long"
        parts.append(_numbered(spark.createDataFrame(table, schema=schema), index))
    frame = parts[0]
    for other in parts[1:]:
        frame = frame.unionByName(other)
    return _canonical_columns(frame, F.col("timestamp"))


def _numbered(frame, file_index: int):
    """Add `_file` and `_row`: Spark keeps the splits of one file in file order, so ids increase with the row."""
    from pyspark.sql import functions as F

    return frame.withColumn("_file", F.lit(file_index)).withColumn("_row", F.monotonically_increasing_id())


def _canonical_columns(frame, seconds):
    """The canonical columns: text cleaned as `schema.validate_log` does, `ts` from the `seconds` expression."""
    from pyspark.sql import functions as F

    columns = [_clean_text(frame, name).alias(name) if name in frame.columns else F.lit(None).cast("string").alias(name)
               for name in STRING_COLUMNS]
    columns[STRING_COLUMNS.index("description")] = F.coalesce(columns[STRING_COLUMNS.index("description")],
                                                               F.lit(MISSING_DESCRIPTION)).alias("description")
    extra = [c for c in ("_ts_raw",) if c in frame.columns]
    return frame.select(*columns, seconds.alias("ts"), "_file", "_row", *extra)


def _clean_text(frame, name: str):
    """A column as text: whitespace runs become one space, surrounding space goes, "" is missing; numbers are
    written as text, whole floats without ".0" (`schema._to_category`'s rules)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column, dtype = F.col(name), frame.schema[name].dataType
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        return F.when(column == F.floor(column), column.cast("long").cast("string")).otherwise(column.cast("string"))
    if not isinstance(dtype, T.StringType):
        return column.cast("string")
    text = F.trim(F.regexp_replace(column, r"(?U)\s+", " "))
    return F.when(text != "", text)


__all__ = ["canonical_frame", "STRING_COLUMNS"]
