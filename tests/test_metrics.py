"""The local, offline `evaluate` metric modules of eval_suite/metrics: hand-computed values, batching, bad inputs,
and loading by path with a fresh HF_HOME and no network."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from eval_suite.metrics import METRIC_NAMES, METRICS_DIR, load_metric, metric_path

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics():
    """One instance per metric; compute() resets an instance, so the tests can share them."""
    return {name: load_metric(name) for name in METRIC_NAMES}


def _script_module(metric):
    """The Python module evaluate imported the metric script as (from its modules cache)."""
    return sys.modules[type(metric).__module__]


# --------------------------------------------------------------------------------------------------------------------
# Layout and loading
# --------------------------------------------------------------------------------------------------------------------


def test_every_metric_is_a_local_module_with_allowed_imports():
    from evaluate.loading import get_imports

    assert METRIC_NAMES == ["accuracy", "f1", "roc_auc", "ranking"]
    for name in METRIC_NAMES:
        script = METRICS_DIR / name / f"{name}.py"
        assert script.is_file()
        assert metric_path(name) == METRICS_DIR / name
        # evaluate parses the imports line by line to check requirements: only installed libraries, no relative ones.
        imports = get_imports(str(script))
        assert {kind for kind, *_ in imports} == {"library"}
        assert {lib for _, lib, *_ in imports} <= {"datasets", "evaluate", "numpy", "sklearn"}
        for line in script.read_text().splitlines():
            if line.startswith("import "):
                assert "," not in line, f"{script}: one import per line: {line!r}"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")


def test_load_metric_returns_fresh_instances_of_a_cached_class():
    first, second = load_metric("accuracy"), load_metric("accuracy")
    assert first is not second
    assert type(first) is type(second)
    # Independent state: a batch added to one instance is not seen by the other.
    first.add_batch(predictions=[1, 1], references=[1, 0])
    assert second.compute(predictions=[1], references=[1]) == {"accuracy": 1.0}
    assert first.compute() == {"accuracy": 0.5}


def test_evaluate_load_by_path_in_process():
    import evaluate

    for name in METRIC_NAMES:
        module = evaluate.load(str(metric_path(name)))
        assert isinstance(module, evaluate.EvaluationModule)
        assert module.name == name


def test_loading_offline_with_a_fresh_hf_home(tmp_path):
    """A clean process: offline variables, an empty HF_HOME and an unreachable hub endpoint; evaluate copies the
    scripts into HF_HOME/modules and every metric loads and computes."""
    hf_home = tmp_path / "hf_home"
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any attempt to reach a hub fails at once
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_EVALUATE_CACHE"):
        env.pop(key, None)
    code = textwrap.dedent(
        """
        import json, time
        import evaluate
        from eval_suite.metrics import load_metric, metric_path
        out = {}
        start = time.perf_counter()
        acc = evaluate.load(str(metric_path("accuracy")))
        out["load_s"] = time.perf_counter() - start
        out["accuracy"] = acc.compute(predictions=[1, 0], references=[1, 1])
        out["f1"] = load_metric("f1").compute(predictions=[1, 0], references=[1, 1])
        out["roc_auc"] = load_metric("roc_auc").compute(prediction_scores=[0.1, 0.9], references=[0, 1])
        out["ranking"] = load_metric("ranking").compute(positive_score=[0.5], negative_scores=[[0.9, 0.1]])
        print("RESULT" + json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    assert out["accuracy"] == {"accuracy": 0.5}
    assert out["f1"] == {"f1": pytest.approx(2 / 3)}  # TP=1, FP=0, FN=1: 2/(2+0+1)
    assert out["roc_auc"] == {"roc_auc": 1.0}
    assert out["ranking"] == {"hr@10": 1.0, "ndcg@10": pytest.approx(1 / math.log2(3)), "mrr": 0.5, "num_instances": 1}
    assert out["load_s"] < 5.0
    for name in METRIC_NAMES:  # the scripts were copied into the fresh modules cache
        assert list((hf_home / "modules" / "evaluate_modules" / "metrics" / name).glob(f"*/{name}.py"))


# --------------------------------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------------------------------


def test_accuracy_hand_computed(metrics):
    # predictions [0, 1, 1, 0, 1] vs references [0, 1, 0, 0, 0]: equal at positions 0, 1, 3 -> 3/5 = 0.6
    result = metrics["accuracy"].compute(predictions=[0, 1, 1, 0, 1], references=[0, 1, 0, 0, 0])
    assert result == {"accuracy": pytest.approx(0.6)}
    assert isinstance(result["accuracy"], float)
    # Multi-class labels work too: [2, 1, 0] vs [2, 0, 0] -> 2/3
    assert metrics["accuracy"].compute(predictions=[2, 1, 0], references=[2, 0, 0]) == {
        "accuracy": pytest.approx(2 / 3)
    }


# --------------------------------------------------------------------------------------------------------------------
# f1
# --------------------------------------------------------------------------------------------------------------------


def test_f1_hand_computed(metrics):
    # predictions [1, 1, 0, 0, 1, 0] vs references [1, 0, 1, 0, 1, 1]:
    # TP = positions 0, 4 = 2; FP = position 1 = 1; FN = positions 2, 5 = 2
    # precision = 2/3, recall = 2/4; F1 = 2 TP / (2 TP + FP + FN) = 4 / 7
    result = metrics["f1"].compute(predictions=[1, 1, 0, 0, 1, 0], references=[1, 0, 1, 0, 1, 1])
    assert result == {"f1": pytest.approx(4 / 7)}


def test_f1_no_positive_predictions_is_zero(metrics):
    # No predicted positive: TP = 0, precision undefined -> F1 = 0 (sklearn's zero_division=0)
    assert metrics["f1"].compute(predictions=[0, 0, 0], references=[1, 0, 1]) == {"f1": 0.0}
    # No positive at all: TP = FP = FN = 0 -> 0 as well
    assert metrics["f1"].compute(predictions=[0, 0], references=[0, 0]) == {"f1": 0.0}


def test_f1_matches_sklearn_on_random_labels(metrics):
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    expected = f1_score(references, predictions, pos_label=1, average="binary", zero_division=0)
    assert metrics["f1"].compute(predictions=predictions, references=references)["f1"] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------------------------
# roc_auc
# --------------------------------------------------------------------------------------------------------------------


def test_roc_auc_hand_computed(metrics):
    # scores [0.1, 0.4, 0.35, 0.8], labels [0, 0, 1, 1]; AUROC = fraction of (positive, negative) pairs ordered right:
    # (0.35 > 0.1) yes, (0.35 > 0.4) no, (0.8 > 0.1) yes, (0.8 > 0.4) yes -> 3/4
    result = metrics["roc_auc"].compute(prediction_scores=[0.1, 0.4, 0.35, 0.8], references=[0, 0, 1, 1])
    assert result == {"roc_auc": pytest.approx(0.75)}


def test_roc_auc_ties_count_half_as_sklearn(metrics):
    from sklearn.metrics import roc_auc_score

    # scores [0.2, 0.6, 0.6, 0.9], labels [0, 0, 1, 1]; pairs (positive, negative):
    # (0.6, 0.2) = 1, (0.6, 0.6) tie = 1/2, (0.9, 0.2) = 1, (0.9, 0.6) = 1 -> 3.5 / 4 = 0.875
    scores, labels = [0.2, 0.6, 0.6, 0.9], [0, 0, 1, 1]
    result = metrics["roc_auc"].compute(prediction_scores=scores, references=labels)
    assert result == {"roc_auc": pytest.approx(0.875)}
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))


def test_roc_auc_keeps_float64_precision(metrics):
    # 1.0 and 1.0 + 1e-12 are the same float32: stored as float32 they would tie (AUROC 0.5) instead of 1.0.
    result = metrics["roc_auc"].compute(prediction_scores=[1.0, 1.0 + 1e-12], references=[0, 1])
    assert result == {"roc_auc": 1.0}


# --------------------------------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------------------------------


def test_ranking_positive_first(metrics):
    # 0.9 above all of [0.1, 0.5, 0.3]: rank 0 -> HR@10 = 1, NDCG@10 = 1/log2(2) = 1, MRR = 1/1
    result = metrics["ranking"].compute(positive_score=[0.9], negative_scores=[[0.1, 0.5, 0.3]])
    assert result == {"hr@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0, "num_instances": 1}


def test_ranking_positive_third(metrics):
    # 0.5 below 0.9 and 0.7, above 0.1 and 0.2: rank 2 -> HR@10 = 1, NDCG@10 = 1/log2(4) = 0.5, MRR = 1/3
    result = metrics["ranking"].compute(positive_score=[0.5], negative_scores=[[0.9, 0.7, 0.1, 0.2]])
    assert result == {"hr@10": 1.0, "ndcg@10": pytest.approx(0.5), "mrr": pytest.approx(1 / 3), "num_instances": 1}


def test_ranking_positive_at_rank_12_is_outside_top_10(metrics):
    # 12 negatives above 0.0 (1..12) and 3 below: rank 12 >= k=10 -> HR@10 = 0, NDCG@10 = 0, MRR = 1/13
    negatives = [float(i) for i in range(1, 13)] + [-1.0, -2.0, -3.0]
    result = metrics["ranking"].compute(positive_score=[0.0], negative_scores=[negatives], k=10)
    assert result == {"hr@10": 0.0, "ndcg@10": 0.0, "mrr": pytest.approx(1 / 13), "num_instances": 1}


def test_ranking_ties_count_against_the_positive(metrics):
    # 0.5 vs [0.5, 0.5, 0.1]: both ties ranked above the positive -> rank 2 (the optimistic rule would give 0):
    # NDCG@10 = 1/log2(4) = 0.5, MRR = 1/3; with k=2 the positive falls outside the top 2: HR@2 = 0
    result = metrics["ranking"].compute(positive_score=[0.5], negative_scores=[[0.5, 0.5, 0.1]], k=[2, 10])
    assert result == {
        "hr@2": 0.0,
        "ndcg@2": 0.0,
        "hr@10": 1.0,
        "ndcg@10": pytest.approx(0.5),
        "mrr": pytest.approx(1 / 3),
        "num_instances": 1,
    }
    # A constant model (every score equal, 100 negatives) gets the worst rank, 100: MRR = 1/101, HR@10 = 0
    result = metrics["ranking"].compute(positive_score=[0.0], negative_scores=[[0.0] * 100])
    assert result == {"hr@10": 0.0, "ndcg@10": 0.0, "mrr": pytest.approx(1 / 101), "num_instances": 1}


def test_ranking_keeps_float64_precision(metrics):
    # 1.0 + 1e-12 is strictly above 1.0 and 1.0 - 1e-12 strictly below (in float32 all three would tie): rank 1
    result = metrics["ranking"].compute(positive_score=[1.0], negative_scores=[[1.0 + 1e-12, 1.0 - 1e-12]])
    assert result["mrr"] == pytest.approx(1 / 2)


def test_ranking_variable_length_negatives(metrics):
    # instance 1: 0.9 vs [0.1, 0.2]           -> rank 0: hit@2 1, ndcg@2 1,   rr 1
    # instance 2: 0.5 vs [0.7, 0.6, 0.5, 0.1] -> rank 3 (0.7, 0.6 and the tie 0.5): hit@2 0, ndcg@2 0, rr 1/4
    # instance 3: 0.3 vs []                   -> rank 0: hit@2 1, ndcg@2 1,   rr 1
    # instance 4: 0.2 vs [0.4]                -> rank 1: hit@2 1, ndcg@2 1/log2(3), rr 1/2
    result = metrics["ranking"].compute(
        positive_score=[0.9, 0.5, 0.3, 0.2], negative_scores=[[0.1, 0.2], [0.7, 0.6, 0.5, 0.1], [], [0.4]], k=2
    )
    assert result == {
        "hr@2": pytest.approx(3 / 4),
        "ndcg@2": pytest.approx((1 + 0 + 1 + 1 / math.log2(3)) / 4),
        "mrr": pytest.approx((1 + 1 / 4 + 1 + 1 / 2) / 4),
        "num_instances": 4,
    }


def test_ranking_k_changes_the_keys(metrics):
    inputs = {"positive_score": [0.5], "negative_scores": [[0.9, 0.7, 0.1]]}  # rank 2
    assert set(metrics["ranking"].compute(**inputs)) == {"hr@10", "ndcg@10", "mrr", "num_instances"}
    result = metrics["ranking"].compute(**inputs, k=5)
    assert set(result) == {"hr@5", "ndcg@5", "mrr", "num_instances"}
    # rank 2 with k=2: outside; with k=3: inside, NDCG = 1/log2(4) = 0.5
    result = metrics["ranking"].compute(**inputs, k=[3, 2])
    assert list(result) == ["hr@2", "ndcg@2", "hr@3", "ndcg@3", "mrr", "num_instances"]
    assert (result["hr@2"], result["ndcg@2"], result["hr@3"], result["ndcg@3"]) == (0.0, 0.0, 1.0, 0.5)


def _brute_force(positives, negatives, k):
    ranks = np.array([int(np.sum(np.asarray(neg) >= pos)) for pos, neg in zip(positives, negatives)])
    return {
        f"hr@{k}": np.mean(ranks < k),
        f"ndcg@{k}": np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks]),
        "mrr": np.mean(1 / (ranks + 1)),
        "num_instances": len(ranks),
    }


def test_ranking_matches_brute_force_across_blocks(metrics, monkeypatch):
    # Integer scores force many ties; tiny blocks exercise the block loop (lists longer than a block included).
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=60)
    negatives = [rng.integers(0, 20, size=n).astype(float) for n in lengths]
    positives = rng.integers(0, 20, size=60).astype(float)
    expected = _brute_force(positives, negatives, k=5)
    ranking = metrics["ranking"]
    for block in (1, 7, 64, 1 << 22):
        monkeypatch.setattr(_script_module(ranking), "_BLOCK_SCORES", block)
        for start in range(0, 60, 16):  # batches as from accelerator.gather_for_metrics
            batch = slice(start, start + 16)
            ranking.add_batch(positive_score=positives[batch], negative_scores=negatives[batch])
        assert ranking.compute(k=5) == pytest.approx(expected)


def test_ranking_full_candidate_lists_are_vectorised(metrics):
    # 200 instances x 5,000 candidates (full-ranking sized) in one 2-D batch; checked against a numpy reference.
    rng = np.random.default_rng(1)
    negatives = rng.standard_normal((200, 5000))
    positives = rng.standard_normal(200) + 2.5
    ranks = (negatives >= positives[:, None]).sum(axis=1)
    result = metrics["ranking"].compute(positive_score=positives, negative_scores=negatives, k=10)
    assert result["mrr"] == pytest.approx(np.mean(1 / (ranks + 1)))
    assert result["hr@10"] == pytest.approx(np.mean(ranks < 10))
    assert result["num_instances"] == 200


# --------------------------------------------------------------------------------------------------------------------
# add_batch + compute, as the training loop feeds them
# --------------------------------------------------------------------------------------------------------------------

_CASES = {
    "accuracy": ({"predictions": [0, 1, 1, 0, 1], "references": [0, 1, 0, 0, 0]}, {"accuracy": 0.6}),
    "f1": ({"predictions": [1, 1, 0, 0, 1, 0], "references": [1, 0, 1, 0, 1, 1]}, {"f1": 4 / 7}),
    "roc_auc": ({"prediction_scores": [0.2, 0.6, 0.6, 0.9], "references": [0, 0, 1, 1]}, {"roc_auc": 0.875}),
    "ranking": (
        {"positive_score": [0.9, 0.5, 0.3, 0.2], "negative_scores": [[0.1, 0.2], [0.7, 0.6, 0.5, 0.1], [], [0.4]]},
        # ranks 0, 3, 0, 1 (see test_ranking_variable_length_negatives); MRR = (1 + 1/4 + 1 + 1/2) / 4 = 0.6875
        {
            "hr@10": 1.0,
            "ndcg@10": (1 + 1 / math.log2(5) + 1 + 1 / math.log2(3)) / 4,
            "mrr": 0.6875,
            "num_instances": 4,
        },
    ),
}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_add_batch_then_compute(metrics, name):
    torch = pytest.importorskip("torch")
    inputs, expected = _CASES[name]
    metric = metrics[name]
    n = len(next(iter(inputs.values())))
    for start in range(0, n, 3):  # batches of 3 and a remainder
        batch = {key: values[start : start + 3] for key, values in inputs.items()}
        if name != "ranking":  # gathered tensors go in as they are
            batch = {key: torch.tensor(values) for key, values in batch.items()}
        metric.add_batch(**batch)
    assert metric.compute() == pytest.approx(expected)
    # compute() resets the module: it can be reused for the next evaluation
    assert metric.compute(**inputs) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_roc_auc_single_class_raises(metrics, labels):
    with pytest.raises(ValueError, match="single class"):
        metrics["roc_auc"].compute(prediction_scores=[0.1, 0.5, 0.9], references=labels)


@pytest.mark.parametrize(
    "name, inputs",
    [
        ("accuracy", {"predictions": [0, 1, 1], "references": [0, 1]}),
        ("f1", {"predictions": [0, 1], "references": [0, 1, 1]}),
        ("roc_auc", {"prediction_scores": [0.1, 0.2, 0.3], "references": [0, 1]}),
        ("ranking", {"positive_score": [0.1, 0.2], "negative_scores": [[0.3]]}),
    ],
)
def test_mismatched_lengths_raise(metrics, name, inputs):
    with pytest.raises(ValueError, match="(?i)mismatch|differ"):
        metrics[name].compute(**inputs)


@pytest.mark.parametrize(
    "name, inputs",
    [
        ("accuracy", {"predictions": [], "references": []}),
        ("f1", {"predictions": [], "references": []}),
        ("roc_auc", {"prediction_scores": [], "references": []}),
        ("ranking", {"positive_score": [], "negative_scores": []}),
    ],
)
def test_empty_input_raises(metrics, name, inputs):
    with pytest.raises(ValueError, match="no instances"):
        metrics[name].compute(**inputs)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_compute_with_nothing_added_raises(metrics, name):
    with pytest.raises(ValueError, match="no instances"):
        metrics[name].compute()


@pytest.mark.parametrize(
    "name, inputs, match",
    [
        ("f1", {"predictions": [0, 2], "references": [0, 1]}, "labels 0 and 1"),
        ("roc_auc", {"prediction_scores": [0.1, 0.2], "references": [0, 2]}, "labels 0 and 1"),
        ("roc_auc", {"prediction_scores": [0.1, float("nan")], "references": [0, 1]}, "NaN"),
        ("ranking", {"positive_score": [float("nan")], "negative_scores": [[0.1]]}, "NaN"),
        ("ranking", {"positive_score": [0.5], "negative_scores": [[0.1, float("nan")]]}, "NaN"),
    ],
)
def test_invalid_values_raise(metrics, name, inputs, match):
    with pytest.raises(ValueError, match=match):
        metrics[name].compute(**inputs)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "10", []])
def test_ranking_bad_k_raises(metrics, k):
    with pytest.raises(ValueError, match="k must be"):
        metrics["ranking"].compute(positive_score=[0.5], negative_scores=[[0.1]], k=k)
