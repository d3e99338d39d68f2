"""`python -m eval_suite run` end to end on a tiny slice of the real data (quick mode), and the input cutoff."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval_suite.tasks import CUTOFF

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def corpus_and_model(tmp_path_factory):
    """The real Complete Journey corpus before the cutoff (hashing text vectors: no model download, fast) and a
    tiny checkpoint pre-trained on it for a few steps."""
    base = tmp_path_factory.mktemp("evalrun")
    corpus = base / "cj"
    _run(["-m", "data_prep", "build", "--source", "completejourney", "--end-date", str(CUTOFF.date()),
          "--text-model", "hashing", "--cache-dir", str(base / "cache"), "--out", str(corpus), "--quiet"])
    run = base / "run"
    _run(["train.py", "--data", str(corpus), "--preset", "tiny", "--output", str(run), "--max-steps", "3",
          "--batch-size", "16", "--max-eval-users", "16", "--report-to", "none"])
    return corpus, run / "final"


def test_inputs_end_before_the_cutoff(corpus_and_model):
    from eval_suite.inputs import Corpus, history_inputs, purchase_inputs
    from eval_suite.tasks import build_task, load_raw_tables

    corpus = Corpus.load(corpus_and_model[0])
    cutoff = int(CUTOFF.timestamp())
    purchases = purchase_inputs(corpus)
    assert len(purchases.user_ids) == 2447  # every household with a purchase before T, unfiltered
    assert max(int(np.max(r["timestamp"])) for r in purchases.rows if len(r["timestamp"])) < cutoff
    tables = load_raw_tables()
    for name in ("featured_products", "campaign_coupons", "next_product_type"):
        task = build_task(name, tables)
        history = history_inputs(task, tables, corpus, purchases.user_ids)
        latest = max(int(np.max(r["timestamp"])) for r in history.rows if len(r["timestamp"]))
        assert latest < cutoff, name
        positives = pd.to_datetime(task.instances["timestamp"])
        assert (positives >= CUTOFF).all(), name  # labels come from the window only


def test_run_command_quick_on_a_tiny_slice(corpus_and_model, tmp_path):
    corpus, checkpoint = corpus_and_model
    card = tmp_path / "card.md"
    shutil.copy(ROOT / "model_card.md", card)
    out = tmp_path / "results"
    result = _run(["-m", "eval_suite", "run", "--model", f"MP={checkpoint}", "--data", str(corpus),
                   "--tasks", "kids,featured_products", "--quick", "--repeats", "2", "--max-users", "120",
                   "--out", str(out), "--model-card", str(card)])
    assert "Table 4 analogue" in result.stdout
    results = json.loads((out / "results.json").read_text())
    kids = results["tasks"]["kids"]["models"]
    assert {"U-MLP MP", "P-Trans", "UP-Trans MP", "LogReg TF-IDF+RFM"} <= set(kids)
    for metrics in kids["U-MLP MP"]["seeds"].values():
        assert 0 <= metrics["auroc"] <= 1 and 0 <= metrics["f1"] <= 1 and metrics["lr"] == 1e-3
    featured = results["tasks"]["featured_products"]["models"]
    assert {"U-MLP MP", "P-Trans", "UP-Trans MP", "T-Trans", "Popularity", "Co-occurrence"} <= set(featured)
    seed0 = featured["T-Trans"]["seeds"]["0"]
    assert 0 <= seed0["mrr"] <= 1 and "full_ndcg@10" in seed0 and "cold_mrr" in seed0
    assert featured["U-MLP MP"]["n"] == 2 and "std" in featured["U-MLP MP"]
    assert sorted(os.listdir(out / "negatives" / "featured_products")) == ["seed0.parquet", "seed1.parquet"]
    for table in ("table4.md", "table5.md", "table6.md", "headline.md"):
        assert (out / table).stat().st_size > 0

    from huggingface_hub import ModelCard

    parsed = ModelCard.load(card)
    index = parsed.data.eval_results
    assert index, "the model-index metadata must list the evaluated tasks"
    by_name = {(r.task_name, r.metric_name): r.metric_value for r in index}
    expected = results["tasks"]["kids"]["models"]["U-MLP MP"]["mean"]["auroc"]
    assert by_name[("kids", "auroc (U-MLP MP)")] == pytest.approx(expected, abs=5e-5)
    assert "<!-- results:start -->" in card.read_text()


def test_run_command_rejects_bad_options(tmp_path):
    env = dict(os.environ)
    bad = subprocess.run([sys.executable, "-m", "eval_suite", "run", "--model", str(tmp_path), "--data", str(tmp_path),
                          "--tasks", "gender"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown tasks ['gender']" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "eval_suite", "run", "--model", str(tmp_path), "--data", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not a saved ShopperBERT folder" in bad.stderr
