"""The model-index metadata of both cards (the repository's model_card.md and the Hub folder's README.md), and the
offline check of a card's metadata."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TASK_TYPES = {"classification": "user-classification", "recommendation": "recommendation"}
METRIC_NAMES = {"auroc": "roc_auc", "f1": "f1", "accuracy": "accuracy", "hr@10": "hit_rate@10",
                "ndcg@10": "ndcg@10", "mrr": "mrr", "full_ndcg@10": "ndcg@10 (full ranking)"}
MPP_TASK_TYPE = "masked-purchase-prediction"


def metadata_id(text: str) -> str:
    """An id for the model-index `type` fields, which the Hub matches against `[\\w.-]+` (names stay free text)."""
    return re.sub(r"[^\w.-]+", "_", str(text).replace("@", "_at_")).strip("_") or "unknown"


def dataset_id(metadata: dict) -> str:
    return metadata_id(metadata.get("source") or "unknown")


@dataclass(frozen=True)
class IndexLabels:
    """How a card labels its downstream model-index entries (the numbers are the same in both cards).

    `dataset_name` may use `{dataset}` (the dataset type) and `{analogue}` (the task's paper analogue); `split` uses
    `{n}` (the number of seeds). `type_ids` turns metric types into Hub ids (`hit_rate_at_10`); `digits` rounds the
    values (None: as computed); `config_is_task` names the task as the dataset config.
    """

    dataset_type: str
    dataset_name: str
    split: str
    type_ids: bool = False
    digits: int | None = None
    config_is_task: bool = False


# The repository's model_card.md (`python -m eval_suite model-card`).
REPO_CARD_LABELS = IndexLabels(dataset_type="completejourney", dataset_name="Complete Journey",
                               split="test users (mean of {n} seeds)", digits=4, config_is_task=True)


def hub_card_labels(metadata: dict) -> IndexLabels:
    """The Hub folder's README.md: ids the Hub's validator accepts, the corpus named by the published metadata.json."""
    return IndexLabels(dataset_type=dataset_id(metadata), dataset_name="{dataset} ({analogue})",
                       split="test users, mean of {n} seeds", type_ids=True)


def downstream_eval_results(results: dict, umlps: dict[str, str | None], labels: IndexLabels) -> list:
    """`huggingface_hub.EvalResult`s of the U-MLP named per task in `umlps` (task -> model name, or None to skip the
    task): one per task and metric, the mean over seeds; non-finite means are left out."""
    from huggingface_hub import EvalResult

    from eval_suite.report import summarise

    if any("mean" not in m for entry in results["tasks"].values() for m in entry["models"].values()):
        summarise(results)
    out = []
    for task_name, entry in results["tasks"].items():
        name = umlps.get(task_name)
        model = entry["models"].get(name) if name else None
        if model is None:
            continue
        for key, metric_type in METRIC_NAMES.items():
            value = model.get("mean", {}).get(key)
            if value is None or not math.isfinite(value):
                continue
            value = float(value) if labels.digits is None else round(float(value), labels.digits)
            out.append(EvalResult(
                task_type=TASK_TYPES[entry["kind"]], task_name=task_name, dataset_type=labels.dataset_type,
                dataset_name=labels.dataset_name.format(dataset=labels.dataset_type,
                                                        analogue=entry.get("paper_analogue", task_name)),
                dataset_config=task_name if labels.config_is_task else None,
                dataset_split=labels.split.format(n=model["n"]),
                metric_type=metadata_id(metric_type) if labels.type_ids else metric_type,
                metric_value=value, metric_name=f"{key} ({name})"))
    return out


def mpp_eval_results(training_info: dict, metadata: dict) -> list:
    """Validation MPP loss and per-head accuracy of a checkpoint, from its training_info.json."""
    from huggingface_hub import EvalResult

    from modeling_shopperbert.contract import MPP_HEADS

    if "eval/loss" not in training_info:
        return []
    common = dict(task_type=MPP_TASK_TYPE, task_name="Masked purchase prediction (pre-training objective)",
                  dataset_type=dataset_id(metadata), dataset_name=dataset_id(metadata),
                  dataset_split=f"validation households (step {training_info.get('step', '?')})")
    out = [EvalResult(metric_type="loss", metric_name="MPP loss", metric_value=float(training_info["eval/loss"]),
                      **common)]
    for head in MPP_HEADS:
        key = f"eval/accuracy_{head}"
        if key in training_info:
            out.append(EvalResult(metric_type="accuracy", metric_name=f"MPP accuracy ({head})",
                                  metric_value=float(training_info[key]), **common))
    return out


def check_card(text: str) -> list[str]:
    """Problems with a card's metadata (offline: what the Hub's validator would reject first)."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # noqa: BLE001  (any parse error is a problem to report)
        return [f"the card does not parse: {err}"]
    data = card.data.to_dict()
    problems = []
    for key, expected in (("library_name", "transformers"), ("pipeline_tag", "feature-extraction")):
        if data.get(key) != expected:
            problems.append(f"metadata {key} is {data.get(key)!r}, expected {expected!r}")
    for key in ("tags", "datasets"):
        if not isinstance(data.get(key), list) or not data[key]:
            problems.append(f"metadata {key} must be a non-empty list")
    if "model-index" in data:
        problems += _model_index_problems(data["model-index"])
    return problems


def _model_index_problems(model_index) -> list[str]:
    from huggingface_hub.repocard_data import model_index_to_eval_results

    try:
        _, results = model_index_to_eval_results(model_index)
    except Exception as err:  # noqa: BLE001
        return [f"model-index does not parse: {err}"]
    problems = []
    bad = [r.metric_name for r in results if not isinstance(r.metric_value, (int, float))
           or not math.isfinite(r.metric_value)]
    if bad:
        problems.append(f"model-index has non-numeric values for {bad}")
    ids = {value for r in results for value in (r.task_type, r.dataset_type, r.metric_type)}
    bad = sorted(value for value in ids if not re.fullmatch(r"(?:[\w-]+/)?[\w.-]+", value))
    if bad:
        problems.append(f"model-index type fields must be ids ([\\w.-]+), got {bad}")
    return problems
