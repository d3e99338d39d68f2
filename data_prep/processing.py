"""Vectorised processing of canonical purchase logs: time cutoff, de-duplication, user filters, the user split,
vocabularies, date ids and the per-user rows of the output dataset.

All functions work on pandas/numpy arrays (no Python loop over purchases). A *compact log* is a canonical log
reduced to what the model needs, sorted by user then time:

    user_id (category), ts (int64 unix seconds of the naive wall-clock time), category_1..4 (category),
    description (category), product_id (category)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from modeling_shopperbert.contract import (
    CATEGORY_FIELDS,
    DATE_FIELDS,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
)
from modeling_shopperbert.row_encoding import SECONDS_PER_DAY, category_lookup, date_ids, date_parts  # one implementation

from .schema import DataPrepError, parse_date

DAYS_PER_MONTH = 365.25 / 12
COMPACT_COLUMNS = ("user_id", "ts") + CATEGORY_FIELDS + ("description", "product_id")
ACTIVITY_RULES = ("rate", "windows")
MAX_MONTHLY_RATE = 10_000.0  # purchases per month (over 300 a day): anything above is a typo


@dataclass
class ProcessingOptions:
    """How purchase logs become a pre-training corpus (defaults follow the paper, section 4.1.1).

    Attributes:
        start_date: drop purchases before this date (inclusive start); None keeps everything.
        end_date: drop purchases at or after this date (exclusive end), so that pre-training data ends before any
            downstream label window; None keeps everything.
        dedup: count repeated purchases of one product by one user on one calendar day once (the paper's rule).
            The product is `product_id` when known, else (description, four categories).
        min_monthly_rate: the minimum-activity filter. The paper drops users "who purchased products less than
            once every two months", i.e. a rate of 0.5 purchases per month; 0 disables the filter.
        activity_rule: "rate" (default): a user needs at least ceil(min_monthly_rate * months of data) purchases
            (after de-duplication) over the whole period; "windows": a user needs a purchase in every consecutive
            window of 1 / min_monthly_rate months of the period (a stricter reading).
        top_fraction: drop this share of the most frequent buyers (the paper's top 1%: 0.01); 0 disables.
        validation_fraction: share of the kept users held out as the validation split (by user, seeded).
        seed: seed of the user split.
        min_category_count: a category value enters the vocabulary only if it occurs at least this often in the
            train split (rarer ones map to [UNK]).
    """

    start_date: str | None = None
    end_date: str | None = None
    dedup: bool = True
    min_monthly_rate: float = 0.5
    activity_rule: str = "rate"
    top_fraction: float = 0.01
    validation_fraction: float = 0.1
    seed: int = 0
    min_category_count: int = 1

    def check(self) -> None:
        if self.activity_rule not in ACTIVITY_RULES:
            raise DataPrepError(f"activity_rule must be one of {ACTIVITY_RULES}, got {self.activity_rule!r}")
        if not 0 <= self.min_monthly_rate <= MAX_MONTHLY_RATE:
            raise DataPrepError(f"--min-monthly-rate must be a number of purchases per month in [0, "
                                f"{MAX_MONTHLY_RATE:g}], got {self.min_monthly_rate}")
        if not 0 <= self.top_fraction < 1:
            raise DataPrepError(f"--top-fraction must be in [0, 1), got {self.top_fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise DataPrepError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        if self.seed < 0:
            raise DataPrepError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.min_category_count < 1:
            raise DataPrepError(f"--min-category-count must be at least 1, got {self.min_category_count}")
        start = parse_date(self.start_date, "--start-date") if self.start_date is not None else None
        end = parse_date(self.end_date, "--end-date") if self.end_date is not None else None
        if start is not None and end is not None and start >= end:
            raise DataPrepError(f"--start-date {self.start_date} must be before --end-date {self.end_date}")

    def to_dict(self) -> dict:
        return asdict(self)


def to_unix_seconds(values) -> np.ndarray:
    """datetime64 values (any unit, naive) -> int64 seconds since 1970-01-01 of that wall-clock time."""
    return np.asarray(values).astype("datetime64[s]").astype(np.int64)


def timestamp_to_seconds(ts) -> int:
    return int(np.datetime64(pd.Timestamp(ts), "s").astype(np.int64))


# ------------------------------------------------------------------------------------------------------------------
# Cutoff and de-duplication
# ------------------------------------------------------------------------------------------------------------------

def apply_time_window(df: pd.DataFrame, start_date=None, end_date=None) -> pd.DataFrame:
    """Keep purchases with start_date <= timestamp < end_date (either bound may be None)."""
    mask = np.ones(len(df), dtype=bool)
    ts = df["timestamp"].to_numpy()
    if start_date is not None:
        mask &= ts >= np.datetime64(parse_date(start_date, "start_date"), "s")
    if end_date is not None:
        mask &= ts < np.datetime64(parse_date(end_date, "end_date"), "s")
    return df if mask.all() else df.loc[mask].reset_index(drop=True)


def _product_key(df: pd.DataFrame) -> np.ndarray:
    """An integer per distinct product: the product_id when known, else (description, categories)."""
    def fallback():
        return df.groupby([df[c].cat.codes for c in ("description",) + CATEGORY_FIELDS], sort=False,
                          observed=True).ngroup().to_numpy(dtype=np.int64)

    if "product_id" not in df.columns:
        return fallback()
    pid = df["product_id"].cat.codes.to_numpy().astype(np.int64)
    if (pid >= 0).all():
        return pid
    return np.where(pid >= 0, pid, len(df["product_id"].cat.categories) + fallback())


def compact_log(df: pd.DataFrame, dedup: bool = True) -> tuple[pd.DataFrame, int]:
    """Canonical log -> compact log sorted by (user, time); with `dedup`, repeated purchases of the same product
    by the same user on the same calendar day collapse into the first one. Returns (compact, rows removed)."""
    ts = to_unix_seconds(df["timestamp"])
    user = df["user_id"].cat.codes.to_numpy()
    order = np.lexsort((ts, user))  # stable: equal times keep their input order
    removed = 0
    if dedup:
        key = _product_key(df)
        frame = pd.DataFrame({"u": user[order], "k": key[order], "d": ts[order] // SECONDS_PER_DAY})
        keep = ~frame.duplicated(keep="first").to_numpy()
        removed = int((~keep).sum())
        order = order[keep]
    out = {"user_id": df["user_id"].take(order).reset_index(drop=True).cat.remove_unused_categories(),
           "ts": ts[order]}
    for col in CATEGORY_FIELDS + ("description", "product_id"):
        out[col] = df[col].take(order).reset_index(drop=True)
    return pd.DataFrame(out), removed


def user_offsets(user_codes: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal values in a sorted code array, plus the end (len + 1 entries)."""
    if len(user_codes) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    return np.r_[starts, len(user_codes)].astype(np.int64)


def user_table(compact: pd.DataFrame) -> pd.DataFrame:
    """One row per user of a compact log: user_id, n (purchases), first_ts, last_ts (in log order).

    user_id is an Arrow string column (`pd.ArrowDtype(pa.large_string())`): a build keeps one row per user until
    its last pass, and Arrow keeps an id in its bytes plus an offset, where a Python string costs about 60 bytes.
    """
    codes = compact["user_id"].cat.codes.to_numpy()
    off = user_offsets(codes)
    ts = compact["ts"].to_numpy()
    cats = compact["user_id"].cat.categories
    ids = pa.array(np.asarray(cats[codes[off[:-1]]], dtype=object), type=pa.large_string())
    return pd.DataFrame({
        "user_id": pd.arrays.ArrowExtensionArray(ids),
        "n": np.diff(off).astype(np.int32),
        "first_ts": ts[off[:-1]],
        "last_ts": ts[off[1:] - 1],
    })


def user_id_array(user_ids) -> pa.ChunkedArray | pa.Array:
    """User ids as an Arrow string array, without Python objects where they are Arrow already: from an Arrow-backed
    pandas column (`user_table`), an Arrow array, or any numpy/pandas array (each value as `str`)."""
    values = user_ids.array if isinstance(user_ids, pd.Series) else user_ids
    if isinstance(values, pd.arrays.ArrowExtensionArray):
        values = values.__arrow_array__()
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        string = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
        return values if string else values.cast(pa.large_string())  # ids order as text, whatever their type
    values = np.asarray(values, dtype=object)  # not numpy's fixed-width str, which drops NUL characters
    return pa.array([v if isinstance(v, str) else str(v) for v in values], type=pa.large_string())


def id_order(user_ids) -> np.ndarray:
    """Positions that sort `user_ids` by id (code-point order, stable), as numpy's argsort of the ids as `str`."""
    return pc.sort_indices(user_id_array(user_ids)).to_numpy().astype(np.int64)


# ------------------------------------------------------------------------------------------------------------------
# User filters and the split
# ------------------------------------------------------------------------------------------------------------------

def activity_threshold(period_start: int, period_end: int, min_monthly_rate: float) -> tuple[int, float]:
    """(minimum purchases, months of data) for the "rate" rule."""
    months = max(period_end - period_start, 0) / SECONDS_PER_DAY / DAYS_PER_MONTH
    return max(1, math.ceil(min_monthly_rate * months - 1e-9)), months


def window_ids(ts: np.ndarray, period_start: int, min_monthly_rate: float) -> np.ndarray:
    """Index of the activity window (1 / rate months long, from period_start) of each timestamp."""
    window = DAYS_PER_MONTH / min_monthly_rate * SECONDS_PER_DAY
    return ((ts - period_start) // window).astype(np.int64)


def apply_user_filters(users: pd.DataFrame, period_start: int, period_end: int, options: ProcessingOptions,
                       windows_covered: np.ndarray | None = None,
                       id_rank: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """The paper's user filters on a user table (from `user_table`). Returns (kept mask, report).

    1. minimum activity (see `ProcessingOptions.min_monthly_rate` / `activity_rule`);
    2. the `top_fraction` most frequent buyers among the remaining users (ties broken by user id).

    `windows_covered` (per user, number of distinct activity windows with a purchase) is needed by the "windows"
    rule. `id_rank` (per user, the rank of its id in code-point order) stands in for the column user_id, which
    breaks ties. The report lists, for each filter, its threshold and the users and purchases it removed. Raises
    `DataPrepError` naming the filter that left no user.
    """
    n = users["n"].to_numpy()
    kept = np.ones(len(users), dtype=bool)
    report = []
    if options.min_monthly_rate > 0:
        min_purchases, months = activity_threshold(period_start, period_end, options.min_monthly_rate)
        if options.activity_rule == "rate":
            active = n >= min_purchases
            rule = (f"at least {min_purchases} purchases (rate {options.min_monthly_rate}/month over "
                    f"{months:.1f} months)")
        else:
            if windows_covered is None:
                raise ValueError("activity_rule='windows' needs windows_covered")
            n_windows = max(1, int(window_ids(np.array([max(period_end - 1, period_start)]), period_start,
                                              options.min_monthly_rate)[0]) + 1)
            active = windows_covered >= n_windows
            rule = (f"a purchase in each of the {n_windows} windows of {1 / options.min_monthly_rate:g} months "
                    f"over {months:.1f} months")
        removed = kept & ~active
        report.append({"filter": "min_activity", "rule": rule, "activity_rule": options.activity_rule,
                       "min_monthly_rate": options.min_monthly_rate, "min_purchases": int(min_purchases),
                       "users_removed": int(removed.sum()), "purchases_removed": int(n[removed].sum())})
        kept &= active
        if not kept.any():
            raise DataPrepError(
                f"no user is left after the minimum-activity filter ({rule}; the most active user has "
                f"{int(n.max())} purchases); lower --min-monthly-rate or pass --min-monthly-rate 0 to disable it")
    if options.top_fraction > 0:
        candidates = np.flatnonzero(kept)
        n_drop = int(math.floor(options.top_fraction * len(candidates)))
        threshold = None
        if n_drop:
            dropped = _most_frequent(users["user_id"] if id_rank is None else None, n, candidates, n_drop, id_rank)
            threshold = int(n[dropped].min())
            removed = np.zeros(len(users), dtype=bool)
            removed[dropped] = True
        else:
            removed = np.zeros(len(users), dtype=bool)
        report.append({"filter": "top_frequency", "rule": f"drop the top {options.top_fraction:.2%} most frequent "
                       f"buyers ({n_drop} of {len(candidates)} users"
                       + (f", those with {threshold} or more purchases)" if threshold is not None else ")"),
                       "top_fraction": options.top_fraction, "min_purchases_of_dropped": threshold,
                       "users_removed": int(removed.sum()), "purchases_removed": int(n[removed].sum())})
        kept &= ~removed
        if not kept.any():
            raise DataPrepError("no user is left after the top-frequency filter; lower --top-fraction")
    return kept, report


def _most_frequent(user_ids, n: np.ndarray, candidates: np.ndarray, count: int,
                   id_rank: np.ndarray | None = None) -> np.ndarray:
    """The `count` candidates with the most purchases `n`, ties broken by user id (smallest first, or by `id_rank`
    where given); only the ids tied at the threshold are sorted."""
    cand_n = n[candidates]
    threshold = np.partition(cand_n, len(cand_n) - count)[len(cand_n) - count]  # the count-th largest
    above = candidates[cand_n > threshold]
    tied = candidates[cand_n == threshold]
    if id_rank is not None:
        tied_order = np.argsort(id_rank[tied], kind="stable")
    else:
        tied_order = id_order(user_id_array(user_ids).take(pa.array(tied)))
    return np.concatenate([above, tied[tied_order[:count - len(above)]]])


def split_users(user_ids, validation_fraction: float, seed: int, id_rank: np.ndarray | None = None) -> np.ndarray:
    """Seeded split by user: returns a boolean array, True for validation users.

    The users are sorted by id before the seeded permutation, so the split does not depend on input order;
    `id_rank` (per user, the rank of its id in code-point order; any numbers that sort the same way) stands in for
    the ids, `user_ids` is then unused. At least one user stays in train; with a positive fraction and at least two
    users, at least one goes to validation.
    """
    count = len(user_ids) if id_rank is None else len(id_rank)
    n_val = int(round(validation_fraction * count))
    if validation_fraction > 0 and count >= 2:
        n_val = min(max(n_val, 1), count - 1)
    else:
        n_val = 0
    order = id_order(user_ids) if id_rank is None else np.argsort(id_rank, kind="stable")
    perm = np.random.default_rng(seed).permutation(count)
    is_val = np.zeros(count, dtype=bool)
    is_val[order[perm[:n_val]]] = True
    return is_val


# ------------------------------------------------------------------------------------------------------------------
# Vocabularies and ids
# ------------------------------------------------------------------------------------------------------------------

def count_category_values(compact: pd.DataFrame) -> dict:
    """Per category level, a Series value -> count over the rows of `compact`."""
    counts = {}
    for level in CATEGORY_FIELDS:
        col = compact[level]
        codes = col.cat.codes.to_numpy()
        tally = np.bincount(codes[codes >= 0], minlength=len(col.cat.categories))
        nz = tally > 0
        counts[level] = pd.Series(tally[nz], index=pd.Index(np.asarray(col.cat.categories)[nz], dtype=object))
    return counts


def merge_counts(parts: list) -> dict:
    """Sum per-level value counts of several chunks."""
    merged = {}
    for level in CATEGORY_FIELDS:
        series = [p[level] for p in parts if len(p[level])]
        merged[level] = (pd.concat(series).groupby(level=0).sum() if series
                         else pd.Series([], dtype=np.int64, index=pd.Index([], dtype=object)))
    return merged


NO_VALUES_PLACEHOLDER = "(no values)"


def build_vocab(counts: dict, min_count: int = 1) -> dict:
    """Vocabularies from train-split counts: the four special tokens, then values by decreasing frequency (ties
    alphabetical). A level without any value gets one placeholder entry so that its size exceeds the reserved
    ids (every purchase then has [UNK] there)."""
    vocab = {}
    for level in CATEGORY_FIELDS:
        c = counts[level]
        c = c[c >= min_count]
        frame = pd.DataFrame({"value": c.index.astype(str), "count": c.to_numpy()})
        frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        values = frame["value"].tolist() or [NO_VALUES_PLACEHOLDER]
        vocab[level] = list(SPECIAL_TOKENS) + values
    return vocab


def output_schema() -> pa.Schema:
    """Arrow schema of the per-user dataset rows."""
    fields = [pa.field("user_id", pa.string()), pa.field("num_purchases", pa.int32()),
              pa.field("timestamp", pa.list_(pa.int64()))]
    fields += [pa.field(f, pa.list_(pa.int32())) for f in CATEGORY_FIELDS + DATE_FIELDS + (TEXT_INDEX_FIELD,)]
    return pa.schema(fields)


def encode_rows(compact: pd.DataFrame, vocab: dict, description_index: pd.Index, date_base_year: int,
                year_vocab_size: int) -> pa.Table:
    """A compact log (sorted by user, time) -> per-user rows (an Arrow table in `output_schema`).

    Categories map through `vocab` (unknown or missing -> UNK_ID); descriptions map to their position in
    `description_index` (every description must be there); dates map to ids by `date_ids`.
    """
    schema = output_schema()
    if len(compact) == 0:
        return schema.empty_table()
    codes = compact["user_id"].cat.codes.to_numpy()
    off = user_offsets(codes)
    offsets = pa.array(off.astype(np.int32) if off[-1] < 2**31 - 1 else off, type=pa.int32())
    ts = compact["ts"].to_numpy().astype(np.int64)

    def lists(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    columns = {
        "user_id": pa.array(np.asarray(compact["user_id"].cat.categories[codes[off[:-1]]], dtype=object).astype(str),
                            type=pa.string()),
        "num_purchases": pa.array(np.diff(off).astype(np.int32)),
        "timestamp": lists(ts),
    }
    for level in CATEGORY_FIELDS:
        col = compact[level]
        lut = category_lookup(col.cat.categories, vocab[level])
        columns[level] = lists(lut[col.cat.codes.to_numpy()])  # code -1 -> last entry = UNK_ID
    for name, ids in date_ids(ts, date_base_year, year_vocab_size).items():
        columns[name] = lists(ids)
    desc = compact["description"]
    pos = description_index.get_indexer(pd.Index(np.asarray(desc.cat.categories, dtype=object), dtype=object))
    desc_codes = desc.cat.codes.to_numpy()
    used = np.unique(desc_codes)
    if (desc_codes < 0).any() or (pos[used] < 0).any():
        raise ValueError("a description is missing from the description index")  # internal invariant
    columns[TEXT_INDEX_FIELD] = lists(pos[desc_codes].astype(np.int32))
    return pa.Table.from_pydict(columns, schema=schema)


__all__ = [
    "ProcessingOptions", "ACTIVITY_RULES", "apply_time_window", "compact_log", "user_table", "user_offsets",
    "apply_user_filters", "split_users", "user_id_array", "id_order", "count_category_values",
    "merge_counts", "build_vocab", "category_lookup",
    "date_parts", "date_ids", "encode_rows", "output_schema", "to_unix_seconds", "activity_threshold", "window_ids",
]
