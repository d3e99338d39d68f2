"""What several test modules share that is not a fixture: the one way tests run a command of this repository, and
the tiny inputs of the collator tests and of the downstream-model tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from modeling_shopperbert import UNK_ID, ShopperBertConfig
from modeling_shopperbert.configuration_shopperbert import CATEGORY_FIELDS, DATE_FIELDS, TEXT_INDEX_FIELD

ROOT = Path(__file__).resolve().parents[1]


def save_tiny_model(folder: Path, data: Path, text_model: str | None = None, **sizes) -> Path:
    """A randomly initialised pre-training model for the prepared corpus `data`, saved into `folder` as train.py saves
    one (with the corpus' vocab.json and metadata.json; `text_model` replaces the metadata's text model)."""
    import json

    from modeling_shopperbert import ShopperBertForMaskedPurchasePrediction

    metadata = json.loads((Path(data) / "metadata.json").read_text())
    config = ShopperBertConfig.from_data_metadata(metadata, max_position_embeddings=65, **sizes)
    ShopperBertForMaskedPurchasePrediction(config).save_pretrained(folder)
    (Path(folder) / "vocab.json").write_text((Path(data) / "vocab.json").read_text())
    if text_model is not None:
        metadata["text_model"] = text_model
    (Path(folder) / "metadata.json").write_text(json.dumps(metadata))
    return Path(folder)


def run_python(args, timeout: int = 900, check: bool = True, env_extra: dict | None = None, **kwargs):
    """`python ARGS` in the repository root (e.g. `["-m", "data_prep", "build", ...]` or `["train.py", ...]`), output
    captured; with `check`, a non-zero exit fails the test with the end of both streams."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    result = subprocess.run([sys.executable, *[str(a) for a in args]], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def build_cj_corpus_and_tiny_model(base: Path, start_date: str | None = None) -> tuple[Path, Path]:
    """The real Complete Journey corpus before the evaluation cutoff (from `start_date` when given; hashing text
    vectors: no model download, fast) and a tiny checkpoint pre-trained on it for 3 steps: (corpus, checkpoint)."""
    from eval_suite.tasks import CUTOFF

    corpus, run = base / "cj", base / "run"
    window = ["--start-date", start_date] if start_date else []
    run_python(["-m", "data_prep", "build", "--source", "completejourney", *window, "--end-date", str(CUTOFF.date()),
                "--text-model", "hashing", "--cache-dir", base / "cache", "--out", corpus, "--quiet"])
    run_python(["train.py", "--data", corpus, "--preset", "tiny", "--output", run, "--max-steps", "3",
                "--batch-size", "16", "--max-eval-users", "16", "--report-to", "none"])
    return corpus, run / "final"


# -- tiny collator inputs (test_collator, test_host_sync) ------------------------------------------------------
TEXT_DIM = 6
NUM_TEXTS = 50


def make_feature(n, seed=0, unknown_fourth=False):
    """A user with n purchases whose ids encode the purchase index, so order can be checked."""
    rng = np.random.default_rng(seed)
    feature = {f: list(rng.integers(4, 9, n)) for f in CATEGORY_FIELDS + DATE_FIELDS}
    feature["category_1"] = [4 + (i % 5) for i in range(n)]
    feature["day"] = [4 + (i % 31) for i in range(n)]
    feature[TEXT_INDEX_FIELD] = [i % NUM_TEXTS for i in range(n)]
    if unknown_fourth:
        feature["category_4"] = [UNK_ID] * n
    feature["user_id"] = f"u{seed}"
    return feature


def text_matrix():
    g = torch.Generator().manual_seed(0)
    return torch.randn(NUM_TEXTS, TEXT_DIM, generator=g) + 3.0  # never all-zero rows


def tiny_config(**kwargs):
    values = dict(category_vocab_sizes=[9, 9, 9, 9], text_embedding_size=TEXT_DIM, year_vocab_size=9,
                  hidden_size=16, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=41)
    values.update(kwargs)
    return ShopperBertConfig(**values)


# -- tiny downstream inputs (test_eval_models, test_downstream_heads) ----------------------------------------------
METADATA = {"category_vocab_sizes": [10, 12, 14, 16], "text_embedding_size": 8, "year_vocab_size": 6,
            "month_vocab_size": 16, "day_vocab_size": 35, "weekday_vocab_size": 11, "hour_vocab_size": 28,
            "date_base_year": 2017}


def sequence_inputs(num_users=12, vectors=None, seed=0, min_events=0):
    """`UserInputs` of `num_users` random users over METADATA's vocabularies (some with no purchase by default)."""
    from eval_suite.models import UserInputs

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        n = int(rng.integers(min_events, 9))  # by default some users have no events at all
        row = {"user_id": str(u)}
        for name, size in zip(("category_1", "category_2", "category_3", "category_4", "year", "month", "day",
                               "weekday", "hour"), (10, 12, 14, 16, 6, 16, 35, 11, 28)):
            row[name] = rng.integers(4, size, n)
        row["text_idx"] = rng.integers(0, 5, n)
        rows.append(row)
    return UserInputs(np.array([str(u) for u in range(num_users)], dtype=object), vectors=vectors, rows=rows,
                      text_embeddings=rng.normal(size=(5, 8)).astype(np.float32), max_length=6)
