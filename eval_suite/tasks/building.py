"""What the task builders share: id and text helpers, candidate sets as item positions, the common tails of the
classification and recommendation builders (``classification_task``, ``targeting_task``,
``finish_recommendation``). Pure pandas/numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .protocol import CUTOFF, WINDOW_END, max_timestamp
from .task import Task, TaskSpec

#: The one context of tasks whose candidates do not depend on a store-week (campaign coupons, product types).
WINDOW_CONTEXT = "window"
MISSING_DESCRIPTION = "unknown product"


def unique_sorted(a) -> np.ndarray:
    """Sorted unique values of a numeric array (sort-based: numpy 2.x's hash-based np.unique is slow on 4M keys)."""
    a = np.sort(np.asarray(a), kind="stable")
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def uid(values) -> np.ndarray:
    """household ids -> user_id strings (object array)."""
    return np.asarray(pd.Series(values).astype("int64").astype(str), dtype=object)


def product_lookup(products: pd.DataFrame, product_ids, column: str) -> np.ndarray:
    """Column of the product table for each product id (NaN/None where the product is unknown)."""
    pos = pd.Index(products["product_id"]).get_indexer(pd.Index(np.asarray(product_ids)))
    vals = products[column].to_numpy(dtype=object)
    out = np.where(pos >= 0, vals[np.maximum(pos, 0)], None)
    return out


def clean_col(values) -> np.ndarray:
    """Strip strings; empty or missing -> None (object array)."""
    ser = pd.Series(values, dtype=object)
    na = ser.isna().to_numpy()
    out = ser.astype(str).str.strip().to_numpy(dtype=object)
    out[na | (out == "")] = None
    return out


def product_attribute(products: pd.DataFrame, product_ids: np.ndarray, column: str) -> np.ndarray:
    """Cleaned (stripped, empty -> None) product-table column per product id; None for unknown products."""
    values = clean_col(products[column].to_numpy(dtype=object))
    pos = pd.Index(products["product_id"].to_numpy()).get_indexer(pd.Index(np.asarray(product_ids)))
    out = np.full(len(pos), None, dtype=object)
    out[pos >= 0] = values[pos[pos >= 0]]
    return out


def top_values(keys, values, k: int) -> dict:
    """key -> up to k most frequent non-missing values (ties: alphabetical), vectorised."""
    df = pd.DataFrame({"key": keys, "val": clean_col(values)}).dropna(subset=["val"])
    if df.empty:
        return {}
    cnt = df.groupby(["key", "val"], sort=False).size().rename("n").reset_index()
    cnt = cnt.sort_values(["key", "n", "val"], ascending=[True, False, True], kind="stable")
    cnt = cnt.groupby("key", sort=False).head(k)
    return cnt.groupby("key", sort=False)["val"].agg(list).to_dict()


def product_descriptions(products: pd.DataFrame) -> pd.Series:
    """Per product, ``"<product type> | <product category> | <department> | <brand> brand | <package size>"`` in
    lower case, missing parts left out: the pre-training descriptions, written by data_prep's one function."""
    from data_prep.sources import _completejourney_product_table

    text = _completejourney_product_table(products, fourth_level="brand")["description"]  # level 4 is unused here
    return pd.Series(text.astype(object).to_numpy(), index=products.index, dtype=object)


def group_positions(keys: np.ndarray, positions: np.ndarray) -> dict:
    """key -> sorted unique int32 positions (keys: any hashable objects, e.g. user ids or (user, context))."""
    if len(keys) == 0:
        return {}
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    p = np.asarray(positions, dtype=np.int64)
    order = np.lexsort((p, codes))
    codes, p = codes[order], p[order]
    keep = np.r_[True, (codes[1:] != codes[:-1]) | (p[1:] != p[:-1])]
    codes, p = codes[keep], p[keep].astype(np.int32)
    bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    return {uniques[codes[a]]: p[a:b] for a, b in zip(bounds[:-1], bounds[1:])}


@dataclass
class Candidates:
    """A recommendation task's candidate sets as item positions (rows of the sorted items table): the base set of each
    context, and what is taken out of it per user and per (user, context) (see ``Task.negative_pool_positions``)."""
    base: dict
    excluded_per_user: dict = field(default_factory=dict)
    excluded_per_user_context: dict = field(default_factory=dict)


def finish_recommendation(spec: TaskSpec, instances: pd.DataFrame, items: pd.DataFrame, history: pd.DataFrame,
                          candidates: Candidates, feature_cols: tuple, input_max_ts, notes: dict) -> Task:
    """Common tail of the recommendation builders: sort, number instances, users table, positives per context."""
    instances = instances.sort_values(["user_id", "timestamp", "context_id", "item_id"], kind="stable")
    instances = instances.reset_index(drop=True)
    instances.insert(0, "instance_id", np.arange(len(instances), dtype=np.int64))
    history = history.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    items = items.reset_index(drop=True)
    item_index = pd.Index(items["item_id"])
    # candidate positions were computed against this table: it must be sorted and unique
    if not (item_index.is_unique and item_index.is_monotonic_increasing):
        raise AssertionError("items must be sorted by item_id and unique")
    pos = item_index.get_indexer(pd.Index(instances["item_id"].to_numpy(dtype=object)))
    if (pos < 0).any():
        raise AssertionError("instance items missing from the items table")
    if len(history) and (item_index.get_indexer(pd.Index(history["item_id"].to_numpy(dtype=object))) < 0).any():
        raise AssertionError("history items missing from the items table")
    positives = group_positions(tuple_keys(instances["user_id"].to_numpy(dtype=object),
                                           instances["context_id"].to_numpy(dtype=object)), pos)
    users = (instances.groupby("user_id", sort=True).size().rename("num_positives").reset_index())
    users["user_id"] = users["user_id"].astype(object)
    hl = history.groupby("user_id").size()
    users["history_length"] = hl.reindex(users["user_id"], fill_value=0).to_numpy().astype(np.int64)
    label_events = instances[["user_id", "timestamp"]].copy()
    return Task(name=spec.name, kind="recommendation", paper_analogue=spec.paper_analogue, definition=spec.definition,
                users=users, history=history, instances=instances, items=items,
                item_feature_columns=tuple(feature_cols), label_events=label_events,
                input_max_timestamp=input_max_ts, notes=notes, _base=candidates.base,
                _excl_user=candidates.excluded_per_user, _excl_user_context=candidates.excluded_per_user_context,
                _positives=positives)


def tuple_keys(a, b) -> np.ndarray:
    out = np.empty(len(a), dtype=object)
    out[:] = list(zip(a, b))
    return out


def classification_task(spec: TaskSpec, users: pd.DataFrame, label_events: pd.DataFrame, input_max_ts, notes
                        ) -> Task:
    """Common tail of the classification builders: users sorted by id, 0/1 labels."""
    users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
    users["label"] = users["label"].astype(np.int64)
    return Task(name=spec.name, kind="classification", paper_analogue=spec.paper_analogue, definition=spec.definition,
                users=users[["user_id", "label"]], history=None, label_events=label_events,
                input_max_timestamp=input_max_ts, notes=notes)


def targeting_task(spec: TaskSpec, tx: pd.DataFrame, event: np.ndarray) -> Task:
    """Population: households with a purchase before the cutoff and no `event` purchase line before it; label: any
    `event` line in the window. `event` is a boolean mask aligned with `tx`."""
    ts = tx["transaction_timestamp"]
    is_pre = (ts < CUTOFF).to_numpy()
    is_win = ((ts >= CUTOFF) & (ts < WINDOW_END)).to_numpy()
    hh = tx["household_id"].to_numpy()
    active = unique_sorted(hh[is_pre])
    had_before = unique_sorted(hh[is_pre & event])
    population = np.setdiff1d(active, had_before)
    win_events = tx.loc[is_win & event, ["household_id", "transaction_timestamp"]]
    win_events = win_events[win_events["household_id"].isin(population)]
    first = win_events.groupby("household_id")["transaction_timestamp"].min()
    users = pd.DataFrame({"user_id": uid(population), "label": np.isin(population, first.index.to_numpy())})
    label_events = pd.DataFrame({"user_id": uid(first.index.to_numpy()), "timestamp": first.to_numpy()})
    win_hh = unique_sorted(hh[is_win])
    notes = {"households_with_purchases_before_cutoff": int(len(active)),
             "excluded_already_engaged_before_cutoff": int(len(had_before)),
             "population_without_any_purchase_in_window": int((~np.isin(population, win_hh)).sum())}
    return classification_task(spec, users, label_events, max_timestamp(ts[is_pre]), notes)


def log_popularity(pre: pd.DataFrame, item_col: str, item_ids) -> np.ndarray:
    """log1p(distinct households that bought the item before the cutoff), aligned with item_ids."""
    counts = pre[["household_id", item_col]].drop_duplicates().groupby(item_col).size()
    counts.index = counts.index.astype(str)
    return np.log1p(counts.reindex(pd.Index(np.asarray(item_ids, dtype=object)), fill_value=0).to_numpy()
                    .astype("float64"))


class KeyCoder:
    """Packs non-negative integer columns into one int64 key (mixed radix), for fast hash joins on 4M rows."""

    def __init__(self, *columns):
        self.radix = [int(max([0] + [int(np.max(c)) for c in col if len(c)])) + 1 for col in columns]
        if math.prod(self.radix) >= 2 ** 62:
            raise OverflowError("ids too large to pack into one int64 key")
        for col in columns:
            for c in col:
                if len(c) and int(np.min(c)) < 0:
                    raise ValueError("ids must be non-negative")

    def __call__(self, *cols) -> np.ndarray:
        key = np.zeros(len(cols[0]), dtype=np.int64)
        for c, r in zip(cols, self.radix):
            key = key * r + np.asarray(c, dtype=np.int64)
        return key


