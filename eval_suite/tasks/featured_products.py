"""Task 4, ``featured_products`` (the paper's Product Collection Recommendation): a featured product (front page,
back page, wrap front or wrap back feature of the household's store's weekly mailer) that the household had never
bought before the cutoff and bought in that store-week; candidates are the same store-week's featured set.

History (T-Trans): the household's featured-product purchases before the cutoff. Co-occurrence link: the product
itself, or its product type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .building import (
    MISSING_DESCRIPTION,
    Candidates,
    KeyCoder,
    finish_recommendation,
    group_positions,
    product_attribute,
    product_descriptions,
    tuple_keys,
    uid,
    unique_sorted,
)
from .protocol import max_timestamp, split_time
from .tables import FEATURED_MAILER_CODES, require_columns
from .task import Task, TaskSpec

#: One row per household, store, week and product: the key of a positive and of a history event.
PURCHASE_KEY = ["household_id", "store_id", "week", "product_id"]


def _col(df: pd.DataFrame, column: str) -> np.ndarray:
    return df[column].to_numpy(dtype=np.int64)


@dataclass
class _Keys:
    """Packed int64 keys: store-week-product of the featured sets, household-product bought before the cutoff."""
    swp: KeyCoder
    featured: pd.Index
    hp: KeyCoder
    seen_before: pd.Index

    @classmethod
    def of(cls, tx: pd.DataFrame, pre: pd.DataFrame, promos: pd.DataFrame) -> "_Keys":
        swp = KeyCoder([_col(promos, "store_id"), _col(tx, "store_id")], [_col(promos, "week"), _col(tx, "week")],
                       [_col(promos, "product_id"), _col(tx, "product_id")])
        featured = pd.Index(unique_sorted(swp(_col(promos, "store_id"), _col(promos, "week"),
                                              _col(promos, "product_id"))))
        hp = KeyCoder([_col(tx, "household_id")], [_col(tx, "product_id")])
        seen_before = pd.Index(unique_sorted(hp(_col(pre, "household_id"), _col(pre, "product_id"))))
        return cls(swp, featured, hp, seen_before)

    def is_featured(self, lines: pd.DataFrame) -> np.ndarray:
        """Lines (store, week, product) whose product was featured in that store-week."""
        keys = self.swp(_col(lines, "store_id"), _col(lines, "week"), _col(lines, "product_id"))
        return self.featured.get_indexer(keys) >= 0


def _positives(win: pd.DataFrame, active: np.ndarray, keys: _Keys) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Window purchases of featured products of that store-week, new to the household: (first purchase per
    household, store, week and product; instances; counts of what was dropped)."""
    hits = win[keys.is_featured(win) & win["household_id"].isin(active).to_numpy()]
    n_hits_total = int(len(hits))
    seen = keys.seen_before.get_indexer(keys.hp(_col(hits, "household_id"), _col(hits, "product_id"))) >= 0
    hits = hits[~seen].groupby(PURCHASE_KEY, as_index=False)["transaction_timestamp"].min()
    instances = pd.DataFrame({
        "user_id": uid(hits["household_id"].to_numpy()),
        "item_id": hits["product_id"].astype("int64").astype(str).to_numpy(dtype=object),
        "context_id": (hits["store_id"].astype("int64").astype(str) + "-w"
                       + hits["week"].astype("int64").astype(str)).to_numpy(dtype=object),
        "timestamp": hits["transaction_timestamp"].to_numpy(),
        "store_id": hits["store_id"].to_numpy(), "week": hits["week"].to_numpy()})
    notes = {"featured_window_purchases": n_hits_total,
             "dropped_repeat_purchases_bought_before_cutoff": int(seen.sum())}
    return hits, instances, notes


def _history(pre: pd.DataFrame, keys: _Keys) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Featured-product purchases before the cutoff (one row per household, store, week, product)."""
    hist = pre[keys.is_featured(pre)]
    hist = hist.groupby(PURCHASE_KEY, as_index=False)["transaction_timestamp"].min()
    history = pd.DataFrame({"user_id": uid(hist["household_id"].to_numpy()),
                            "item_id": hist["product_id"].astype("int64").astype(str).to_numpy(dtype=object),
                            "timestamp": hist["transaction_timestamp"].to_numpy(),
                            "store_id": hist["store_id"].to_numpy(), "week": hist["week"].to_numpy()})
    return hist, history


def _base_rows(instances: pd.DataFrame, promos: pd.DataFrame, keys: _Keys) -> pd.DataFrame:
    """Base candidate sets: the featured sets of the store-weeks that have instances (``context_id, product_id``)."""
    ctx = instances[["context_id", "store_id", "week"]].drop_duplicates()
    sw = promos[["store_id", "week", "product_id"]]
    sw_key = _col(sw, "store_id") * keys.swp.radix[1] + _col(sw, "week")
    ctx_key = pd.Index(_col(ctx, "store_id") * keys.swp.radix[1] + _col(ctx, "week"))
    ctx_pos = ctx_key.get_indexer(sw_key)
    return pd.DataFrame({"context_id": ctx["context_id"].to_numpy(dtype=object)[ctx_pos[ctx_pos >= 0]],
                         "product_id": _col(sw, "product_id")[ctx_pos >= 0]}).drop_duplicates()


def _items(product_ids: np.ndarray, products: pd.DataFrame, keys: _Keys) -> tuple[pd.DataFrame, pd.Index]:
    """Items sorted by their string id: text and log_popularity (households per product before the cutoff); and
    the product ids in the same order."""
    item_ids = unique_sorted(product_ids)
    item_str = np.asarray(pd.Series(item_ids, dtype="int64").astype(str), dtype=object)
    order = np.argsort(item_str, kind="stable")
    item_ids, item_str = item_ids[order], item_str[order]
    prod_pos = pd.Index(products["product_id"]).get_indexer(pd.Index(item_ids))
    text = np.full(len(item_ids), MISSING_DESCRIPTION, dtype=object)
    text[prod_pos >= 0] = product_descriptions(products.iloc[prod_pos[prod_pos >= 0]]).to_numpy(dtype=object)
    reach = pd.Series(keys.seen_before.to_numpy() % keys.hp.radix[1]).value_counts()
    items = pd.DataFrame({"item_id": item_str, "text": text,
                          "log_popularity": np.log1p(reach.reindex(item_ids, fill_value=0).to_numpy()
                                                     .astype("float64"))})
    return items, pd.Index(item_ids)


def _exclusions(hits, instances, win, keys: _Keys, prod_index: pd.Index) -> tuple[dict, dict]:
    """Products bought before the cutoff (per user) and products bought in the context's week (any store), for the
    (user, context) pairs that have instances."""
    inst_hh = unique_sorted(_col(hits, "household_id"))
    sb = keys.seen_before.to_numpy()
    sb_hh, sb_prod = sb // keys.hp.radix[1], sb % keys.hp.radix[1]
    sel = np.isin(sb_hh, inst_hh)
    sb_pos = prod_index.get_indexer(sb_prod[sel])
    keep = sb_pos >= 0
    excl_user = group_positions(uid(sb_hh[sel][keep]), sb_pos[keep])
    uc = instances[["user_id", "context_id", "week"]].drop_duplicates()
    wk = win.loc[win["household_id"].isin(inst_hh), ["household_id", "week", "product_id"]].drop_duplicates()
    wk = wk.assign(user_id=uid(wk["household_id"].to_numpy())).merge(uc, on=["user_id", "week"], how="inner")
    wk_pos = prod_index.get_indexer(_col(wk, "product_id"))
    keep = wk_pos >= 0
    excl_uc = group_positions(tuple_keys(wk["user_id"].to_numpy(dtype=object)[keep],
                                         wk["context_id"].to_numpy(dtype=object)[keep]), wk_pos[keep])
    return excl_user, excl_uc


def build_featured_products(tables: dict) -> Task:
    tx, products, promos = tables["transactions"], tables["products"], tables["promotions"]
    promos = promos[promos["mailer_location"].isin(FEATURED_MAILER_CODES)]
    pre, win = split_time(tx[["household_id", "store_id", "week", "product_id", "transaction_timestamp"]])
    active = unique_sorted(pre["household_id"].to_numpy())
    keys = _Keys.of(tx, pre, promos)
    hits, instances, notes = _positives(win, active, keys)
    hist, history = _history(pre, keys)
    base_rows = _base_rows(instances, promos, keys)
    items, prod_index = _items(np.concatenate([_col(base_rows, "product_id"), _col(hist, "product_id"),
                                               _col(hits, "product_id")]), products, keys)
    base = group_positions(base_rows["context_id"].to_numpy(dtype=object),
                           prod_index.get_indexer(_col(base_rows, "product_id")))
    excl_user, excl_uc = _exclusions(hits, instances, win, keys, prod_index)
    notes["featured_store_weeks_total"] = int(len(unique_sorted(keys.featured.to_numpy() // keys.swp.radix[2])))
    return finish_recommendation(SPEC, instances, items, history, Candidates(base, excl_user, excl_uc),
                                 ("log_popularity",), max_timestamp(pre["transaction_timestamp"]), notes)


def history_log(task: Task, tables: dict, fourth_level: str) -> pd.DataFrame:
    """History events as purchases: the product's four category levels and description (as in pre-training; a
    product missing from the product table falls back to the item text)."""
    from data_prep.sources import _completejourney_product_table

    history, products = task.history, tables["products"]
    table = _completejourney_product_table(products, fourth_level)
    table.index = products["product_id"].astype(str).to_numpy()
    rows = table.reindex(history["item_id"].astype(str).to_numpy())
    out = pd.DataFrame(index=pd.RangeIndex(len(history)))
    for column in ("category_1", "category_2", "category_3", "category_4", "description"):
        out[column] = rows[column].to_numpy(dtype=object)
    items = task.items.set_index("item_id")
    fallback = pd.Series(items["text"].reindex(history["item_id"].astype(str)).to_numpy(), index=out.index)
    out["description"] = out["description"].fillna(fallback)
    return out


def cooccurrence_link(task: Task, tables: dict, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Each item (a product) links to itself (``"product"``) or to its product type (``"type"``)."""
    items = task.items["item_id"].to_numpy(dtype=object)
    if level == "product":
        return np.arange(len(items)), items
    products = require_columns(tables, "products", ["product_id", "product_type"])
    return np.arange(len(items)), product_attribute(products, np.asarray(items, dtype=np.int64), "product_type")


SPEC = TaskSpec(
    number=4,
    name="featured_products",
    kind="recommendation",
    paper_analogue="Product Collection Recommendation (PCR)",
    definition="Featured = product in a store-week's mailer at a front-page/wrap position (mailer_location D front "
               "page, F back page, H wrap front, L wrap back). Positive (one instance per household, store, week, "
               "product): the household bought a featured product of that store-week in that store and week "
               "(timestamp in the window) and had never bought the product before the cutoff. Candidates: the "
               "store-week's featured set minus products the household bought before the cutoff or in that week "
               "(any store).",
    tables=("transactions", "products", "promotions"),
    build=build_featured_products,
    history_log=history_log,
    cooccurrence_link=cooccurrence_link,
    # chosen on validation users (sampled MRR, seeds 0-2): product 0.296 vs type 0.111
    cooccurrence_level="product",
)
