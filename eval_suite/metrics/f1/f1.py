"""Binary F1 score with pos_label=1 (a local, offline `evaluate` metric)."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Binary F1 score of the positive class (label 1), the harmonic mean of precision and recall:
    precision = TP / (TP + FP),  recall = TP / (TP + FN)
    F1 = 2 * precision * recall / (precision + recall) = 2 TP / (2 TP + FP + FN)
It is one of the three binary-classification metrics of ShopperBERT (One4all User Representation, section 4.2.4).
Labels must be 0 or 1. When TP = 0 (in particular when there are no positive predictions, or no positive
references) F1 is 0.0, as scikit-learn's `f1_score(..., zero_division=0)` returns.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels, 0 or 1.
    references (`list` of `int`): ground-truth labels, 0 or 1, same length as `predictions`.

Returns:
    f1 (`float`): in [0, 1]; 2 TP / (2 TP + FP + FN), 0.0 when TP = 0.

Raises:
    ValueError: empty input, inputs of different lengths, or a label other than 0 and 1.

Example:
    >>> from eval_suite.metrics import load_metric
    >>> load_metric("f1").compute(predictions=[1, 1, 0, 0], references=[1, 0, 1, 0])
    {'f1': 0.5}
"""

_CITATION = """
@article{pedregosa2011scikit,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def compute(self, **kwargs):
        """Compute the metric over the batches added with `add_batch` plus any inputs passed here."""
        # evaluate 0.4.6 fails with "AttributeError: 'NoneType' object has no attribute 'getvalue'" (in memory) when
        # nothing was ever added: say what is wrong instead.
        if self.writer is None and all(kwargs.get(key) is None for key in self._feature_names()):
            raise ValueError(
                "f1: no instances to evaluate: call add_batch(...) before compute(), "
                "or pass the inputs to compute()"
            )
        return super().compute(**kwargs)

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
        references = np.asarray(references, dtype=np.int64).reshape(-1)
        if predictions.shape != references.shape:
            raise ValueError(
                f"f1: predictions ({predictions.size}) and references ({references.size}) differ in length"
            )
        if predictions.size == 0:
            raise ValueError("f1: no instances to evaluate (empty predictions and references)")
        for name, values in (("predictions", predictions), ("references", references)):
            bad = np.setdiff1d(np.unique(values), [0, 1])
            if bad.size:
                raise ValueError(f"f1: binary F1 needs labels 0 and 1, but {name} hold {bad.tolist()}")
        tp = int(np.sum((predictions == 1) & (references == 1)))
        fp = int(np.sum((predictions == 1) & (references == 0)))
        fn = int(np.sum((predictions == 0) & (references == 1)))
        # 2 TP / (2 TP + FP + FN); defined as 0 when TP = 0 (sklearn's zero_division=0 gives the same).
        f1 = 0.0 if tp == 0 else 2.0 * tp / (2.0 * tp + fp + fn)
        return {"f1": float(f1)}
