"""Where purchase logs come from: Complete Journey (built in), a retailer's own parquet/CSV files, or the synthetic
generator. Each source yields canonical logs (see `data_prep.schema`) in *chunks that hold complete users*: one
chunk for Complete Journey and, by default, for files; one chunk per file for files partitioned by user (the
synthetic generator writes such files), so that any number of users goes through in bounded memory.

The Complete Journey tables themselves are read by `data_prep.completejourney`; its names are importable from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .completejourney import (  # noqa: F401 (_completejourney_product_table: eval_suite imports it from here)
    COMPLETEJOURNEY_FOURTH_LEVELS,
    _completejourney_product_table,
    completejourney_data_dir,
    load_completejourney_log,
    read_completejourney_table,
)
from .schema import CANONICAL_NAMES, DataPrepError, check_timezone, validate_log

SYNTHETIC_MARKER_KEY = b"shopperbert.source"
SYNTHETIC_MARKER_VALUE = b"synthetic"

# ------------------------------------------------------------------------------------------------------------------
# Bring-your-own files
# ------------------------------------------------------------------------------------------------------------------

@dataclass
class ColumnMapping:
    """How a retailer's columns map onto the canonical log.

    Attributes:
        columns: canonical name -> source column. `description` may also be a list of columns, joined with " | "
            (e.g. brand, product name, size). Canonical names not mentioned map to a source column of the same
            name when one exists.
        timestamp_format: strftime format of text timestamps (default: ISO 8601 and common layouts are inferred).
        timestamp_unit: unit of numeric (epoch) timestamps: "s" (default), "ms", "us" or "ns".
        timezone: time zone that timezone-aware timestamps are converted to before the wall-clock time is kept.
        products: optional product table joined on a key: {"path": file, "on": key column in the log,
            "products_on": key column in the product table (default: same as "on")}. Its columns can then be mapped.
        read_options: extra keyword arguments for `pandas.read_csv` (e.g. {"sep": ";"}).
        category_levels: free-text meaning of each level, copied into metadata.json.
    """

    columns: dict = field(default_factory=dict)
    timestamp_format: str | None = None
    timestamp_unit: str | None = None
    timezone: str | None = None
    products: dict | None = None
    read_options: dict = field(default_factory=dict)
    category_levels: dict = field(default_factory=dict)

    _KEYS = ("columns", "timestamp_format", "timestamp_unit", "timezone", "products", "read_options",
             "category_levels")

    @classmethod
    def from_dict(cls, data: dict, origin: str = "mapping") -> "ColumnMapping":
        if not isinstance(data, dict):
            raise DataPrepError(f"{origin}: expected a mapping (YAML dictionary), got {type(data).__name__}")
        unknown = [k for k in data if k not in cls._KEYS]
        if unknown:
            raise DataPrepError(f"{origin}: unknown key(s) {unknown}; allowed: {list(cls._KEYS)}")
        mapping = cls(**{k: data[k] for k in cls._KEYS if data.get(k) is not None})
        mapping.check(origin)
        return mapping

    @classmethod
    def from_yaml(cls, path) -> "ColumnMapping":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise DataPrepError(f"mapping file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataPrepError(f"mapping file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, origin=str(path))

    def with_pairs(self, pairs) -> "ColumnMapping":
        """Add `canonical=source` pairs from the command line (they override the YAML). A description made of
        several columns is written `description=brand+name`."""
        columns = dict(self.columns)
        for pair in pairs or ():
            if "=" not in pair:
                raise DataPrepError(f"--map {pair!r}: expected canonical=source, e.g. --map user_id=customer_id")
            key, value = (s.strip() for s in pair.split("=", 1))
            columns[key] = [v.strip() for v in value.split("+")] if "+" in value else value
        mapping = ColumnMapping(**{**self.__dict__, "columns": columns})
        mapping.check("--map")
        return mapping

    def check(self, origin: str) -> None:
        """Raise `DataPrepError` naming `origin` for any wrong key, type or value (before any data is read)."""
        self._check_types(origin)
        unknown = [k for k in self.columns if k not in CANONICAL_NAMES]
        if unknown:
            raise DataPrepError(f"{origin}: unknown canonical column(s) {unknown}; "
                                f"the canonical columns are {list(CANONICAL_NAMES)}")
        for key, value in self.columns.items():
            if isinstance(value, list) and key != "description":
                raise DataPrepError(f"{origin}: only 'description' may combine several columns, not {key!r}")
        if self.products is not None:
            if isinstance(self.products, dict):
                # YAML 1.1 reads an unquoted `on:` key as the boolean True
                self.products = {("on" if k is True else k): v for k, v in self.products.items()}
                if "key" in self.products and "on" not in self.products:
                    self.products["on"] = self.products.pop("key")
            keys = ("path", "on") + (("products_on",) if isinstance(self.products, dict) and "products_on" in
                                      self.products else ())
            if not isinstance(self.products, dict) or not all(isinstance(self.products.get(k), str) for k in keys):
                raise DataPrepError(f"{origin}: 'products' needs 'path' and 'on' (the join key) as text, "
                                    f"e.g. products: {{path: products.csv, on: product_id}}; got {self.products!r}")
        if self.timestamp_unit not in (None, "s", "ms", "us", "ns"):
            raise DataPrepError(f"{origin}: timestamp_unit must be one of s, ms, us, ns (got {self.timestamp_unit!r})")
        if self.timezone is not None:
            check_timezone(self.timezone, f"{origin}: timezone")

    def _check_types(self, origin: str) -> None:
        for key in ("columns", "read_options", "category_levels"):
            value = getattr(self, key)
            if not isinstance(value, dict):
                raise DataPrepError(f"{origin}: '{key}' must be a dictionary, got {type(value).__name__} {value!r}")
        for key in ("timestamp_format", "timestamp_unit", "timezone"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise DataPrepError(f"{origin}: '{key}' must be text, got {type(value).__name__} {value!r}")
        for key, value in self.columns.items():
            parts = value if isinstance(value, list) else [value]
            if not parts or not all(isinstance(v, str) and v for v in parts):
                raise DataPrepError(f"{origin}: columns.{key} must be a column name (text; quote names that look "
                                    f"like numbers), or for description a list of them; got {value!r}")
        for key, value in self.category_levels.items():
            if not isinstance(value, str):
                raise DataPrepError(f"{origin}: category_levels.{key} must be text, got {value!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._KEYS}


_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
        return "csv"
    raise DataPrepError(f"{path}: unsupported file type; use parquet (.parquet) or CSV (.csv, .csv.gz, .tsv)")


def list_input_files(inputs) -> list[Path]:
    """Expand files and folders (searched recursively for parquet/CSV files) into a sorted list of files."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs or ():
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_SUFFIXES)
                           and not p.name.startswith((".", "_")))
            if not found:
                raise DataPrepError(f"folder {path} holds no parquet or CSV file")
            files.extend(found)
        elif path.is_file():
            _file_kind(path)
            files.append(path)
        else:
            raise DataPrepError(f"input {path} does not exist")
    if not files:
        raise DataPrepError("no input given: pass --input FILE_OR_FOLDER (one or more)")
    return files


def _csv_options(path: Path, read_options: dict) -> dict:
    """`.tsv` files are tab-separated unless the mapping's read_options say otherwise."""
    tab = path.name.lower().endswith((".tsv", ".tsv.gz"))
    return {**({"sep": "\t"} if tab else {}), **read_options}


def _parquet_schema(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except Exception as exc:
        raise DataPrepError(f"{path}: cannot read as parquet (empty or damaged file?): {exc}") from None


def _file_columns(path: Path, kind: str, read_options: dict) -> list[str]:
    if kind == "parquet":
        return list(_parquet_schema(path).names)
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, **_csv_options(path, read_options)).columns]
    except Exception as exc:
        raise DataPrepError(f"{path}: cannot read as CSV: {exc}") from None


def is_synthetic_file(path) -> bool:
    """True for parquet files written by the synthetic generator (they carry a marker in their metadata)."""
    path = Path(path)
    if _file_kind(path) != "parquet":
        return False
    import pyarrow.parquet as pq

    meta = _parquet_schema(path).metadata or {}
    return meta.get(SYNTHETIC_MARKER_KEY) == SYNTHETIC_MARKER_VALUE


# pandas' default missing-value strings, still applied to the timestamp and number columns of CSV files
_DEFAULT_NA = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
               "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


def _text_columns(columns: list[str], mapping: ColumnMapping) -> list[str]:
    """The file columns holding text: all but those mapped to timestamp, quantity or price."""
    numeric = {mapping.columns.get(name, name) for name in ("timestamp", "quantity", "price")}
    return [c for c in columns if c not in numeric]


def _id_columns(mapping: ColumnMapping) -> set:
    """The file columns holding ids (user, product, product-table join keys): read as text, never as numbers."""
    ids = {mapping.columns.get(name, name) for name in ("user_id", "product_id")}
    if mapping.products:
        ids |= {mapping.products["on"], mapping.products.get("products_on", mapping.products["on"])}
    return ids


def _read_csv(path: Path, columns: list[str], mapping: ColumnMapping) -> pd.DataFrame:
    """Ids are read as str (they keep leading zeros: '0005' and '5' are two users); in text columns only empty cells
    are missing, so 'NA', 'None' or 'nan' stay values. The mapping's read_options override these defaults."""
    text = set(_text_columns(columns, mapping))
    options = {"low_memory": False, "dtype": {c: str for c in columns if c in _id_columns(mapping)},
               "keep_default_na": False, "na_values": {c: ([""] if c in text else list(_DEFAULT_NA)) for c in columns}}
    return pd.read_csv(path, usecols=columns, **{**options, **_csv_options(path, mapping.read_options)})


def _read_parquet(path: Path, columns: list[str], mapping: ColumnMapping) -> pd.DataFrame:
    """Integer id/text columns are cast to text in Arrow (pandas would turn ints with missing values into floats)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    cast = False
    for name in _text_columns(columns, mapping):
        i = table.schema.get_field_index(name)
        if i >= 0 and pa.types.is_integer(table.schema.field(i).type):
            table = table.set_column(i, name, table.column(i).cast(pa.string()))
            cast = True
    # pandas' own metadata (written by DataFrame.to_parquet) still names the old dtype of a cast column, e.g. Int64
    return table.to_pandas(ignore_metadata=cast)


def _read_table(path: Path, kind: str, columns: list[str], mapping: ColumnMapping) -> pd.DataFrame:
    try:
        return _read_parquet(path, columns, mapping) if kind == "parquet" else _read_csv(path, columns, mapping)
    except Exception as exc:
        raise DataPrepError(f"{path}: cannot read: {exc}") from None


class _Products:
    """A product table joined onto every log file (loaded once)."""

    def __init__(self, spec: dict, base: Path | None, mapping: ColumnMapping):
        path = Path(spec["path"]).expanduser()
        if not path.is_absolute() and base is not None and (base / path).exists():
            path = base / path  # relative paths: beside the mapping YAML first, then the working directory
        if not path.is_file():
            raise DataPrepError(f"product table {path} (mapping key products.path) does not exist")
        kind = _file_kind(path)
        self.on = spec["on"]
        self.products_on = spec.get("products_on", self.on)
        cols = _file_columns(path, kind, mapping.read_options)
        if self.products_on not in cols:
            raise DataPrepError(f"{path}: product table has no join column {self.products_on!r}; "
                                f"it has columns {cols}")
        table = _read_table(path, kind, cols, mapping)
        if table[self.products_on].duplicated().any():
            dup = table.loc[table[self.products_on].duplicated(), self.products_on].iloc[0]
            raise DataPrepError(f"{path}: join column {self.products_on!r} repeats value {dup!r}; "
                                "a product table needs one row per product")
        self.path = path
        self.table = table.set_index(self.products_on)
        self.columns = [c for c in cols if c != self.products_on]

    def join(self, df: pd.DataFrame, origin: Path) -> pd.DataFrame:
        if self.on not in df.columns:
            raise DataPrepError(f"{origin}: missing column {self.on!r} (the product-table join key); "
                                f"the file has columns {list(df.columns)}")
        key = df[self.on]
        if key.dtype != self.table.index.dtype:
            key = key.astype(str)
            index = self.table.index.astype(str)
        else:
            index = self.table.index
        pos = pd.Index(index).get_indexer(key)
        known = pos >= 0
        extra = [c for c in self.columns if c not in df.columns]
        joined = self.table[extra].iloc[np.maximum(pos, 0)]
        joined.index = df.index
        if not known.all():  # purchases of products missing from the table: their attributes are missing
            joined = pd.DataFrame({c: joined[c].where(known) for c in extra}, index=df.index)
        return pd.concat([df, joined], axis=1)


def _apply_mapping(raw: pd.DataFrame, mapping: ColumnMapping, path: Path) -> pd.DataFrame:
    """Rename/assemble source columns into canonical names (before validation)."""
    out = {}
    columns = dict(mapping.columns)
    for name in CANONICAL_NAMES:
        if name not in columns and name in raw.columns:
            columns[name] = name
    for name, source in columns.items():
        if isinstance(source, list):
            parts = [raw[s].astype("string").str.strip() for s in source]
            text = parts[0].fillna("")
            for part in parts[1:]:
                sep = pd.Series(np.where((text.str.len() > 0) & part.notna() & (part.str.len() > 0), " | ", ""),
                                index=raw.index)
                text = text + sep + part.fillna("")
            out[name] = text.mask(text == "")
        else:
            out[name] = raw[source]
    return pd.DataFrame(out, index=raw.index)


def read_log_file(path, mapping: ColumnMapping | None = None, products: _Products | None = None) -> pd.DataFrame:
    """Read one parquet/CSV purchase-log file into a raw (not yet validated) DataFrame with canonical names and
    the helper columns `_file` and `_row` (1-based data-row number, for error messages)."""
    path = Path(path)
    mapping = mapping or ColumnMapping()
    kind, needed = check_file_columns(path, mapping, products)
    raw = _read_table(path, kind, needed, mapping)
    if products is not None:
        raw = products.join(raw, path)
    df = _apply_mapping(raw, mapping, path)
    df["_file"] = pd.Categorical.from_codes(np.zeros(len(df), dtype=np.int8), categories=[str(path)])
    df["_row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df


def check_file_columns(path: Path, mapping: ColumnMapping, products: _Products | None = None) -> tuple[str, list]:
    """(file kind, the file columns to read) of one log file, from its header or schema alone (both engines call
    it before reading any row); raises `DataPrepError` for an unreadable file or a mapped column it lacks."""
    kind = _file_kind(path)
    available = _file_columns(path, kind, mapping.read_options)
    product_cols = products.columns if products is not None else []
    needed: list[str] = []
    for name, source in mapping.columns.items():
        for col in (source if isinstance(source, list) else [source]):
            if col not in available and col not in product_cols:
                raise DataPrepError(
                    f"{path}: missing column {col!r} (mapped to canonical {name!r}); the file has columns "
                    f"{available}" + (f" and the product table adds {product_cols}" if product_cols else ""))
            if col in available and col not in needed:
                needed.append(col)
    for name in CANONICAL_NAMES:  # same-name columns map themselves
        if name not in mapping.columns and name in available and name not in needed:
            needed.append(name)
    if products is not None and products.on not in needed:
        if products.on not in available:
            raise DataPrepError(f"{path}: missing column {products.on!r} (the product-table join key); "
                                f"the file has columns {available}")
        needed.append(products.on)
    return kind, needed


def validate_raw(df: pd.DataFrame, mapping: ColumnMapping, origin: str) -> pd.DataFrame:
    """Validate a frame from `read_log_file` (or several concatenated), naming files and rows in errors."""
    return validate_log(df, origin=origin, timestamp_format=mapping.timestamp_format,
                        timestamp_unit=mapping.timestamp_unit, timezone=mapping.timezone,
                        row_numbers=df["_row"] if "_row" in df.columns else None)


# ------------------------------------------------------------------------------------------------------------------
# Sources as chunks of complete users
# ------------------------------------------------------------------------------------------------------------------

class LogSource:
    """A purchase-log source that yields canonical, validated logs in chunks holding complete users."""

    name: str = "logs"
    #: True when every user's purchases lie in exactly one chunk (checked during the build)
    partitioned: bool = False

    def chunks(self) -> Iterator[tuple[str, pd.DataFrame]]:
        raise NotImplementedError

    def category_levels(self) -> dict:
        return {}

    def describe(self) -> dict:
        return {"source": self.name}


class DataFrameSource(LogSource):
    """An in-memory canonical log (one chunk)."""

    def __init__(self, df: pd.DataFrame, name: str = "dataframe", category_levels: dict | None = None):
        self.df, self.name, self._levels = df, name, category_levels or {}

    def chunks(self):
        yield self.name, validate_log(self.df, origin=self.name)

    def category_levels(self):
        return dict(self._levels)


class CompleteJourneySource(LogSource):
    """Complete Journey (Dunnhumby / 84.51°): 2,469 households, 1.47M transactions in 2017."""

    name = "completejourney"

    def __init__(self, fourth_level: str = "manufacturer"):
        if fourth_level not in COMPLETEJOURNEY_FOURTH_LEVELS:
            raise DataPrepError(f"unknown Complete Journey fourth level {fourth_level!r}; "
                                f"choose one of {sorted(COMPLETEJOURNEY_FOURTH_LEVELS)}")
        self.fourth_level = fourth_level

    def chunks(self):
        yield "completejourney", load_completejourney_log(fourth_level=self.fourth_level)

    def category_levels(self):
        return {"category_1": "department", "category_2": "product_category", "category_3": "product_type",
                "category_4": COMPLETEJOURNEY_FOURTH_LEVELS[self.fourth_level]}

    def describe(self):
        return {"source": self.name, "fourth_level": self.fourth_level,
                "description_text": "product_type | product_category | department | brand | package_size "
                                    "(lower case, missing parts left out)",
                "data_dir": str(completejourney_data_dir())}


class FileSource(LogSource):
    """A retailer's parquet/CSV files (or folders of them), mapped onto the canonical log by a `ColumnMapping`.

    With `partitioned_by_user=False` (default) all files are read into one chunk. With `partitioned_by_user=True`
    every file is its own chunk: then each user's purchases must lie in a single file (the build checks), and
    any number of files goes through in the memory of one.
    """

    name = "files"

    def __init__(self, inputs, mapping: ColumnMapping | None = None, partitioned_by_user: bool = False,
                 mapping_base: Path | None = None):
        self.files = list_input_files(inputs)
        #: the inputs as given (files and folders): an output folder must not overlap them
        self.input_paths = [Path(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
        self.mapping = mapping or ColumnMapping()
        self.partitioned = partitioned_by_user
        self._products = None
        self._mapping_base = mapping_base
        self.synthetic = all(is_synthetic_file(f) for f in self.files)
        if self.synthetic:
            self.name = "synthetic"

    def _product_table(self):
        if self.mapping.products and self._products is None:
            self._products = _Products(self.mapping.products, self._mapping_base, self.mapping)
        return self._products

    def chunks(self):
        products = self._product_table()
        if self.partitioned:
            for path in self.files:
                raw = read_log_file(path, self.mapping, products)
                if len(raw) == 0:
                    continue
                yield str(path), validate_raw(raw, self.mapping, str(path))
        else:
            frames = [read_log_file(p, self.mapping, products) for p in self.files]
            frames = [f for f in frames if len(f)]
            if not frames:
                raise DataPrepError(f"all input files are empty: {[str(f) for f in self.files]}")
            raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            if len(frames) > 1:
                raw["_file"] = raw["_file"].astype("category")
            del frames
            origin = str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} input files"
            yield origin, validate_raw(raw, self.mapping, origin)

    def category_levels(self):
        levels = dict(self.mapping.category_levels)
        for name in ("category_1", "category_2", "category_3", "category_4"):
            if name not in levels:
                src = self.mapping.columns.get(name, name)
                levels[name] = f"column {src!r}"
        return levels

    def describe(self):
        desc = {"source": self.name, "files": [str(f) for f in self.files[:20]], "num_files": len(self.files),
                "mapping": self.mapping.to_dict(), "partitioned_by_user": self.partitioned}
        if self.synthetic:
            desc["note"] = "files written by the data_prep synthetic generator: NOT real purchase data"
        return desc


__all__ = [
    "COMPLETEJOURNEY_FOURTH_LEVELS", "completejourney_data_dir", "read_completejourney_table", "load_completejourney_log",
    "ColumnMapping",
    "list_input_files", "read_log_file", "check_file_columns", "is_synthetic_file", "LogSource", "DataFrameSource",
    "CompleteJourneySource", "FileSource",
]
