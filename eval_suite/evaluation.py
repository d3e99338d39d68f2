"""The evaluation protocol shared by every downstream model: thresholds, classification and ranking metrics.

Every number goes through the local `evaluate` modules of `eval_suite/metrics` (nothing loads from a hub).

A model is evaluated through callables:
- classification: scores for users (higher = more likely positive);
- recommendation: `score_pairs(user_ids, item_ids) -> np.ndarray` for aligned arrays of (user, item) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .metrics import load_metric
from .tasks import Task

ScorePairs = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------------
def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The decision threshold that maximises F1 on validation (ties: the higher threshold)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(scores) == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_pos = np.cumsum(sorted_labels)
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * true_pos / (predicted + labels.sum())
    # only cut between distinct scores: predicting positive for all scores >= sorted_scores[i]
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1 = np.where(last_of_value, f1, -1.0)
    best = int(np.argmax(f1))
    return float(sorted_scores[best])


def classification_metrics(val_scores, val_labels, test_scores, test_labels, prefix: str = "") -> dict[str, float]:
    """AUROC on test; F1 and accuracy on test at the threshold chosen on validation (maximum validation F1)."""
    threshold = choose_threshold(val_scores, val_labels)
    test_scores = np.asarray(test_scores, dtype=np.float64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    predictions = (test_scores >= threshold).astype(np.int64)
    auc = load_metric("roc_auc").compute(prediction_scores=test_scores, references=test_labels)["roc_auc"]
    f1 = load_metric("f1").compute(predictions=predictions, references=test_labels)["f1"]
    acc = load_metric("accuracy").compute(predictions=predictions, references=test_labels)["accuracy"]
    return {f"{prefix}auroc": auc, f"{prefix}f1": f1, f"{prefix}accuracy": acc, f"{prefix}threshold": threshold}


def auroc(scores, labels) -> float:
    """Validation AUROC (model selection); 0.5 when the labels hold one class."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() == labels.max():
        return 0.5
    return load_metric("roc_auc").compute(prediction_scores=np.asarray(scores, np.float64),
                                          references=labels)["roc_auc"]


# ---------------------------------------------------------------------------------------------------------------
# Recommendation
# ---------------------------------------------------------------------------------------------------------------
def sampled_ranking_metrics(task: Task, instance_ids: Sequence[int], negatives: pd.DataFrame,
                            score_pairs: ScorePairs, k: int = 10, prefix: str = "") -> dict[str, float]:
    """HR@k, NDCG@k and MRR of each positive among its fixed sampled negatives (the paper's 100)."""
    instances = task.instances.set_index("instance_id").loc[list(instance_ids)]
    negs = negatives.set_index("instance_id").loc[list(instance_ids), "item_ids"]
    users = instances["user_id"].to_numpy(dtype=object)
    counts = np.array([len(n) for n in negs], dtype=np.int64)
    pair_users = np.concatenate([users, np.repeat(users, counts)])
    pair_items = np.concatenate([instances["item_id"].to_numpy(dtype=object),
                                 np.concatenate([np.asarray(n, dtype=object) for n in negs]) if len(negs) else
                                 np.array([], dtype=object)])
    scores = np.asarray(score_pairs(pair_users, pair_items), dtype=np.float64)
    positive, negative = scores[: len(users)], scores[len(users):]
    offsets = np.r_[0, np.cumsum(counts)]
    negative_lists = [negative[offsets[i]:offsets[i + 1]] for i in range(len(users))]
    result = load_metric("ranking").compute(positive_score=positive, negative_scores=negative_lists, k=k)
    return {f"{prefix}{name}": value for name, value in result.items()}


def full_ranking_metrics(task: Task, user_ids: Sequence[str], score_pairs: ScorePairs, k: int = 10,
                         prefix: str = "full_", max_pairs: int = 2_000_000) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of each positive against the task's whole candidate pool (other positives of the same
    user and context left out): sampled metrics can mis-rank models, this one does not sample."""
    groups = list(task.iter_ranking_groups(user_ids))
    positives, negative_lists = [], []
    start = 0
    while start < len(groups):
        chunk, pairs = [], 0
        while start < len(groups) and (not chunk or pairs < max_pairs):
            group = groups[start]
            chunk.append(group)
            pairs += len(group.positive_item_ids) + len(group.pool_item_ids)
            start += 1
        users = np.concatenate([np.full(len(g.positive_item_ids) + len(g.pool_item_ids), g.user_id, dtype=object)
                                for g in chunk])
        items = np.concatenate([np.concatenate([g.positive_item_ids, g.pool_item_ids]).astype(object)
                                for g in chunk])
        scores = np.asarray(score_pairs(users, items), dtype=np.float64)
        offset = 0
        for g in chunk:
            n_pos, n_pool = len(g.positive_item_ids), len(g.pool_item_ids)
            pool_scores = scores[offset + n_pos: offset + n_pos + n_pool]
            for s in scores[offset: offset + n_pos]:
                positives.append(s)
                negative_lists.append(pool_scores)
            offset += n_pos + n_pool
    result = load_metric("ranking").compute(positive_score=np.asarray(positives), negative_scores=negative_lists,
                                            k=k)
    return {f"{prefix}{name}": value for name, value in result.items()}


def instances_of(task: Task, user_ids: Sequence[str]) -> np.ndarray:
    """Instance ids whose user is in `user_ids`."""
    mask = task.instances["user_id"].isin(set(user_ids))
    return task.instances.loc[mask, "instance_id"].to_numpy()


__all__ = [
    "auroc",
    "choose_threshold",
    "classification_metrics",
    "full_ranking_metrics",
    "instances_of",
    "sampled_ranking_metrics",
]
