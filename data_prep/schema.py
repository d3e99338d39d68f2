"""The canonical purchase log, written down once, and its validation.

Every source (Complete Journey, a retailer's parquet/CSV files, the synthetic generator) is first turned into a
pandas DataFrame with exactly these columns; everything downstream reads only this schema.

=============  ==========  =========  ==================================================================
column         type        required   meaning
=============  ==========  =========  ==================================================================
user_id        string      yes        the buyer (any id; kept as text)
timestamp      datetime    yes        when the purchase happened (wall-clock time of the shop, naive)
category_1     string      no         coarsest category level (e.g. department); missing -> [UNK]
category_2     string      no         second level (e.g. product category); missing -> [UNK]
category_3     string      no         third level (e.g. product type); missing -> [UNK]
category_4     string      no         finest level (e.g. manufacturer, sub-type); missing -> [UNK]
description    string      yes        product text, embedded by the sentence-transformers model
product_id     string      no         used only to recognise repeated purchases of the same product
quantity       float       no         kept for inspection; not used by the model
price          float       no         kept for inspection; not used by the model
=============  ==========  =========  ==================================================================

`validate_log` checks a DataFrame against this table and returns it in canonical dtypes; every problem raises a
`DataPrepError` naming the file, the column, and (for bad values) the row and value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modeling_shopperbert.contract import CATEGORY_FIELDS


class DataPrepError(ValueError):
    """A problem with the input data or the build options, with a message meant for the user.

    The command line prints these without a traceback and exits with status 2.
    """


@dataclass(frozen=True)
class LogColumn:
    """One column of the canonical purchase log."""

    name: str
    kind: str  # "string", "timestamp" or "float"
    required: bool
    doc: str


CANONICAL_COLUMNS: tuple[LogColumn, ...] = (
    LogColumn("user_id", "string", True, "the buyer (any id, kept as text)"),
    LogColumn("timestamp", "timestamp", True, "time of the purchase (naive wall-clock time)"),
    *(LogColumn(f, "string", False, f"category level {i + 1} of 4 (coarse to fine); may be missing")
      for i, f in enumerate(CATEGORY_FIELDS)),
    LogColumn("description", "string", True, "product description text"),
    LogColumn("product_id", "string", False, "product identifier (only used for de-duplication)"),
    LogColumn("quantity", "float", False, "number of units (informational)"),
    LogColumn("price", "float", False, "amount paid (informational)"),
)
CANONICAL_NAMES: tuple[str, ...] = tuple(c.name for c in CANONICAL_COLUMNS)
REQUIRED_NAMES: tuple[str, ...] = tuple(c.name for c in CANONICAL_COLUMNS if c.required)
_BY_NAME = {c.name: c for c in CANONICAL_COLUMNS}

# Description used when a purchase has no description text (e.g. a product missing from the product table).
MISSING_DESCRIPTION = "unknown product"


def canonical_features():
    """The canonical schema as a `datasets.Features` (for users who prefer to hold logs as a `datasets.Dataset`)."""
    from datasets import Features, Value

    kinds = {"string": Value("string"), "timestamp": Value("timestamp[s]"), "float": Value("float64")}
    return Features({c.name: kinds[c.kind] for c in CANONICAL_COLUMNS})


def _first_bad(mask: np.ndarray, values: pd.Series, row_offset: pd.Series | None) -> tuple[int, object]:
    """Row number (1 = first data row, or the source file's own numbering when known) and value of the first
    True in `mask`."""
    pos = int(np.flatnonzero(mask)[0])
    row = int(row_offset.iloc[pos]) if row_offset is not None else pos + 1
    return row, values.iloc[pos]


def _describe_origin(df: pd.DataFrame, pos_mask: np.ndarray, origin: str) -> str:
    """'file X' for the first flagged row, using the per-row `_file` column when the loader added one."""
    if "_file" in df.columns:
        return f"file {df['_file'].iloc[int(np.flatnonzero(pos_mask)[0])]}"
    return origin


def parse_timestamps(values: pd.Series, *, origin: str = "input", column: str = "timestamp",
                     timestamp_format: str | None = None, unit: str | None = None, timezone: str | None = None,
                     row_numbers: pd.Series | None = None, frame: pd.DataFrame | None = None) -> pd.Series:
    """Parse a column into naive `datetime64[s]`; raise `DataPrepError` on the first value that does not parse.

    - datetime columns pass through (timezone-aware ones are converted to `timezone` if given, then made naive,
      i.e. the wall-clock time of that zone is kept);
    - numeric columns are read as epochs in `unit` (default seconds; numbers too large for seconds are refused
      with a hint to set the unit);
    - text columns are parsed with `timestamp_format` (strftime syntax) or, if not given, ISO-8601-like inference.
      Values with different UTC offsets (daylight saving time) are converted to `timezone` if given, else each
      keeps its own wall-clock time.
    """
    if timezone:
        check_timezone(timezone)
    if values.isna().any():
        mask = values.isna().to_numpy()
        row, _ = _first_bad(mask, values, row_numbers)
        where = _describe_origin(frame, mask, origin) if frame is not None else origin
        raise DataPrepError(f"{where}: column '{column}' is empty at row {row}; every purchase needs a timestamp")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values.dtype):
        if unit is None:
            _check_epoch_seconds(values, origin, column)
        parsed = pd.to_datetime(values, unit=unit or "s", errors="coerce")
    else:
        parsed = _parse_text(values.astype("string"), timestamp_format, timezone, f"{origin}: column '{column}'")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row, value = _first_bad(bad, values, row_numbers)
        where = _describe_origin(frame, bad, origin) if frame is not None else origin
        raise unparsable_timestamp_error(f"{where}: cannot parse column '{column}' value {value!r} at row {row}",
                                         timestamp_format, int(bad.sum()), len(values))
    return _wall_clock(parsed, timezone).astype("datetime64[s]")


def unparsable_timestamp_error(what: str, timestamp_format: str | None, bad: int, total: int) -> DataPrepError:
    """The error for timestamps that do not parse: `what` names the file, column, value (and row), e.g.
    "tx.csv: cannot parse column 'timestamp' value '31/02' at row 18"; both engines raise it."""
    hint = f" with format {timestamp_format!r}" if timestamp_format else \
        " (give timestamp_format in the mapping, e.g. '%d/%m/%Y %H:%M')"
    return DataPrepError(f"{what} as a timestamp{hint}; {bad} of {total} values do not parse")


def parse_text_timestamps(text: pd.Series, timestamp_format: str | None = None, timezone: str | None = None,
                          where: str = "input") -> pd.Series:
    """Text timestamps -> naive `datetime64[s]` wall-clock times, NaT where a value does not parse (the text rule
    of `parse_timestamps`; the Spark engine applies it to batches of rows)."""
    return _wall_clock(_parse_text(text.astype("string"), timestamp_format, timezone, where),
                       timezone).astype("datetime64[s]")


def check_timezone(name, what: str = "timezone") -> None:
    """Raise `DataPrepError` unless `name` is a time zone pandas knows (e.g. 'Europe/Berlin', 'UTC')."""
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(name)
    except Exception:
        raise DataPrepError(f"{what}: unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or "
                            "'UTC'") from None


# Epoch numbers at least this large are not seconds (1e11 s is the year 5138): (bound, the unit they look like).
_EPOCH_UNITS = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"))


def _check_epoch_seconds(values: pd.Series, origin: str, column: str) -> None:
    """Refuse numeric timestamps read as seconds whose size says milliseconds, microseconds or nanoseconds."""
    biggest = float(np.max(np.abs(values.to_numpy(dtype="float64")))) if len(values) else 0.0
    for bound, unit in _EPOCH_UNITS:
        if biggest >= bound:
            raise DataPrepError(
                f"{origin}: column '{column}' holds epoch numbers up to {biggest:.0f}, which as seconds would be "
                f"dates after the year 5000; they look like {unit}: set timestamp_unit: {unit} in the mapping "
                f"(or --timestamp-unit {unit})")


def _wall_clock(parsed: pd.Series, timezone: str | None) -> pd.Series:
    """Timezone-aware values -> naive wall-clock time (of `timezone` if given, else their own); naive unchanged."""
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        if timezone:
            parsed = parsed.dt.tz_convert(timezone)
        parsed = parsed.dt.tz_localize(None)
    return parsed


def _parse_text_plain(text: pd.Series, timestamp_format: str | None) -> pd.Series:
    if timestamp_format:
        return pd.to_datetime(text, format=timestamp_format, errors="coerce")
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=False)
    retry_mask = parsed.isna()
    if retry_mask.any():  # some other common layout: let pandas infer it element by element (slower)
        retry = pd.to_datetime(text[retry_mask], format="mixed", errors="coerce")
        parsed = retry if retry_mask.all() else parsed.where(~retry_mask, retry)
    return parsed


_UTC_OFFSET = r"(Z|[+-]\d{2}:?\d{2})\s*$"


def _parse_text(text: pd.Series, timestamp_format: str | None, timezone: str | None, where: str) -> pd.Series:
    """Text timestamps -> datetimes. Values with different UTC offsets (an export from a zone with daylight saving
    time, or naive and aware values mixed) are parsed per offset and each group made naive (see `_wall_clock`)."""
    try:
        return _parse_text_plain(text, timestamp_format)
    except ValueError as exc:
        if "timezone" not in str(exc).lower():
            raise DataPrepError(f"{where}: cannot parse timestamps: {exc}") from None
    offsets = text.str.extract(_UTC_OFFSET, expand=False).fillna("")
    parts = []
    for offset in offsets.unique():
        group = text[offsets == offset]
        try:
            parts.append(_wall_clock(_parse_text_plain(group, timestamp_format), timezone).astype("datetime64[s]"))
        except ValueError as exc:
            raise DataPrepError(f"{where}: cannot parse timestamps with mixed time zones ({exc}); give "
                                "timestamp_format, or timestamps with numeric UTC offsets") from None
    return pd.concat(parts).reindex(text.index)


def parse_date(value, what: str = "date") -> pd.Timestamp:
    """A date/time from text, `datetime` or `Timestamp`, as a naive `pandas.Timestamp` (a timezone-aware value
    keeps its wall-clock time); raises `DataPrepError` naming `what` when it does not parse."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataPrepError(f"{what}: cannot parse {value!r} as a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM)") from None
    if ts is pd.NaT:
        raise DataPrepError(f"{what}: cannot parse {value!r} as a date")
    if ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    return ts


def validate_log(df: pd.DataFrame, *, origin: str = "input", timestamp_format: str | None = None,
                 timestamp_unit: str | None = None, timezone: str | None = None,
                 row_numbers: pd.Series | None = None) -> pd.DataFrame:
    """Check `df` against the canonical schema and return a new DataFrame in canonical column order and dtypes.

    Required columns must be present (the error names the missing one and lists what exists); optional columns are
    added as all-missing when absent. String columns become pandas `category` (compact and fast to group by), with
    surrounding whitespace stripped and empty strings treated as missing; `timestamp` becomes naive
    `datetime64[s]`; `quantity` and `price` become float64. A missing `description` becomes "unknown product".
    Extra columns are dropped (except an internal `_file` column, used only for error messages).

    Args:
        df: the log.
        origin: how to name the input in error messages (e.g. a file path).
        timestamp_format, timestamp_unit, timezone: see `parse_timestamps`.
        row_numbers: the source-file row number of each row (for error messages); defaults to the position,
            counted from 1 (row 1 = first data row).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataPrepError(f"{origin}: expected a pandas DataFrame, got {type(df).__name__}")
    check_required_columns([str(c) for c in df.columns if c not in ("_file", "_row")], origin)  # not the helpers
    if len(df) == 0:
        raise DataPrepError(f"{origin}: the purchase log is empty (0 rows)")
    out = {}
    for col in CANONICAL_COLUMNS:
        if col.name not in df.columns:
            if col.kind == "float":
                out[col.name] = pd.Series(np.nan, index=df.index, dtype="float64")
            else:
                out[col.name] = pd.Series(pd.Categorical([None] * len(df)), index=df.index)
            continue
        values = df[col.name]
        if col.kind == "timestamp":
            out[col.name] = parse_timestamps(values, origin=origin, column=col.name, timestamp_format=timestamp_format,
                                             unit=timestamp_unit, timezone=timezone, row_numbers=row_numbers,
                                             frame=df)
        elif col.kind == "float":
            parsed = pd.to_numeric(values, errors="coerce")
            bad = (parsed.isna() & values.notna()).to_numpy()
            if bad.any():
                row, value = _first_bad(bad, values, row_numbers)
                raise DataPrepError(f"{_describe_origin(df, bad, origin)}: column {col.name!r} value {value!r} at "
                                    f"row {row} is not a number")
            out[col.name] = parsed.astype("float64")
        else:
            out[col.name] = _to_category(values)
    result = pd.DataFrame(out, index=df.index)
    null_users = result["user_id"].isna().to_numpy()
    if null_users.any():
        row, _ = _first_bad(null_users, df["user_id"], row_numbers)
        raise DataPrepError(f"{_describe_origin(df, null_users, origin)}: column 'user_id' is empty at row {row}; "
                            "every purchase needs a user")
    if result["description"].isna().any():
        desc = result["description"]
        if MISSING_DESCRIPTION not in desc.cat.categories:
            desc = desc.cat.add_categories([MISSING_DESCRIPTION])
        result["description"] = desc.fillna(MISSING_DESCRIPTION)
    return result.reset_index(drop=True)


def check_required_columns(present: list[str], origin: str = "input") -> None:
    """Raise `DataPrepError` naming the first required canonical column missing from `present` (and the others)."""
    missing = [n for n in REQUIRED_NAMES if n not in present]
    if missing:
        raise DataPrepError(
            f"{origin}: missing required column {missing[0]!r}"
            + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
            + f"; the log has columns {present}. Map your column names to the canonical ones "
            f"({list(CANONICAL_NAMES)}) with --map canonical=yours or a mapping YAML."
        )


def _to_category(values: pd.Series) -> pd.Series:
    """Text column -> pandas category with whitespace stripped and '' as missing; works on the distinct values
    only, so it is cheap on long logs with few distinct values."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values
    else:
        cat = values.astype("category")
    cats = cat.cat.categories
    if not (pd.api.types.is_string_dtype(cats.dtype) or pd.api.types.is_object_dtype(cats.dtype)):
        # numbers, e.g. integer user ids or manufacturer ids: write them as text, integers without '.0'
        if pd.api.types.is_float_dtype(cats.dtype) and np.all(np.mod(cats.to_numpy(), 1) == 0):
            cats = cats.astype("int64")
        text = pd.Index([str(c) for c in cats], dtype=object)
    else:
        text = pd.Index([" ".join(str(c).split()) for c in cats], dtype=object)
    codes = cat.cat.codes.to_numpy()
    uniq, inverse = np.unique(text.to_numpy(dtype=object), return_inverse=True)
    keep = uniq != ""
    if keep.all() and len(uniq) == len(cats) and np.array_equal(inverse, np.arange(len(cats))):
        # already clean, distinct and sorted (e.g. dictionary-encoded parquet): no need to remap the codes
        return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(uniq, dtype=object)),
                         index=values.index)
    new_codes = np.where(codes >= 0, inverse[np.maximum(codes, 0)], -1) if len(cats) else codes
    if not keep.all():
        empty_code = int(np.flatnonzero(~keep)[0])
        new_codes = np.where(new_codes == empty_code, -1, new_codes - (new_codes > empty_code))
        uniq = uniq[keep]
    return pd.Series(pd.Categorical.from_codes(new_codes.astype(np.int32), categories=pd.Index(uniq, dtype=object)),
                     index=values.index)


__all__ = [
    "DataPrepError", "LogColumn", "CANONICAL_COLUMNS", "CANONICAL_NAMES", "REQUIRED_NAMES", "MISSING_DESCRIPTION",
    "canonical_features", "check_required_columns", "check_timezone", "parse_date", "parse_text_timestamps",
    "parse_timestamps", "unparsable_timestamp_error", "validate_log",
]
