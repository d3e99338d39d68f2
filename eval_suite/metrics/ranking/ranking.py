"""Top-k ranking metrics for item recommendation: HR@k, NDCG@k and MRR (a local, offline `evaluate` metric)."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Ranking metrics for item recommendation with one relevant item per instance, as in ShopperBERT (One4all User
Representation, section 4.2.4): each instance is one ground-truth (positive) item scored against its own list of
negative candidates: 100 randomly sampled items in the sampled protocol, or every other candidate of the task in
full ranking. The same module serves both; lists may differ in length between instances.

Rank of the positive (0-based), with the CONSERVATIVE tie rule:
    rank = #(negatives with score > positive score) + #(negatives with score == positive score)
         = #(negatives with score >= positive score)
so a tie never favours the positive: a model that scores every item the same gets the worst rank, not the best.
(The optimistic rule would count only strictly higher negatives; the "average" rule would add half the ties.)

Per-instance values, averaged over the n instances:
    HR@k   = 1 if rank < k else 0                      (hit ratio: the positive is in the top k)
    NDCG@k = 1 / log2(rank + 2) if rank < k else 0     (one relevant item, so the ideal DCG is 1)
    MRR    = 1 / (rank + 1)                            (not cut off at k)

Computation is vectorised over all negatives at once (flattened with per-instance offsets, processed in blocks of
about 4M scores to bound memory): no Python loop per negative. Scores are stored as float64, so nearby model scores
are not merged into artificial ties. NaN scores are rejected; +-inf are allowed.
"""

_KWARGS_DESCRIPTION = """
Args:
    positive_score (`list` of `float`): the score of the ground-truth item, one per instance.
    negative_scores (`list` of `list` of `float`): the scores of that instance's negative candidates (the positive
        itself excluded); the lists may have different lengths, and an empty list gives rank 0.
    k (`int` or `list` of `int`, *optional*, defaults to 10): the cut-off(s) of HR@k and NDCG@k; pass a list such
        as `[5, 10, 20]` for several cut-offs in one pass. Keys carry the actual k.

Returns (for k=10):
    hr@10 (`float`): mean over instances of [rank < 10].
    ndcg@10 (`float`): mean over instances of 1/log2(rank + 2) if rank < 10 else 0.
    mrr (`float`): mean over instances of 1/(rank + 1).
    num_instances (`int`): n, the number of instances.

Raises:
    ValueError: empty input, `positive_score` and `negative_scores` of different lengths, NaN scores, or a k that
        is not a positive integer.

Example:
    >>> from eval_suite.metrics import load_metric
    >>> ranking = load_metric("ranking")
    >>> ranking.compute(positive_score=[0.9, 0.5], negative_scores=[[0.1, 0.2], [0.7, 0.6, 0.5, 0.1]], k=2)
    {'hr@2': 0.5, 'ndcg@2': 0.5, 'mrr': 0.625, 'num_instances': 2}
"""

_CITATION = """
@article{shin2021one4all,
  title={One4all User Representation for Recommender Systems in E-commerce},
  author={Shin, Kyuyong and Kwak, Hanock and Kim, Kyung-Min and Kim, Minkyu and Park, Young-Jin and Jeong, Jisu and
          Jung, Seungjae},
  journal={arXiv preprint arXiv:2106.00573},
  year={2021}
}
@inproceedings{he2017neural,
  title={Neural Collaborative Filtering},
  author={He, Xiangnan and Liao, Lizi and Zhang, Hanwang and Nie, Liqiang and Hu, Xia and Chua, Tat-Seng},
  booktitle={Proceedings of the 26th International Conference on World Wide Web},
  pages={173--182},
  year={2017}
}
"""

# Scores compared per block: bounds the temporary arrays to a few tens of MB whatever the candidate count.
_BLOCK_SCORES = 1 << 22


def _as_ks(k):
    ks = [k] if np.isscalar(k) else list(k)
    if not ks:
        raise ValueError("ranking: k must be a positive integer or a non-empty list of them")
    for value in ks:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"ranking: k must be a positive integer (or a list of them), got {value!r}")
    return sorted({int(value) for value in ks})


def _as_float64(values):
    """A 1-D float64 numpy array from a list, a numpy array or a (chunked) Arrow array (nulls become NaN)."""
    if hasattr(values, "combine_chunks"):  # pyarrow.ChunkedArray (the "arrow" format)
        values = values.combine_chunks()
    if hasattr(values, "to_numpy") and hasattr(values, "null_count"):  # pyarrow.Array
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _flatten(negative_scores):
    """(flat float64 scores, int64 lengths) of the ragged negatives, without a Python loop per negative."""
    if hasattr(negative_scores, "combine_chunks"):  # pyarrow.ChunkedArray of lists (the "arrow" format)
        negative_scores = negative_scores.combine_chunks()
    if hasattr(negative_scores, "value_lengths") and hasattr(negative_scores, "flatten"):  # pyarrow list array
        lengths = negative_scores.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        return _as_float64(negative_scores.flatten()), np.asarray(lengths, dtype=np.int64)
    if isinstance(negative_scores, np.ndarray) and negative_scores.dtype != object:
        if negative_scores.ndim != 2:
            raise ValueError(
                f"ranking: negative_scores must be 2-D or a list of lists, got shape {negative_scores.shape}"
            )
        lengths = np.full(negative_scores.shape[0], negative_scores.shape[1], dtype=np.int64)
        return negative_scores.astype(np.float64, copy=False).reshape(-1), lengths
    rows = [np.asarray(row, dtype=np.float64).reshape(-1) for row in negative_scores]
    lengths = np.fromiter((row.size for row in rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.float64)
    return flat, lengths


def _conservative_ranks(positive, flat, lengths):
    """rank[i] = #(negatives of i with score >= positive[i]), computed block by block over the flat scores."""
    n = positive.size
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ranks = np.zeros(n, dtype=np.int64)
    start = 0
    while start < n:
        # The largest end with at most _BLOCK_SCORES scores in [start, end), at least one instance.
        end = int(np.searchsorted(offsets, offsets[start] + _BLOCK_SCORES, side="right")) - 1
        end = min(n, max(start + 1, end))
        scores = flat[offsets[start] : offsets[end]]
        at_or_above = scores >= np.repeat(positive[start:end], lengths[start:end])
        counts = np.zeros(at_or_above.size + 1, dtype=np.int64)
        np.cumsum(at_or_above, out=counts[1:])
        local = offsets[start : end + 1] - offsets[start]
        ranks[start:end] = counts[local[1:]] - counts[local[:-1]]
        start = end
    return ranks


class Ranking(evaluate.Metric):
    def _info(self):
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "positive_score": datasets.Value("float64"),
                    "negative_scores": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2106.00573", "https://arxiv.org/abs/1708.05031"],
        )
        # Hand the stored inputs to _compute as Arrow arrays (zero-copy float64 flat scores + list lengths) instead
        # of Python lists: 10M scores convert in ~0.05 s instead of ~3 s. Not "numpy": the datasets numpy formatter
        # casts float64 to float32, which would merge nearby scores into ties. MetricInfo refuses any format at
        # construction when a feature is a Sequence, hence the assignment after it; _compute accepts lists of lists
        # and numpy arrays as well, so this is only a speed-up.
        info.format = "arrow"
        return info

    def compute(self, **kwargs):
        """Compute the metric over the batches added with `add_batch` plus any inputs passed here."""
        # evaluate 0.4.6 fails with "AttributeError: 'NoneType' object has no attribute 'getvalue'" (in memory) when
        # nothing was ever added: say what is wrong instead.
        if self.writer is None and all(kwargs.get(key) is None for key in self._feature_names()):
            raise ValueError(
                "ranking: no instances to evaluate: call add_batch(...) before compute(), "
                "or pass the inputs to compute()"
            )
        return super().compute(**kwargs)

    def _compute(self, positive_score, negative_scores, k=10):
        ks = _as_ks(k)
        positive = _as_float64(positive_score)
        n = positive.size
        if len(negative_scores) != n:
            raise ValueError(
                f"ranking: positive_score ({n}) and negative_scores ({len(negative_scores)}) differ in length"
            )
        if n == 0:
            raise ValueError("ranking: no instances to evaluate (empty positive_score and negative_scores)")
        flat, lengths = _flatten(negative_scores)
        if np.isnan(positive).any():
            raise ValueError(f"ranking: positive_score holds {int(np.isnan(positive).sum())} NaN value(s)")
        if np.isnan(flat).any():
            raise ValueError(f"ranking: negative_scores hold {int(np.isnan(flat).sum())} NaN value(s)")

        ranks = _conservative_ranks(positive, flat, lengths)
        gains = 1.0 / np.log2(ranks + 2.0)
        results = {}
        for cutoff in ks:
            hit = ranks < cutoff
            results[f"hr@{cutoff}"] = float(np.mean(hit))
            results[f"ndcg@{cutoff}"] = float(np.mean(np.where(hit, gains, 0.0)))
        results["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
        results["num_instances"] = int(n)
        return results
