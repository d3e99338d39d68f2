"""Accuracy: the fraction of predictions equal to their references (a local, offline `evaluate` metric)."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Accuracy is the proportion of correct predictions among all instances:
    accuracy = (number of i with predictions[i] == references[i]) / n
It is one of the three binary-classification metrics of ShopperBERT (One4all User Representation, section 4.2.4),
together with F1 and AUROC; it works for any integer labels, not only binary ones.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels (e.g. `(probability >= 0.5).astype(int)` or `logits.argmax(-1)`).
    references (`list` of `int`): ground-truth labels, same length as `predictions`.

Returns:
    accuracy (`float`): in [0, 1]; 1.0 means every prediction is correct.

Raises:
    ValueError: empty input, or `predictions` and `references` of different lengths.

Example:
    >>> from eval_suite.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
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


class Accuracy(evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def compute(self, **kwargs):
        """Compute the metric over the batches added with `add_batch` plus any inputs passed here."""
        # evaluate 0.4.6 fails with "AttributeError: 'NoneType' object has no attribute 'getvalue'" (in memory) when
        # nothing was ever added: say what is wrong instead.
        if self.writer is None and all(kwargs.get(key) is None for key in self._feature_names()):
            raise ValueError(
                "accuracy: no instances to evaluate: call add_batch(...) before compute(), "
                "or pass the inputs to compute()"
            )
        return super().compute(**kwargs)

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
        references = np.asarray(references, dtype=np.int64).reshape(-1)
        if predictions.shape != references.shape:
            raise ValueError(
                f"accuracy: predictions ({predictions.size}) and references ({references.size}) differ in length"
            )
        if predictions.size == 0:
            raise ValueError("accuracy: no instances to evaluate (empty predictions and references)")
        return {"accuracy": float(np.mean(predictions == references))}
