"""Binary area under the ROC curve, AUROC (a local, offline `evaluate` metric)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score


_DESCRIPTION = """
Binary AUROC: the area under the receiver operating characteristic curve of `prediction_scores` against
`references` (positive class 1), computed by scikit-learn's `roc_auc_score`. It equals the probability that a
random positive instance scores higher than a random negative one, a tie counting 1/2 (the Mann-Whitney U
statistic divided by n_pos * n_neg). It is the main binary-classification metric of ShopperBERT (One4all User
Representation, section 4.2.4). Scores are stored as float64, so nearby model scores are not merged into ties.
"""

_KWARGS_DESCRIPTION = """
Args:
    prediction_scores (`list` of `float`): a score for the positive class per instance: a probability, a logit
        or any monotone transform of them (AUROC depends only on the ordering).
    references (`list` of `int`): ground-truth labels, 0 or 1, same length as `prediction_scores`.

Returns:
    roc_auc (`float`): in [0, 1]; 0.5 is chance level, 1.0 a perfect ordering.

Raises:
    ValueError: empty input, inputs of different lengths, a label other than 0 and 1, a NaN score, or references
        that hold a single class (AUROC is undefined without both a positive and a negative instance).

Example:
    >>> from eval_suite.metrics import load_metric
    >>> load_metric("roc_auc").compute(prediction_scores=[0.1, 0.4, 0.35, 0.8], references=[0, 0, 1, 1])
    {'roc_auc': 0.75}
"""

_CITATION = """
@article{hanley1982meaning,
  title={The meaning and use of the area under a receiver operating characteristic ({ROC}) curve},
  author={Hanley, James A. and McNeil, Barbara J.},
  journal={Radiology},
  volume={143},
  number={1},
  pages={29--36},
  year={1982}
}
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


class RocAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "prediction_scores": datasets.Value("float64"),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def compute(self, **kwargs):
        """Compute the metric over the batches added with `add_batch` plus any inputs passed here."""
        # evaluate 0.4.6 fails with "AttributeError: 'NoneType' object has no attribute 'getvalue'" (in memory) when
        # nothing was ever added: say what is wrong instead.
        if self.writer is None and all(kwargs.get(key) is None for key in self._feature_names()):
            raise ValueError(
                "roc_auc: no instances to evaluate: call add_batch(...) before compute(), "
                "or pass the inputs to compute()"
            )
        return super().compute(**kwargs)

    def _compute(self, prediction_scores, references):
        scores = np.asarray(prediction_scores, dtype=np.float64).reshape(-1)
        references = np.asarray(references, dtype=np.int64).reshape(-1)
        if scores.shape != references.shape:
            raise ValueError(
                f"roc_auc: prediction_scores ({scores.size}) and references ({references.size}) differ in length"
            )
        if scores.size == 0:
            raise ValueError("roc_auc: no instances to evaluate (empty prediction_scores and references)")
        if np.isnan(scores).any():
            raise ValueError(f"roc_auc: prediction_scores hold {int(np.isnan(scores).sum())} NaN value(s)")
        classes = np.unique(references)
        bad = np.setdiff1d(classes, [0, 1])
        if bad.size:
            raise ValueError(f"roc_auc: binary AUROC needs labels 0 and 1, but references hold {bad.tolist()}")
        if classes.size < 2:
            raise ValueError(
                f"roc_auc: AUROC is undefined when references hold a single class (all {int(classes[0])}, "
                f"n={references.size}); evaluate on a split that holds both positive and negative instances"
            )
        return {"roc_auc": float(roc_auc_score(references, scores))}
