"""Local `evaluate` metric modules for the ShopperBERT evaluation suite, loadable fully offline.

`evaluate.load("accuracy")` and friends fetch their scripts from the Hugging Face Hub, so they fail offline. Every
metric the suite needs ships here instead as a local module, a folder `<name>/<name>.py` that defines an
`evaluate.Metric` subclass, and loads by path (about 0.01 s, no network):

    >>> from eval_suite.metrics import load_metric
    >>> auroc = load_metric("roc_auc")
    >>> for scores, labels in batches:                 # e.g. from accelerator.gather_for_metrics
    ...     auroc.add_batch(prediction_scores=scores, references=labels)
    >>> auroc.compute()
    {'roc_auc': ...}

or with evaluate directly: `evaluate.load(str(metric_path("roc_auc")))`.

Modules, inputs -> outputs:
    accuracy:  predictions (int), references (int)                     -> {"accuracy"}
    f1:        predictions (int 0/1), references (int 0/1)             -> {"f1"}                 (binary, pos_label=1)
    roc_auc:   prediction_scores (float), references (int 0/1)         -> {"roc_auc"}
    ranking:   positive_score (float), negative_scores (list of float) -> {"hr@k", "ndcg@k", "mrr", "num_instances"}
               compute(..., k=10); k may also be a list of cut-offs. Ties count against the positive.

`evaluate` is imported lazily (importing it takes several seconds).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES: list[str] = ["accuracy", "f1", "roc_auc", "ranking"]

# name -> (the module's evaluate.Metric subclass, the script hash evaluate assigned to it)
_LOADED: dict[str, tuple[type, str]] = {}
_LOCK = threading.Lock()


def metric_path(name: str) -> Path:
    """The folder of the local metric module `name`, for `evaluate.load(str(metric_path(name)))`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the local metrics are {METRIC_NAMES}")
    return METRICS_DIR / name


def load_metric(name: str, *, keep_in_memory: bool = True, **kwargs: Any) -> "evaluate.EvaluationModule":
    """A fresh instance of the local `evaluate` metric `name` (one of `METRIC_NAMES`), loaded by path, offline.

    The script is loaded once per process (evaluate copies it into its modules cache under `HF_HOME/modules` and
    imports it from there) and its class is cached; each call returns a NEW instance, so two evaluation loops never
    share accumulated batches. `keep_in_memory=True` (default) keeps the batches added with `add_batch` in memory
    instead of Arrow cache files under `HF_HOME/metrics`; pass False (and `num_process`/`process_id`) only for
    evaluate's own file-based multi-process gathering, which `accelerator.gather_for_metrics` makes unnecessary.
    Other keyword arguments go to the module's constructor (`experiment_id`, `cache_dir`, `seed`, ...).
    """
    path = metric_path(name)
    with _LOCK:
        if name not in _LOADED:
            from evaluate.loading import evaluation_module_factory, import_main_class

            module = evaluation_module_factory(str(path))
            _LOADED[name] = (import_main_class(module.module_path), module.hash)
    cls, script_hash = _LOADED[name]
    instance = cls(keep_in_memory=keep_in_memory, hash=script_hash, **kwargs)
    instance.download_and_prepare()
    return instance


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
