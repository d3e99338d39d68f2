"""The task object every builder returns (``Task``), its full-ranking groups (``RankingGroup``) and what one task
file declares about itself (``TaskSpec``). Pure pandas/numpy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

#: The columns a task's history log gives each history event (``TaskSpec.history_log``), beside user and time.
HISTORY_LOG_COLUMNS = ("category_1", "category_2", "category_3", "category_4", "description")


@dataclass(frozen=True)
class TaskSpec:
    """What one task file (``eval_suite/tasks/<name>.py``) declares; the registry collects every file's ``SPEC``.

    Attributes:
        number: the task's place in ``TASK_NAMES`` (the paper's order, 1-6).
        name, kind ("classification" | "recommendation"), paper_analogue, definition: as on ``Task``.
        tables: the raw Complete Journey tables the builder reads (names of ``RAW_COLUMNS``).
        build: raw tables (dict of DataFrames) -> ``Task``.
        static_label: the label carries no date (``kids``: demographics), so there are no label events to check.
        history_log: recommendation tasks: ``(task, tables, fourth_level) -> DataFrame`` of ``HISTORY_LOG_COLUMNS``,
            one row per row of ``task.history`` (the history events as tokens of the pre-training vocabulary; T-Trans).
        cooccurrence_link: recommendation tasks: ``(task, tables, level) -> (rows, concepts)``: item row positions
            and, for each, a linked concept name (a product id or a product type) of the co-occurrence baseline.
        cooccurrence_level: the co-occurrence baseline's default level ("product" or "type"), chosen on validation.
    """

    number: int
    name: str
    kind: str
    paper_analogue: str
    definition: str
    tables: tuple[str, ...]
    build: Callable[[dict], "Task"]
    static_label: bool = False
    history_log: Callable | None = None
    cooccurrence_link: Callable | None = None
    cooccurrence_level: str | None = None


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
