"""Classical baselines a practitioner would try first, on the six Complete Journey tasks (``eval_suite.tasks``).

- Classification (tasks 1-3): logistic regression on TF-IDF of the *product types* (``product_type``, not the
  coarser product categories) a household bought plus recency / frequency / monetary features ("LogReg TF-IDF+RFM"),
  and on the four RFM features alone ("LogReg RFM") (``user_purchase_features``, ``LogisticRegressionBaseline``,
  ``run_logistic_regression(feature_set=...)``).
- Recommendation (tasks 4-6), label-free: popularity before the cutoff (``PopularityRecommender``, "Popularity")
  and item-to-item co-occurrence of products or product types (``CooccurrenceRecommender``, "Co-occurrence").
- Recommendation, label-aware (they see the same training labels as the neural models, issue 10): popularity among
  the training users' label-window instances (``TrainLabelPopularityRecommender``, "Popularity (train labels)") and
  a blend of it with co-occurrence whose weight is chosen on validation (``HybridRecommender``, "Hybrid"); built by
  ``label_aware_recommender``.
- All recommenders are evaluated by ``run_recommendation_baseline`` (or ``eval_suite.run``) on the fixed negatives.
  The popularity and co-occurrence recommenders live in ``eval_suite.recommenders`` (re-exported here); what a
  task's items link to for co-occurrence is the task file's ``SPEC.cooccurrence_link`` (``eval_suite/tasks/``).

Every result carries its validation metric, computed on the validation users of the same split exactly as the
neural models' (``val_auroc``; ``val_mrr``: the sampled MRR over ``validation_instances`` with the fixed
negatives), so that "the best classical baseline" of a task can be chosen on validation, never on test.

Time protocol: every input comes from data strictly before ``cutoff`` (default ``CUTOFF``). The unsupervised
statistics (IDF weights, the standardisation of the RFM features, the co-occurrence counts) are computed over the
pre-cutoff logs of ALL households, test users included. These are inputs, never labels (the same logs the
pre-training of ShopperBERT sees), so this is not leakage; only the logistic-regression weights, C and the decision
threshold are fitted, on train and validation users. The label-aware recommenders count the training users' labels
(the same positives the neural models train on) and choose their one weight on validation users.

The RFM features need two transaction columns that ``tasks.load_raw_tables`` does not read (``basket_id``,
``sales_value``): load the tables with ``load_baseline_tables()`` (the same tables plus these columns; the task
builders accept them unchanged).

Command line (all six tasks, seeds 0-2, JSON to stdout or ``--out``)::

    python -m eval_suite.baselines --seeds 0 1 2 --negatives-root results/negatives --out results/baselines.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_prep.json_files import write_json

from .evaluation import (
    auroc,
    classification_metrics,
    full_ranking_metrics,
    instances_of,
    sampled_ranking_metrics,
)
from .tasks import (
    CUTOFF,
    RAW_COLUMNS,
    TASK_KINDS,
    TASK_NAMES,
    Task,
    build_task,
    cold_heavy_users,
    fixed_negatives,
    load_raw_tables,
    split_users,
)
from .recommenders import (
    DEFAULT_COOCCURRENCE_LEVEL,
    CooccurrenceRecommender,
    PopularityRecommender,
    TrainLabelPopularityRecommender,
    _PairScorer,
    _pre_cutoff_lines,
    _uid,
    item_concept_links,
)
from .tasks.building import product_attribute as _product_attribute
from .tasks.tables import require_columns as _require

#: Transaction columns the baselines need on top of ``RAW_COLUMNS["transactions"]``.
EXTRA_TRANSACTION_COLUMNS = ("basket_id", "sales_value")
#: Raw tables the baselines read (features: transactions + products; co-occurrence links: coupons too).
BASELINE_TABLES = ("transactions", "products", "coupons")
#: Default TF-IDF vocabulary levels (see ``user_purchase_features``).
DEFAULT_LEVELS = ("product_type",)
LEVEL_COLUMNS = {"product_type": "product_type", "category": "product_category", "department": "department"}
RFM_FEATURES = ("recency_days", "frequency_baskets", "monetary_sales", "distinct_products")
C_GRID = (0.01, 0.1, 1.0, 10.0)
#: Feature sets of the logistic regression: the column-name prefix they keep (None: all columns).
FEATURE_SETS = {"tfidf+rfm": None, "rfm": "rfm:"}
RECOMMENDERS = ("popularity", "cooccurrence")
#: Recommenders that read the training users' labels (``label_aware_recommender``).
LABEL_AWARE_RECOMMENDERS = ("popularity_train", "hybrid")
#: Weights a of the hybrid score a * z(train popularity) + (1 - a) * z(co-occurrence), chosen on validation.
HYBRID_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Validation instances of a recommendation task that model selection scores (a fixed subset keeps it cheap).
MAX_VALIDATION_INSTANCES = 3000


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def load_baseline_tables(data_dir=None, tables: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """``tasks.load_raw_tables`` plus ``basket_id`` and ``sales_value`` in ``transactions`` (for the RFM features).

    ``tables`` defaults to every raw table (enough to build all six tasks and every baseline)."""
    from data_prep.sources import read_completejourney_table

    names = list(RAW_COLUMNS) if tables is None else list(tables)
    out = load_raw_tables(data_dir, tables=[n for n in names if n != "transactions"])
    if "transactions" in names:
        cols = list(RAW_COLUMNS["transactions"]) + list(EXTRA_TRANSACTION_COLUMNS)
        out["transactions"] = read_completejourney_table("transactions", cols, data_dir=data_dir)
    return {n: out[n] for n in names}


def with_baseline_columns(tables: dict, data_dir=None) -> dict:
    """Tables as read by ``tasks.load_raw_tables`` -> the same dict with what the features need added: ``basket_id``
    and ``sales_value`` joined onto ``transactions`` and the ``products`` table, read from the Complete Journey
    files. The row order of ``transactions`` is checked against the file (household and product per row), so
    hand-made tables are returned unchanged (``user_purchase_features`` then raises a clear KeyError)."""
    from data_prep.schema import DataPrepError
    from data_prep.sources import read_completejourney_table

    tx = tables.get("transactions")
    out = dict(tables)
    try:
        if tx is not None and not all(c in tx.columns for c in EXTRA_TRANSACTION_COLUMNS):
            extra = read_completejourney_table("transactions", ["household_id", "product_id",
                                                                *EXTRA_TRANSACTION_COLUMNS], data_dir=data_dir)
            if len(extra) == len(tx) and np.array_equal(extra["household_id"].to_numpy(),
                                                        tx["household_id"].to_numpy()) \
                    and np.array_equal(extra["product_id"].to_numpy(), tx["product_id"].to_numpy()):
                out["transactions"] = tx.assign(**{c: extra[c].to_numpy() for c in EXTRA_TRANSACTION_COLUMNS})
        if "products" not in out:
            out["products"] = read_completejourney_table("products", RAW_COLUMNS["products"], data_dir=data_dir)
    except (ImportError, OSError, DataPrepError):
        return dict(tables)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 1. User features: TF-IDF of product types (not categories) + RFM
# ---------------------------------------------------------------------------------------------------------------
class PurchaseFeatures(NamedTuple):
    """What ``user_purchase_features`` returns; unpacks as ``user_ids, matrix, feature_names``."""
    user_ids: np.ndarray          # str household ids, sorted by household id
    matrix: sp.csr_matrix         # one row per user
    feature_names: np.ndarray

    def rows(self, user_ids) -> sp.csr_matrix:
        """The feature rows of the given users (raises KeyError on users without a pre-cutoff purchase)."""
        pos = pd.Index(self.user_ids).get_indexer(pd.Index(np.asarray(list(user_ids), dtype=object)))
        if (pos < 0).any():
            raise KeyError(f"{int((pos < 0).sum())} users have no purchase before the cutoff (no features)")
        return self.matrix[pos]

    def select(self, prefix: str | None) -> "PurchaseFeatures":
        """The columns whose name starts with ``prefix`` (e.g. ``"rfm:"``); all of them for None."""
        if prefix is None:
            return self
        keep = np.flatnonzero([str(n).startswith(prefix) for n in self.feature_names])
        return PurchaseFeatures(self.user_ids, sp.csr_matrix(self.matrix[:, keep]), self.feature_names[keep])


def rfm_table(tables: dict, cutoff: pd.Timestamp = CUTOFF) -> pd.DataFrame:
    """Raw recency / frequency / monetary values per household from purchase lines strictly before ``cutoff``.

    Index: ``household_id`` (sorted). Columns:
    - ``recency_days``: days (fractional) from the last purchase to ``cutoff``;
    - ``frequency_baskets``: number of distinct baskets;
    - ``monetary_sales``: total ``sales_value``;
    - ``distinct_products``: number of distinct products.
    """
    pre = _pre_cutoff_lines(tables, cutoff, ["household_id", "basket_id", "product_id", "sales_value"])
    g = pre.groupby("household_id", sort=True)
    out = pd.DataFrame({
        "recency_days": (cutoff - g["transaction_timestamp"].max()) / pd.Timedelta(days=1),
        "frequency_baskets": g["basket_id"].nunique(),
        "monetary_sales": g["sales_value"].sum(),
        "distinct_products": g["product_id"].nunique(),
    })
    return out.astype(np.float64)


def user_purchase_features(tables: dict, cutoff: pd.Timestamp = CUTOFF,
                           levels: Sequence[str] = DEFAULT_LEVELS) -> PurchaseFeatures:
    """Per household with a purchase before ``cutoff``: TF-IDF of what it bought, hstacked with 4 RFM features.

    TF-IDF block (one per entry of ``levels``; default ``("product_type",)``): the term count is the number of
    distinct baskets in which the household bought the term (robust to quantity and to several lines of one
    trip), weighted by sklearn's ``TfidfTransformer(sublinear_tf=True)`` (tf -> 1 + log tf, smooth idf, rows
    L2-normalised). Lines of products missing from the product table (or without the level) are left out here but
    count in the RFM features.

    Why product types (2,378 raw names, 2,158 bought before the cutoff; merged by stripped name, as
    ``next_product_type`` does): they are the finest level that is still shared across brands and pack sizes, and
    they carry the signals the tasks turn on (baby food and diapers for ``kids``; vitamins or diet drinks next to
    NUTRITION). The 303 categories and 32 departments are coarser summaries of the same purchases; they are
    supported (``levels=("category", "department")``, or all three) and were compared on *validation* AUROC
    (seeds 0-4, mean of the selected model): types 0.699 / 0.649 / 0.637 (kids / coupon / nutrition targeting),
    category + department 0.653 / 0.649 / 0.642, all three 0.680 / 0.654 / 0.646. Types win clearly on ``kids``
    and are within noise on the targeting tasks, so the single, finest vocabulary is the default. With about
    600-800 training users the regularisation strength C (chosen on validation) controls the 2k-dimensional
    block.

    RFM block (names ``rfm:log1p_<name>``): ``rfm_table``'s four values, log1p-transformed (all four are heavily
    right-skewed: a few households have thousands of baskets) and standardised to mean 0 / std 1 over the
    households.

    IDF and standardisation statistics come from the pre-cutoff logs of all households (label-free inputs).
    Only purchase lines strictly before ``cutoff`` are read. Returns ``PurchaseFeatures(user_ids, matrix,
    feature_names)``.
    """
    from sklearn.feature_extraction.text import TfidfTransformer

    products = _require(tables, "products", ["product_id"] + [LEVEL_COLUMNS[lv] for lv in levels])
    rfm = rfm_table(tables, cutoff)
    households = rfm.index.to_numpy(dtype=np.int64)
    pre = _pre_cutoff_lines(tables, cutoff, ["household_id", "basket_id", "product_id"])
    hh_pos = pd.Index(households).get_indexer(pre["household_id"].to_numpy())
    blocks, names = [], []
    for level in levels:
        if level not in LEVEL_COLUMNS:
            raise ValueError(f"unknown level {level!r}; choose from {tuple(LEVEL_COLUMNS)}")
        term = _product_attribute(products, pre["product_id"].to_numpy(), LEVEL_COLUMNS[level])
        known = pd.notna(term)
        codes, vocab = pd.factorize(pd.Series(term[known], dtype=object), sort=True)
        lines = pd.DataFrame({"h": hh_pos[known], "t": codes, "b": pre["basket_id"].to_numpy()[known]})
        lines = lines.drop_duplicates()
        counts = sp.csr_matrix((np.ones(len(lines)), (lines["h"].to_numpy(), lines["t"].to_numpy())),
                               shape=(len(households), len(vocab)))
        counts.sum_duplicates()
        blocks.append(TfidfTransformer(sublinear_tf=True).fit_transform(counts))
        names.extend(f"{level}:{v}" for v in vocab)
    logged = np.log1p(rfm[list(RFM_FEATURES)].to_numpy())
    std = logged.std(axis=0)
    scaled = (logged - logged.mean(axis=0)) / np.where(std > 0, std, 1.0)
    blocks.append(sp.csr_matrix(scaled))
    names.extend(f"rfm:log1p_{n}" for n in RFM_FEATURES)
    matrix = sp.hstack(blocks, format="csr", dtype=np.float64)
    return PurchaseFeatures(_uid(households), matrix, np.asarray(names, dtype=object))


# ---------------------------------------------------------------------------------------------------------------
# 2. Logistic regression for tasks 1-3
# ---------------------------------------------------------------------------------------------------------------
class LogisticRegressionBaseline:
    """L2 logistic regression on ``PurchaseFeatures``; C chosen from ``c_grid`` by validation AUROC.

    ``class_weight="balanced"`` by default: two of the three tasks have ~13% positives; weighting the classes
    equally keeps the effective regularisation comparable across tasks with different positive rates and stops the
    fit from settling on the majority class when C is small. AUROC is insensitive to the probability scale and the
    F1/accuracy threshold is chosen on validation (``evaluation.classification_metrics``), so the shift of the
    predicted probabilities that balancing causes does not matter (on validation, seeds 0-4, balanced and
    unweighted were within 0.003 AUROC on all three tasks, so the choice is not tuned). The model is fitted on
    train users only (the validation scores feed the threshold choice, so validation users must stay out of the
    fit). Ties in validation AUROC go to the smaller C (stronger regularisation). The test split is never seen by
    ``fit``.
    """

    def __init__(self, features: PurchaseFeatures, c_grid: Sequence[float] = C_GRID,
                 class_weight: str | None = "balanced", max_iter: int = 5000):
        self.features = features
        self.c_grid = tuple(float(c) for c in c_grid)
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.model = None
        self.best_C: float | None = None
        self.validation_auroc: dict[float, float] = {}

    def _new_model(self, c: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, class_weight=self.class_weight, solver="lbfgs", max_iter=self.max_iter)

    def fit(self, train_ids, train_labels, val_ids, val_labels) -> "LogisticRegressionBaseline":
        x_train, y_train = self.features.rows(train_ids), np.asarray(train_labels, dtype=np.int64)
        x_val, y_val = self.features.rows(val_ids), np.asarray(val_labels, dtype=np.int64)
        self.validation_auroc, best = {}, None
        for c in sorted(self.c_grid):
            model = self._new_model(c).fit(x_train, y_train)
            score = auroc(model.decision_function(x_val), y_val)
            self.validation_auroc[c] = float(score)
            if best is None or score > best[0]:       # strict: ties keep the smaller C
                best = (score, c, model)
        _, self.best_C, self.model = best
        return self

    def scores(self, user_ids) -> np.ndarray:
        """The log-odds of label 1 for each user (``decision_function``): monotone in the probability, so AUROC and
        the validation-chosen threshold are the same as with probabilities, but no saturation at 0 / 1 in float64
        (saturated probabilities would create ties). ``predict_proba`` gives the probabilities."""
        if self.model is None:
            raise RuntimeError("call fit() first")
        return self.model.decision_function(self.features.rows(user_ids))

    def predict_proba(self, user_ids) -> np.ndarray:
        """P(label = 1) for each user."""
        if self.model is None:
            raise RuntimeError("call fit() first")
        return self.model.predict_proba(self.features.rows(user_ids))[:, 1]


_FEATURE_CACHE: list = []   # [(transactions object, features)]: one entry, reused across tasks and seeds


def _cached_features(tables: dict) -> PurchaseFeatures:
    """``user_purchase_features`` of these tables (default levels and cutoff), computed once per transactions
    object; tables from ``tasks.load_raw_tables`` are completed with ``with_baseline_columns`` first."""
    tx = tables.get("transactions")
    if _FEATURE_CACHE and _FEATURE_CACHE[0][0] is tx and tx is not None:
        return _FEATURE_CACHE[0][1]
    features = user_purchase_features(with_baseline_columns(tables))
    _FEATURE_CACHE[:] = [(tx, features)]
    return features


def run_logistic_regression(task: Task, tables_or_features, seed: int, c_grid: Sequence[float] = C_GRID,
                            class_weight: str | None = "balanced", feature_set: str = "tfidf+rfm") -> dict:
    """Split ``task``'s users with ``split_users(task, seed)``, fit on train, choose C on validation, report
    ``classification_metrics`` on test (AUROC; F1 and accuracy at the validation-chosen threshold, in log-odds
    units) plus the chosen hyperparameters and ``val_auroc`` (the validation AUROC of the chosen C: what a report
    compares across baselines). ``tables_or_features``: ``PurchaseFeatures`` (reuse it across tasks and
    seeds) or the raw tables (``load_baseline_tables()``, or ``tasks.load_raw_tables()``: the missing columns are
    then read from the Complete Journey files, see ``with_baseline_columns``; features are cached per
    transactions table). ``feature_set``: ``"tfidf+rfm"`` (TF-IDF of product types + RFM, "LogReg TF-IDF+RFM") or
    ``"rfm"`` (the four RFM features only, "LogReg RFM"); see ``FEATURE_SETS``."""
    if task.kind != "classification":
        raise ValueError(f"task {task.name!r} is not a classification task")
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature_set {feature_set!r}; choose from {tuple(FEATURE_SETS)}")
    start = time.perf_counter()
    features = tables_or_features if isinstance(tables_or_features, PurchaseFeatures) \
        else _cached_features(tables_or_features)
    features = features.select(FEATURE_SETS[feature_set])
    labels = task.users.set_index("user_id")["label"]
    split = split_users(task, seed)
    y = {k: labels.loc[list(v)].to_numpy() for k, v in split.items()}
    model = LogisticRegressionBaseline(features, c_grid, class_weight)
    model.fit(split["train"], y["train"], split["validation"], y["validation"])
    metrics = classification_metrics(model.scores(split["validation"]), y["validation"],
                                     model.scores(split["test"]), y["test"])
    return {"task": task.name, "model": "logistic_regression", "features": feature_set, "seed": int(seed),
            **metrics, "best_C": model.best_C, "class_weight": class_weight,
            "val_auroc": model.validation_auroc[model.best_C],
            "validation_auroc": model.validation_auroc[model.best_C],
            "validation_auroc_by_C": {str(c): v for c, v in model.validation_auroc.items()},
            "num_features": int(features.matrix.shape[1]),
            "num_train": len(split["train"]), "num_validation": len(split["validation"]),
            "num_test": len(split["test"]), "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------------------------
# 3-4. Recommenders for tasks 4-6 (the label-free ones and the train-label popularity: eval_suite.recommenders)
# ---------------------------------------------------------------------------------------------------------------
class HybridRecommender(_PairScorer):
    """score(u, i) = a * z_pop(i) + (1 - a) * z_cooc(u, i), a in [0, 1] (``weight``), chosen on validation users by
    ``select_weight``.

    - z_pop: ``TrainLabelPopularityRecommender.log_train_popularity`` standardised over the task's items.
    - z_cooc: the raw co-occurrence score (``CooccurrenceRecommender.raw_scores``) standardised per user over all the
      task's items (``user_moments``; 0 for users without a pre-cutoff purchase), so that one weight suits light and
      heavy shoppers alike and a score does not depend on the other pairs of a call.
    - Remaining ties are broken by the train-popularity rank (train count, pre-cutoff popularity, item hash), scaled
      into [0, 1e-9).
    a = 1 ranks exactly like "Popularity (train labels)"; a = 0 like co-occurrence (with other tie-breaks).
    """

    TIE_SCALE = 1e-9

    def __init__(self, popularity: TrainLabelPopularityRecommender, cooccurrence: CooccurrenceRecommender,
                 weight: float = 0.5):
        super().__init__(popularity.task)
        if cooccurrence.task is not popularity.task:
            raise ValueError("the two recommenders of a hybrid must belong to the same task")
        self.popularity, self.cooccurrence, self.weight = popularity, cooccurrence, float(weight)
        pop = popularity.log_train_popularity
        sd = pop.std()
        self.z_popularity = (pop - pop.mean()) / (sd if sd > 0 else 1.0)                # (I,)
        self._tie = popularity.tie_rank / max(1, len(pop)) * self.TIE_SCALE             # (I,)
        self._memo = None

    def components(self, users, items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z_pop, z_cooc, tie-break) of aligned pairs; the last call's are kept (selection re-scores the same
        pairs for every weight)."""
        users, items = np.asarray(users, dtype=object), np.asarray(items, dtype=object)
        if self._memo is not None and np.array_equal(self._memo[0], users) and np.array_equal(self._memo[1], items):
            return self._memo[2]
        i = self._item_positions(items)
        raw = self.cooccurrence.raw_scores(users, items)
        mean, sd = self.cooccurrence.user_moments(users)
        z_cooc = np.where(sd > 0, (raw - mean) / np.where(sd > 0, sd, 1.0), 0.0)
        out = (self.z_popularity[i], z_cooc, self._tie[i])
        self._memo = (users, items, out)
        return out

    def score_pairs(self, users, items) -> np.ndarray:
        z_pop, z_cooc, tie = self.components(users, items)
        return self.weight * z_pop + (1.0 - self.weight) * z_cooc + tie

    def select_weight(self, val_ids, negatives: pd.DataFrame, weights: Sequence[float] = HYBRID_WEIGHTS
                      ) -> dict[str, float]:
        """Set ``weight`` to the one of ``weights`` with the best sampled validation MRR (``validation_mrr`` on
        ``val_ids``, the validation instances every model selects on; ties: the first in ``weights``). Returns the
        validation MRR per weight. Never reads a test instance."""
        by_weight: dict[str, float] = {}
        best = None
        for a in weights:
            self.weight = float(a)
            mrr = validation_mrr(self.task, val_ids, negatives, self.score_pairs)
            by_weight[str(float(a))] = mrr
            if best is None or mrr > best[0]:
                best = (mrr, float(a))
        if best is not None:
            self.weight = best[1]
        return by_weight


def validation_instances(task: Task, split: dict, seed: int, max_instances: int = MAX_VALIDATION_INSTANCES
                         ) -> np.ndarray:
    """The validation instance ids every recommendation model of this split and seed selects on: all the
    validation users' instances, or a fixed sorted subset of ``max_instances`` of them (``default_rng(seed)``)."""
    val_ids = instances_of(task, split["validation"])
    if len(val_ids) > max_instances:
        val_ids = np.sort(np.random.default_rng(seed).choice(val_ids, max_instances, replace=False))
    return val_ids


def validation_mrr(task: Task, val_ids, negatives: pd.DataFrame, score_pairs) -> float:
    """The sampled MRR of ``val_ids`` against their fixed negatives (NaN without validation instances)."""
    if len(val_ids) == 0:
        return float("nan")
    return float(sampled_ranking_metrics(task, val_ids, negatives, score_pairs)["mrr"])


def label_aware_recommender(name: str, task: Task, split: dict, negatives: pd.DataFrame, val_ids,
                            cooccurrence: CooccurrenceRecommender | None = None, tables: dict | None = None,
                            weights: Sequence[float] = HYBRID_WEIGHTS) -> tuple[_PairScorer, dict]:
    """A recommender that reads the training users' labels of ``split``: ``"popularity_train"``
    (``TrainLabelPopularityRecommender``) or ``"hybrid"`` (``HybridRecommender``, its weight chosen on ``val_ids``
    with ``negatives``; pass a prebuilt ``cooccurrence`` to reuse it across seeds, else ``tables`` builds one).
    Returns the recommender and what was fitted (to store beside its metrics)."""
    popularity = TrainLabelPopularityRecommender(task, split["train"])
    info = {"num_train_instances": popularity.num_train_instances}
    if name == "popularity_train":
        return popularity, info
    if name != "hybrid":
        raise ValueError(f"unknown label-aware recommender {name!r}; choose from {LABEL_AWARE_RECOMMENDERS}")
    if cooccurrence is None:
        if tables is None:
            raise ValueError("the hybrid needs a CooccurrenceRecommender or the tables to build one")
        cooccurrence = CooccurrenceRecommender(task, tables)
    hybrid = HybridRecommender(popularity, cooccurrence)
    by_weight = hybrid.select_weight(val_ids, negatives, weights)
    return hybrid, {**info, "weight": hybrid.weight, "val_mrr_by_weight": by_weight}


def make_recommender(name: str, task: Task, tables: dict, **kwargs) -> _PairScorer:
    if name == "popularity":
        return PopularityRecommender(task, **kwargs)
    if name == "cooccurrence":
        return CooccurrenceRecommender(task, tables, **kwargs)
    raise ValueError(f"unknown recommender {name!r}; choose from {RECOMMENDERS}")


def run_recommendation_baseline(name: str, task: Task, tables: dict, seed: int, negatives_root,
                                split: str = "test", recommender: _PairScorer | None = None,
                                cold_heavy: bool = True, cooccurrence: CooccurrenceRecommender | None = None,
                                **kwargs) -> dict:
    """Evaluate a recommender (``RECOMMENDERS`` or ``LABEL_AWARE_RECOMMENDERS``) on the ``split`` users of
    ``split_users(task, seed)`` (default test): sampled HR@10 / NDCG@10 / MRR against the fixed negatives
    (``fixed_negatives(task, seed, negatives_root)``), full-ranking ``full_*`` metrics, and with ``cold_heavy``
    the sampled metrics of the cold / heavy 10% (``cold_*``, ``heavy_*``, the paper's Table 6); ``val_mrr`` on the
    validation instances (``validation_instances``).

    ``"popularity"`` and ``"cooccurrence"`` fit nothing on train users: they are statistics of the pre-cutoff logs
    of all households; pass a prebuilt ``recommender`` to reuse it across seeds; ``kwargs`` go to its constructor.
    The label-aware ones are built per seed (``label_aware_recommender``; ``cooccurrence`` reuses one for the
    hybrid)."""
    start = time.perf_counter()
    splits = split_users(task, seed)
    negatives = fixed_negatives(task, seed, negatives_root)
    val_ids = validation_instances(task, splits, seed)
    info: dict = {}
    if recommender is not None:
        rec = recommender
    elif name in LABEL_AWARE_RECOMMENDERS:
        rec, info = label_aware_recommender(name, task, splits, negatives, val_ids, cooccurrence, tables)
    else:
        rec = make_recommender(name, task, tables, **kwargs)
    built = time.perf_counter()
    users = splits[split]
    ids = instances_of(task, users)
    out = {"task": task.name, "model": name, "seed": int(seed), "split": split,
           "num_users": int(len(users)), "num_instances": int(len(ids)), **info}
    out["val_mrr"] = validation_mrr(task, val_ids, negatives, rec.score_pairs)
    out.update(sampled_ranking_metrics(task, ids, negatives, rec.score_pairs))
    out.update(full_ranking_metrics(task, users, rec.score_pairs))
    if cold_heavy:
        cold, heavy = cold_heavy_users(task, users)
        for prefix, group in (("cold_", cold), ("heavy_", heavy)):
            out.update(sampled_ranking_metrics(task, instances_of(task, group), negatives, rec.score_pairs,
                                               prefix=prefix))
    out["build_seconds"] = built - start
    out["seconds"] = time.perf_counter() - start        # build + evaluation
    return out


# ---------------------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------------------
def run_all(seeds: Sequence[int] = (0,), negatives_root="results/negatives", tables: dict | None = None,
            names: Sequence[str] = TASK_NAMES) -> list[dict]:
    """Every baseline on every task and seed: LR on TF-IDF + RFM and on RFM alone on tasks 1-3; popularity,
    co-occurrence, train-label popularity and the hybrid on tasks 4-6."""
    tables = load_baseline_tables() if tables is None else tables
    results = []
    features = None
    for name in names:
        task = build_task(name, tables)
        if TASK_KINDS[name] == "classification":
            features = features if features is not None else user_purchase_features(tables)
            for feature_set in FEATURE_SETS:
                for s in seeds:
                    r = run_logistic_regression(task, features, s, feature_set=feature_set)
                    r["model"] = f"logistic_regression_{feature_set}"
                    results.append(r)
        else:
            cooccurrence = None
            for rec_name in RECOMMENDERS:
                start = time.perf_counter()
                rec = make_recommender(rec_name, task, tables)
                cooccurrence = rec if rec_name == "cooccurrence" else cooccurrence
                built = time.perf_counter() - start
                for s in seeds:
                    r = run_recommendation_baseline(rec_name, task, tables, s, negatives_root, recommender=rec)
                    r["build_seconds"] = built
                    results.append(r)
            for rec_name in LABEL_AWARE_RECOMMENDERS:
                results.extend(run_recommendation_baseline(rec_name, task, tables, s, negatives_root,
                                                           cooccurrence=cooccurrence) for s in seeds)
    return results


def summarize(results: list[dict]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the numeric metrics, per (task, model)."""
    df = pd.DataFrame(results)
    keep = [c for c in df.columns if c not in ("seed", "validation_auroc_by_C", "val_mrr_by_weight")
            and pd.api.types.is_numeric_dtype(df[c])]
    return df.groupby(["task", "model"], sort=False)[keep].agg(["mean", "std"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.add_argument("--negatives-root", default="results/negatives")
    parser.add_argument("--out", default=None, help="write the per-seed results as JSON here")
    args = parser.parse_args(argv)
    results = run_all(args.seeds, args.negatives_root, names=args.tasks)
    if args.out:
        write_json(args.out, results, indent=1)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(summarize(results).round(4).T.to_string())


if __name__ == "__main__":
    main()


__all__ = ["C_GRID", "CooccurrenceRecommender", "FEATURE_SETS", "HYBRID_WEIGHTS", "HybridRecommender",
           "LABEL_AWARE_RECOMMENDERS", "LogisticRegressionBaseline", "MAX_VALIDATION_INSTANCES",
           "PopularityRecommender", "PurchaseFeatures", "RECOMMENDERS", "TrainLabelPopularityRecommender",
           "RFM_FEATURES", "DEFAULT_LEVELS", "DEFAULT_COOCCURRENCE_LEVEL", "item_concept_links",
           "label_aware_recommender", "load_baseline_tables", "make_recommender", "rfm_table", "run_all",
           "run_logistic_regression", "run_recommendation_baseline", "summarize", "user_purchase_features",
           "validation_instances", "validation_mrr", "with_baseline_columns"]
