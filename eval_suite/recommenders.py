"""The label-free recommenders of the classical baselines (tasks 4-6) and the label-aware popularity: popularity
before the cutoff ("Popularity"), item-to-item co-occurrence of products or product types ("Co-occurrence") and
popularity among the training users' labels ("Popularity (train labels)"). ``eval_suite.baselines`` blends the last
two ("Hybrid"), evaluates them all on the fixed negatives and re-exports every name here.

Every input comes from data strictly before ``cutoff`` (default ``CUTOFF``); the co-occurrence counts cover the
pre-cutoff logs of all households (label-free inputs, the logs pre-training sees).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .tasks import CUTOFF, SPECS, Task
from .tasks.building import product_attribute as _product_attribute
from .tasks.tables import require_columns as _require


def _uid(household_ids) -> np.ndarray:
    return np.asarray(pd.Series(np.asarray(household_ids, dtype=np.int64)).astype(str), dtype=object)


def _pre_cutoff_lines(tables: dict, cutoff: pd.Timestamp, columns: Sequence[str]) -> pd.DataFrame:
    """Purchase lines strictly before ``cutoff`` (only ``columns`` plus the timestamp)."""
    tx = _require(tables, "transactions", list(columns) + ["transaction_timestamp"])
    ts = tx["transaction_timestamp"]
    return tx.loc[(ts < cutoff).to_numpy(), list(dict.fromkeys(list(columns) + ["transaction_timestamp"]))]


def _item_hash_fraction(item_ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per item id (crc32): a deterministic, order-independent tie-break."""
    return np.fromiter((zlib.crc32(str(i).encode("utf-8")) for i in item_ids), dtype=np.float64,
                       count=len(item_ids)) / 2.0 ** 32


def _dense_rank(values: np.ndarray) -> np.ndarray:
    """0-based dense rank (equal values share a rank), as float64."""
    return np.unique(np.asarray(values, dtype=np.float64), return_inverse=True)[1].astype(np.float64)


def _lexicographic_rank(*keys) -> np.ndarray:
    """0-based dense rank of the tuples (keys[0][i], keys[1][i], ...), the first key the most significant."""
    keys = [np.asarray(k, dtype=np.float64) for k in keys]
    order = np.lexsort(keys[::-1])                   # lexsort's last key is its primary one
    stacked = np.stack([k[order] for k in keys])     # (K, N) sorted tuples
    new = np.r_[True, (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)][: len(order)]
    ranks = np.empty(len(order))
    ranks[order] = np.cumsum(new) - 1.0
    return ranks


class _PairScorer:
    """Shared plumbing: map aligned (user, item) id arrays to row positions via factorize (fast on 1M pairs)."""

    def __init__(self, task: Task):
        if task.kind != "recommendation":
            raise ValueError(f"task {task.name!r} is not a recommendation task")
        self.task = task
        self.item_ids = task.items["item_id"].to_numpy(dtype=object)
        self._item_index = pd.Index(self.item_ids)

    def _item_positions(self, items) -> np.ndarray:
        codes, uniques = pd.factorize(np.asarray(items, dtype=object))
        pos = self._item_index.get_indexer(pd.Index(uniques, dtype=object))
        if (pos < 0).any():
            raise KeyError(f"unknown item ids in task {self.task.name!r}")
        return pos[codes]

    def __call__(self, users, items) -> np.ndarray:
        return self.score_pairs(users, items)


class PopularityRecommender(_PairScorer):
    """score(u, i) = the item's ``log_popularity`` (households that bought it before the cutoff; same for every
    user).

    Ties (equal household counts, e.g. products nobody bought before the cutoff, popularity 0) are broken by a
    fixed crc32 hash of the item id (``tie_break="hash"``, the default): the score is the dense rank of
    ``log_popularity`` plus a hash fraction in [0, 1), so the popularity order is kept exactly and equal
    popularities are ordered arbitrarily but deterministically. A deployed popularity ranker has to output *some*
    order; left tied, the metric's conservative rule (a tie counts against the positive) would rank a tied
    positive last, which understates the baseline. ``tie_break=None`` returns raw ``log_popularity`` (ties left to
    the metric's rule); on the real tasks (seed 0) the two differ by at most 0.003 in any metric.
    """

    def __init__(self, task: Task, tie_break: str | None = "hash"):
        super().__init__(task)
        if tie_break not in ("hash", None):
            raise ValueError("tie_break must be 'hash' or None")
        pop = task.items["log_popularity"].to_numpy(dtype=np.float64)
        self.tie_break = tie_break
        self.item_scores = pop if tie_break is None else _dense_rank(pop) + _item_hash_fraction(self.item_ids)

    def score_pairs(self, users, items) -> np.ndarray:
        return self.item_scores[self._item_positions(items)]


#: Co-occurrence level per task when none is given (each task file's ``cooccurrence_level``), chosen on *validation*
#: users (sampled and full MRR; seeds 0-2, 0-19 for coupons).
DEFAULT_COOCCURRENCE_LEVEL = {name: spec.cooccurrence_level for name, spec in SPECS.items()
                              if spec.cooccurrence_link is not None}


def _purchase_concepts(tables: dict, cutoff: pd.Timestamp, level: str):
    """Pre-cutoff purchase lines mapped to concepts (``level="type"``: stripped product-type names, merged across
    categories as in ``next_product_type``; ``"product"``: product ids as strings). Returns (household ids,
    concept ids, lines with ``h`` (household position), ``c`` (concept position) [, ``basket_id``])."""
    cols = ["household_id", "product_id"] + (["basket_id"] if "basket_id" in tables["transactions"] else [])
    pre = _pre_cutoff_lines(tables, cutoff, cols)
    if level == "type":
        products = _require(tables, "products", ["product_id", "product_type"])
        concept = _product_attribute(products, pre["product_id"].to_numpy(), "product_type")
    elif level == "product":
        concept = pre["product_id"].astype("int64").astype(str).to_numpy(dtype=object)
    else:
        raise ValueError("level must be 'type' or 'product'")
    known = pd.notna(concept)
    c_codes, concepts = pd.factorize(pd.Series(concept[known], dtype=object), sort=True)
    h_codes, households = pd.factorize(pre["household_id"].to_numpy()[known], sort=True)
    lines = pd.DataFrame({"h": h_codes, "c": c_codes})
    if "basket_id" in pre:
        lines["basket_id"] = pre["basket_id"].to_numpy()[known]
    return np.asarray(households, dtype=np.int64), np.asarray(concepts, dtype=object), lines


def item_concept_links(task: Task, tables: dict, level: str, concepts: np.ndarray,
                       aggregate: str = "sum") -> sp.csr_matrix:
    """Items x concepts (product types or products, column order = ``concepts``), one column per linked concept
    that occurs in the pre-cutoff log (all-zero rows for items without any).

    Each task file says what its items link to (its ``SPEC.cooccurrence_link``):
    - ``next_product_type``: the item is the type itself (its id is the stripped type name); type level only.
    - ``featured_products``: the product itself (``"product"``) or its type (``"type"``).
    - ``campaign_coupons``: the coupon's products (``"product"``) or their types, weighted by the number of the
      coupon's products in each (``"type"``).
    ``aggregate``: ``"sum"`` (weights are counts, default) sums the similarities over what a coupon covers, so broad
    coupons score higher, as their reach does; ``"mean"`` makes each row a share (sum 1), breadth-neutral. On
    validation users of campaign_coupons (20 seeds) the sum gave MRR 0.21 against 0.10 for the mean. Items with a
    single concept (featured products, types) are the same under both.
    The links come from the product and coupon tables (static catalogues without dates).
    """
    spec = SPECS.get(task.name)
    if spec is None or spec.cooccurrence_link is None:
        raise ValueError(f"no item-to-concept link for task {task.name!r}")
    items = task.items["item_id"].to_numpy(dtype=object)
    rows, names = spec.cooccurrence_link(task, tables, level)
    cols = pd.Index(concepts).get_indexer(pd.Index(np.asarray(names, dtype=object)))
    ok = (cols >= 0) & (rows >= 0)
    links = sp.csr_matrix((np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(len(items), len(concepts)))
    links.sum_duplicates()
    if aggregate == "sum":
        return links
    if aggregate != "mean":
        raise ValueError("aggregate must be 'mean' or 'sum'")
    total = np.asarray(links.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.where(total > 0, total, 1.0)) @ links)


class CooccurrenceRecommender(_PairScorer):
    """Item-to-item collaborative filtering (item kNN with cosine similarity, all neighbours), learned from the
    purchase logs before ``cutoff``.

    - Concepts (``level``): products (``"product"``) or product types (``"type"``). Default per task:
      ``DEFAULT_COOCCURRENCE_LEVEL`` (product for featured products and coupons, type for next_product_type).
    - X: household x concept, 1 if the household bought the concept before the cutoff (all households: the counts
      are label-free inputs, the same logs pre-training uses).
    - Co-occurrence C = B^T B with B = X (``unit="household"``, default: two concepts co-occur when one household
      buys both, which captures household make-up, e.g. baby food with diapers) or B = basket x concept
      (``unit="basket"``, type level only: bought in the same trip, i.e. complements).
    - Cosine similarity S[a, b] = C[a, b] / sqrt(C[a, a] C[b, b]) (the diagonal is 1).
    - score(u, i) = sum_c W[i, c] (X[u] S)[c]: the summed similarity between the user's pre-cutoff concepts and the
      item's concept(s), where W links items to concepts (``item_concept_links``: the product or type itself, a
      product's type, a coupon's products or product types; ``aggregate="sum"`` adds a coupon's concepts up,
      ``"mean"`` averages them). A product the user already buys (a coupon's) or a type it already buys (a
      featured product's, at the type level) adds its self-similarity 1.
      With B = X it is computed without the concept x concept matrix: X S = G (X D^-1/2), G = (X D^-1/2) X^T
      (households x households), so a call scores its unique users x unique items as one block product.

    Ties (users or items without any pre-cutoff concept score 0; at the type level, products of one type score
    the same for a user) are broken by the item's ``log_popularity`` and then by a crc32 hash of the item id
    (``tie_break=True``): the scores returned are then lexicographic ranks *within one call*, comparable only
    among the pairs of that call (``sampled_ranking_metrics`` and ``full_ranking_metrics`` always score a user's
    whole candidate list in one call). ``tie_break=False`` (or ``raw_scores``) gives the raw similarity sums.
    """

    def __init__(self, task: Task, tables: dict, cutoff: pd.Timestamp = CUTOFF, level: str | None = None,
                 unit: str = "household", aggregate: str = "sum", tie_break: bool = True,
                 max_block: int = 8_000_000):
        super().__init__(task)
        level = DEFAULT_COOCCURRENCE_LEVEL.get(task.name, "type") if level is None else level
        if unit not in ("household", "basket"):
            raise ValueError("unit must be 'household' or 'basket'")
        if unit == "basket" and level != "type":
            raise ValueError("unit='basket' is implemented at level='type' only")
        self.level, self.unit, self.tie_break, self.max_block = level, unit, tie_break, max_block
        households, self.concepts, lines = _purchase_concepts(tables, cutoff, level)
        hx = lines[["h", "c"]].drop_duplicates()
        x = sp.csr_matrix((np.ones(len(hx)), (hx["h"].to_numpy(), hx["c"].to_numpy())),
                          shape=(len(households), len(self.concepts)))
        self.aggregate = aggregate
        self.links = item_concept_links(task, tables, level, self.concepts, aggregate)   # items x concepts
        if unit == "household":
            n = np.asarray(x.sum(axis=0)).ravel()
            xn = sp.csr_matrix(x @ sp.diags(1.0 / np.sqrt(np.where(n > 0, n, 1.0))))
            self._left = (xn @ x.T).toarray()                                        # G: households x households
            self._right = sp.csc_matrix(xn @ self.links.T)                           # households x items
        else:
            if "basket_id" not in lines:
                raise KeyError("unit='basket' needs transactions.basket_id (use load_baseline_tables())")
            bx = lines[["basket_id", "c"]].drop_duplicates()
            bcode = pd.factorize(bx["basket_id"].to_numpy())[0]
            b = sp.csr_matrix((np.ones(len(bx)), (bcode, bx["c"].to_numpy())),
                              shape=(int(bcode.max()) + 1 if len(bcode) else 0, len(self.concepts)))
            cooc = (b.T @ b).toarray()
            norm = np.sqrt(np.diag(cooc))
            norm[norm == 0] = 1.0
            self._left = np.asarray(x @ (cooc / norm[:, None] / norm[None, :]))     # X S: households x types
            self._right = sp.csc_matrix(self.links.T)                                # types x items
        self._user_index = pd.Index(_uid(households))
        self._tie_keys = (_item_hash_fraction(self.item_ids),
                          task.items["log_popularity"].to_numpy(dtype=np.float64))
        self._moments: dict = {}          # user -> (mean, std) of its raw scores over all items (user_moments)
        self._right_t = None

    def raw_scores(self, users, items) -> np.ndarray:
        """The similarity sums, without tie-breaking (0 for users or items without a pre-cutoff concept)."""
        u_codes, u_unique = pd.factorize(np.asarray(users, dtype=object))
        i_codes, i_unique = pd.factorize(self._item_positions(items))
        u_pos = self._user_index.get_indexer(pd.Index(u_unique, dtype=object))   # -1: no pre-cutoff purchase
        known = u_pos >= 0
        block = np.zeros((len(u_unique), len(i_unique)))
        right = self._right[:, i_unique]
        rows = np.flatnonzero(known)
        step = max(1, self.max_block // max(1, len(i_unique)))
        for a in range(0, len(rows), step):
            r = rows[a:a + step]
            block[r] = np.asarray((right.T @ self._left[u_pos[r]].T).T)
        return block[u_codes, i_codes]

    def user_moments(self, users) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each user's raw scores over all the task's items (both 0 for users without
        a pre-cutoff concept); computed once per user and cached. Used to standardise per user (``HybridRecommender``)
        independently of which pairs a call holds."""
        users = np.asarray(users, dtype=object)
        cache = self._moments
        missing = [u for u in dict.fromkeys(users.tolist()) if u not in cache]
        pos = self._user_index.get_indexer(pd.Index(missing, dtype=object))
        cache.update({u: (0.0, 0.0) for u, p in zip(missing, pos) if p < 0})
        known = [(u, p) for u, p in zip(missing, pos) if p >= 0]
        step = max(1, self.max_block // max(1, len(self.item_ids)))
        if self._right_t is None and known:
            self._right_t = sp.csr_matrix(self._right.T)                          # items x K
        for a in range(0, len(known), step):
            chunk = known[a:a + step]
            block = np.asarray(self._right_t @ self._left[[p for _, p in chunk]].T).T   # (b, items)
            cache.update({u: (float(m), float(sd)) for (u, _), m, sd in zip(chunk, block.mean(1), block.std(1))})
        moments = np.array([cache[u] for u in users.tolist()], dtype=np.float64).reshape(-1, 2)
        return moments[:, 0], moments[:, 1]

    def score_pairs(self, users, items) -> np.ndarray:
        raw = self.raw_scores(users, items)
        if not self.tie_break or len(raw) == 0:
            return raw
        i = self._item_positions(items)
        hash_frac, pop = self._tie_keys
        order = np.lexsort((hash_frac[i], pop[i], raw))
        keys = np.stack([raw[order], pop[i][order], hash_frac[i][order]])
        new = np.r_[True, (keys[:, 1:] != keys[:, :-1]).any(axis=0)]
        ranks = np.empty(len(raw))
        ranks[order] = np.cumsum(new) - 1.0
        return ranks


class TrainLabelPopularityRecommender(_PairScorer):
    """score(u, i) = log1p(the number of the training users' label-window instances of item i): popularity among the
    positives the neural models train on (the same for every user). Label-aware, unlike ``PopularityRecommender``
    (pre-cutoff purchases); only ``train_users``' instances count, so validation and test labels stay unseen.

    Ties (most items have no training instance) are broken by the pre-cutoff ``log_popularity`` and then by a crc32
    hash of the item id (``tie_break=True``): the score is the rank of (train count, log_popularity, hash), fixed
    per item and comparable across calls. ``tie_break=False`` returns the raw ``log_train_popularity``.
    """

    def __init__(self, task: Task, train_users, tie_break: bool = True):
        super().__init__(task)
        instances = task.instances[task.instances["user_id"].isin(set(train_users))]
        counts = instances.groupby("item_id").size().reindex(pd.Index(self.item_ids, dtype=object), fill_value=0)
        self.num_train_instances = int(len(instances))
        self.train_counts = counts.to_numpy(dtype=np.int64)                            # (I,)
        self.log_train_popularity = np.log1p(self.train_counts.astype(np.float64))     # (I,)
        self.tie_rank = _lexicographic_rank(self.log_train_popularity,
                                            task.items["log_popularity"].to_numpy(dtype=np.float64),
                                            _item_hash_fraction(self.item_ids))       # (I,)
        self.item_scores = self.tie_rank if tie_break else self.log_train_popularity

    def score_pairs(self, users, items) -> np.ndarray:
        return self.item_scores[self._item_positions(items)]
