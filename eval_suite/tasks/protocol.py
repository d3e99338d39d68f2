"""The protocol every task shares: the time cutoff, the user splits, the fixed negatives and training pairs, the
cold/heavy user groups and the leakage check.

Time protocol (no leakage): one global cutoff ``CUTOFF`` (2017-10-02, the Monday that starts retail week 41).
Everything a model may see as input (pre-training logs, task-specific histories, item-side features, and the data
that decides who is in a task's population) is strictly before ``CUTOFF``; every label comes from the window
``[CUTOFF, WINDOW_END)``. ``WINDOW_END`` is 2018-01-02 00:00 (exclusive), so the window covers the whole of
2018-01-01 (the last purchase in the data is 2018-01-01 04:01). Demographics are used only as the label of the
``kids`` task and never enter purchase tokens.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .task import Task

#: Global cutoff: inputs strictly before, labels at or after. Monday 2017-10-02 00:00, start of retail week 41.
CUTOFF = pd.Timestamp("2017-10-02")
#: Exclusive end of the label window: 2018-01-02 00:00, so the window covers all of 2018-01-01.
WINDOW_END = pd.Timestamp("2018-01-02")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
COLD_HEAVY_FRACTION = 0.10


def split_time(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchase lines before the cutoff and those in the label window."""
    ts = tx["transaction_timestamp"]
    pre = tx[ts < CUTOFF]
    win = tx[(ts >= CUTOFF) & (ts < WINDOW_END)]
    return pre, win


def max_timestamp(*series) -> pd.Timestamp:
    """The latest timestamp of the given series (NaT when there is none): a task's ``input_max_timestamp``."""
    vals = [pd.Series(s).max() for s in series if s is not None and len(s)]
    vals = [v for v in vals if pd.notna(v)]
    return max(vals) if vals else pd.NaT


def stable_hash(s: str) -> int:
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
    return np.random.default_rng([int(seed), stable_hash(task.name), int(salt)])


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
    from .registry import check_name

    return Path(root) / check_name(task_name) / f"seed{int(seed)}.parquet"


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
    h = np.array([stable_hash(u) for u in ids], dtype=np.int64)
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
        if not _static_label(task):
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


def _static_label(task: Task) -> bool:
    """True for tasks whose label carries no date (their spec says so): no label events to check."""
    from .registry import SPECS

    spec = SPECS.get(task.name)
    return spec is not None and spec.static_label
