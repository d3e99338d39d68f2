"""The pure-numpy steps that turn purchase fields into ids: category lookup (unknown -> [UNK]), date parts, date ids.

One implementation for the corpus builder (`data_prep.processing.encode_rows`) and the processor
(`processing_shopperbert.ShopperBertProcessor`). numpy and the token contract only: `data_prep` imports it without
loading torch or transformers, and it travels with the processor as remote code (a relative import).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .contract import NUM_SPECIAL_IDS, UNK_ID

SECONDS_PER_DAY = 86_400


# ----------------------------------------------------------------------------------------------------------------
def category_lookup(categories: Sequence, vocab_list: Sequence[str]) -> np.ndarray:
    """For each category name, its id in `vocab_list` (UNK_ID when absent); the entry at index -1 (appended last) is
    UNK_ID, for missing values (categorical code -1). Special tokens never match a name."""
    index = {name: i for i, name in enumerate(vocab_list[NUM_SPECIAL_IDS:], start=NUM_SPECIAL_IDS)}
    ids = np.fromiter((index.get(name, UNK_ID) for name in categories), dtype=np.int32, count=len(categories))
    return np.r_[ids, np.int32(UNK_ID)].astype(np.int32)


def date_parts(ts: np.ndarray) -> dict:
    """year, month (1-12), day (1-31), weekday (Monday=0), hour of int64 unix seconds (vectorised)."""
    t = ts.astype("datetime64[s]")
    months = t.astype("datetime64[M]")
    days = t.astype("datetime64[D]")
    day_number = days.astype(np.int64)
    return {
        "year": t.astype("datetime64[Y]").astype(np.int64) + 1970,
        "month": months.astype(np.int64) % 12 + 1,
        "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "weekday": (day_number + 3) % 7,  # 1970-01-01 was a Thursday (weekday 3)
        "hour": (ts - day_number * SECONDS_PER_DAY) // 3600,
    }


def date_ids(ts: np.ndarray, date_base_year: int, year_vocab_size: int) -> dict:
    """Date ids under the token contract: year -> 4 + (year - base) (UNK outside the known years), month ->
    4 + month - 1, day -> 4 + day - 1, weekday -> 4 + weekday, hour -> 4 + hour."""
    parts = date_parts(ts)
    year_offset = parts["year"] - date_base_year
    n_years = year_vocab_size - NUM_SPECIAL_IDS
    year = np.where((year_offset >= 0) & (year_offset < n_years), year_offset + NUM_SPECIAL_IDS, UNK_ID)
    return {
        "year": year.astype(np.int32),
        "month": (parts["month"] - 1 + NUM_SPECIAL_IDS).astype(np.int32),
        "day": (parts["day"] - 1 + NUM_SPECIAL_IDS).astype(np.int32),
        "weekday": (parts["weekday"] + NUM_SPECIAL_IDS).astype(np.int32),
        "hour": (parts["hour"] + NUM_SPECIAL_IDS).astype(np.int32),
    }


__all__ = ["SECONDS_PER_DAY", "category_lookup", "date_ids", "date_parts"]
