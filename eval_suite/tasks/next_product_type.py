"""Task 6, ``next_product_type`` (the paper's Shopping Search Query Recommendation): a product type the household
first buys in the window; candidates are the types the household never bought at any time.

History (T-Trans): the household's first purchase of each type before the cutoff. Co-occurrence link: the type
itself (items are product types, so only the type level exists).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .building import (
    WINDOW_CONTEXT,
    Candidates,
    clean_col,
    finish_recommendation,
    group_positions,
    log_popularity,
    top_values,
    uid,
    unique_sorted,
)
from .protocol import CUTOFF, WINDOW_END, max_timestamp
from .task import Task, TaskSpec


def _typed_lines(tx: pd.DataFrame, products: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int]:
    """Purchase lines before the window end with their product type code: (lines, cleaned type per product,
    type names by code, number of lines dropped for an unknown type)."""
    t = tx[["household_id", "product_id", "transaction_timestamp"]]
    t = t[t["transaction_timestamp"] < WINDOW_END]
    ptype = clean_col(products["product_type"])
    codes, type_names = pd.factorize(pd.Series(ptype, dtype=object), use_na_sentinel=True)
    type_names = np.asarray(type_names, dtype=object)
    ppos = pd.Index(products["product_id"]).get_indexer(pd.Index(t["product_id"].to_numpy()))
    tcode = np.where(ppos >= 0, codes[np.maximum(ppos, 0)], -1) if len(t) else np.zeros(0, np.int64)
    n_unknown = int((tcode < 0).sum())
    return t.assign(type_code=tcode)[tcode >= 0], ptype, type_names, n_unknown


def _items(universe: np.ndarray, ptype: np.ndarray, products: pd.DataFrame, pre_t: pd.DataFrame) -> pd.DataFrame:
    """Item text: type | dominant category | dominant department (by number of catalogue products); popularity."""
    cat = top_values(ptype, products["product_category"].to_numpy(dtype=object), 1)
    dept = top_values(ptype, products["department"].to_numpy(dtype=object), 1)
    texts = [" | ".join([u] + cat.get(u, []) + dept.get(u, [])).lower() for u in universe]
    return pd.DataFrame({"item_id": universe, "text": texts,
                         "log_popularity": log_popularity(pre_t, "item_id", universe)})


def _excluded_per_user(first: pd.DataFrame, instances: pd.DataFrame, item_index: pd.Index) -> dict:
    """Every type the household bought at any time (before the cutoff or in the window)."""
    ever = first[first["household_id"].isin(set(instances["user_id"].astype("int64").tolist()))] \
        if len(instances) else first.iloc[:0]
    ever_pos = item_index.get_indexer(pd.Index(ever["item_id"].to_numpy(dtype=object)))
    keep = ever_pos >= 0
    return group_positions(uid(ever["household_id"].to_numpy()[keep]), ever_pos[keep])


def build_next_product_type(tables: dict) -> Task:
    products = tables["products"]
    t, ptype, type_names, n_unknown = _typed_lines(tables["transactions"], products)
    first = t.groupby(["household_id", "type_code"], as_index=False)["transaction_timestamp"].min()
    first["item_id"] = type_names[first["type_code"].to_numpy()]
    is_pre = (first["transaction_timestamp"] < CUTOFF).to_numpy()
    active = unique_sorted(first.loc[is_pre, "household_id"].to_numpy())
    universe = np.unique(first.loc[is_pre, "item_id"].to_numpy(dtype=object))

    pos = first[~is_pre]
    in_uni = pos["item_id"].isin(set(universe.tolist()))
    pos_active = pos["household_id"].isin(active)
    notes = {"dropped_positives_type_unseen_before_cutoff": int((~in_uni & pos_active).sum()),
             "dropped_purchase_lines_unknown_type": n_unknown}
    pos = pos[in_uni & pos_active]
    instances = pd.DataFrame({"user_id": uid(pos["household_id"].to_numpy()),
                              "item_id": pos["item_id"].to_numpy(dtype=object), "context_id": WINDOW_CONTEXT,
                              "timestamp": pos["transaction_timestamp"].to_numpy()})
    hist = first[is_pre]
    history = pd.DataFrame({"user_id": uid(hist["household_id"].to_numpy()),
                            "item_id": hist["item_id"].to_numpy(dtype=object),
                            "timestamp": hist["transaction_timestamp"].to_numpy()})

    pre_t = t[t["transaction_timestamp"] < CUTOFF].assign(
        item_id=lambda d: type_names[d["type_code"].to_numpy()])
    items = _items(universe, ptype, products, pre_t)
    base = {WINDOW_CONTEXT: np.arange(len(items), dtype=np.int32)} if len(items) else {}
    excl_user = _excluded_per_user(first, instances, pd.Index(items["item_id"]))
    return finish_recommendation(SPEC, instances, items, history, Candidates(base, excl_user), ("log_popularity",),
                                 max_timestamp(pre_t["transaction_timestamp"]), notes)


def history_log(task: Task, tables: dict, fourth_level: str) -> pd.DataFrame:
    """History events as purchases of the type: its most common department and category, the type itself."""
    history, items = task.history, task.items.set_index("item_id")
    products = tables["products"].dropna(subset=["product_type"])
    modes = products.groupby("product_type").agg(
        category_1=("department", lambda s: s.mode().iat[0] if len(s.mode()) else None),
        category_2=("product_category", lambda s: s.mode().iat[0] if len(s.mode()) else None))
    kinds = modes.reindex(history["item_id"].to_numpy())
    out = pd.DataFrame(index=pd.RangeIndex(len(history)))
    out["category_1"] = kinds["category_1"].to_numpy(dtype=object)
    out["category_2"] = kinds["category_2"].to_numpy(dtype=object)
    out["category_3"] = history["item_id"].to_numpy(dtype=object)
    out["category_4"] = None
    out["description"] = items["text"].reindex(history["item_id"]).to_numpy(dtype=object)
    return out


def cooccurrence_link(task: Task, tables: dict, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Each item (a product type, its id the stripped type name) links to itself; type level only."""
    if level != "type":
        raise ValueError("next_product_type items are product types: use level='type'")
    items = task.items["item_id"].to_numpy(dtype=object)
    return np.arange(len(items)), items


SPEC = TaskSpec(
    number=6,
    name="next_product_type",
    kind="recommendation",
    paper_analogue="Shopping Search Query Recommendation (SSQR)",
    definition="Items are product types (product_type names) bought by anyone before the cutoff. Positive (one "
               "instance per household and type): the household's first purchase of the type falls in the window "
               "(never bought before the cutoff). Candidates: the types the household never bought at any time "
               "(before the cutoff or in the window).",
    tables=("transactions", "products"),
    build=build_next_product_type,
    history_log=history_log,
    cooccurrence_link=cooccurrence_link,
    # items are types (validation MRR: household co-occurrence 0.224 vs basket co-occurrence 0.215)
    cooccurrence_level="type",
)
