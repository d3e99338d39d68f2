"""The raw Complete Journey tables the task builders read, through data_prep's one reader
(``data_prep.sources.read_completejourney_table``): which columns of each table, and the featured-mailer filter of
``promotions``. Builders take the tables as a dict of DataFrames, so tests can pass hand-made miniature tables with
the same columns."""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

#: Mailer positions that make a product "featured" (completejourney docs: D front page feature, F back page feature,
#: H wrap front feature, L wrap back feature).
FEATURED_MAILER_CODES = ("D", "F", "H", "L")

#: Columns read from each raw table (only what the builders use).
RAW_COLUMNS = {
    "transactions": ["household_id", "store_id", "product_id", "coupon_disc", "week", "transaction_timestamp"],
    "products": ["product_id", "manufacturer_id", "department", "brand", "product_category", "product_type",
                 "package_size"],
    "demographics": ["household_id", "kids_count"],
    "promotions": ["product_id", "store_id", "week", "mailer_location"],
    "campaign_descriptions": ["campaign_id", "campaign_type", "start_date", "end_date"],
    "coupons": ["coupon_upc", "product_id", "campaign_id"],
    "coupon_redemptions": ["household_id", "coupon_upc", "campaign_id", "redemption_date"],
}
#: Row filters (pyarrow) of the tables read only in part.
RAW_FILTERS = {"promotions": [("mailer_location", "in", list(FEATURED_MAILER_CODES))]}


def load_raw_tables(data_dir=None, tables: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the Complete Journey tables the task builders need (only the needed columns).

    ``promotions`` (20.9M rows) is read with a pyarrow filter that keeps only featured mailer positions
    (``FEATURED_MAILER_CODES``, about 4.2M rows, ~2-3 s). ``tables`` restricts which tables are read
    (default: all in ``RAW_COLUMNS``).
    """
    from data_prep.sources import read_completejourney_table

    names = list(RAW_COLUMNS) if tables is None else list(tables)
    return {name: read_completejourney_table(name, RAW_COLUMNS[name], RAW_FILTERS.get(name), data_dir)
            for name in names}


def require_columns(tables: dict, table: str, columns: Sequence[str]) -> pd.DataFrame:
    """``tables[table]``, with a KeyError naming the table or the missing columns (the baselines read more
    columns than ``load_raw_tables``: ``eval_suite.baselines.load_baseline_tables``)."""
    if table not in tables:
        raise KeyError(f"the baselines need the {table!r} table (use load_baseline_tables())")
    df = tables[table]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{table!r} lacks columns {missing}; load the tables with "
                       "eval_suite.baselines.load_baseline_tables() (tasks.load_raw_tables reads fewer columns)")
    return df
