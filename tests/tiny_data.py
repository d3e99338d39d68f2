"""A tiny prepared-data folder in data_prep's output format, written without data_prep, for fast model tests.

Purchases have learnable structure (finer category levels follow the coarse one; hours cluster per user) so that a
tiny model's loss falls.
"""

import json
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from safetensors.numpy import save_file

from modeling_shopperbert.configuration_shopperbert import (
    CATEGORY_FIELDS,
    DATE_FIELDS,
    NUM_SPECIAL_IDS,
    SPECIAL_TOKENS,
)

CATEGORY_SIZES = [6, 12, 20, 30]  # real values per level (ids start at NUM_SPECIAL_IDS)
TEXT_DIM = 16


def _user(rng, user_id, n):
    taste = rng.integers(0, CATEGORY_SIZES[0], size=2)
    c1 = rng.choice(taste, size=n)
    c2 = (c1 * 2 + rng.integers(0, 2, n)) % CATEGORY_SIZES[1]
    c3 = (c2 + rng.integers(0, 2, n) * CATEGORY_SIZES[1]) % CATEGORY_SIZES[2]
    c4 = (c3 + rng.integers(0, 2, n) * CATEGORY_SIZES[2]) % CATEGORY_SIZES[3]
    start = 1_483_228_800 + int(rng.integers(0, 30 * 86400))  # January 2017
    ts = np.sort(start + rng.integers(0, 200 * 86400, n)).astype(np.int64)
    dt = ts.astype("datetime64[s]")
    months = dt.astype("datetime64[M]").astype(int) % 12
    days = (dt - dt.astype("datetime64[M]")).astype("timedelta64[D]").astype(int)
    weekday = ((dt.astype("datetime64[D]").astype(int) + 3) % 7)  # 1970-01-01 was a Thursday
    hour = np.full(n, int(rng.integers(8, 20))) + rng.integers(0, 2, n)
    row = {"user_id": str(user_id), "num_purchases": n, "timestamp": ts.tolist()}
    for name, values in zip(CATEGORY_FIELDS, (c1, c2, c3, c4)):
        row[name] = (values + NUM_SPECIAL_IDS).astype(np.int32).tolist()
    for name, values in zip(DATE_FIELDS, (np.zeros(n, int), months, days, weekday, hour)):
        row[name] = (values + NUM_SPECIAL_IDS).astype(np.int32).tolist()
    row["text_idx"] = (c4 % 25).astype(np.int32).tolist()
    return row


def write_tiny_prepared_data(path, num_train=48, num_validation=16, min_len=5, max_len=60, seed=0) -> Path:
    path = Path(path)
    rng = np.random.default_rng(seed)
    rows = [_user(rng, 1000 + i, int(rng.integers(min_len, max_len + 1))) for i in range(num_train + num_validation)]
    DatasetDict({"train": Dataset.from_list(rows[:num_train]),
                 "validation": Dataset.from_list(rows[num_train:])}).save_to_disk(str(path / "dataset"))
    embeddings = rng.normal(size=(25, TEXT_DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    save_file({"embeddings": embeddings}, str(path / "text_embeddings.safetensors"))
    vocab = {name: list(SPECIAL_TOKENS) + [f"{name}-{i}" for i in range(size)]
             for name, size in zip(CATEGORY_FIELDS, CATEGORY_SIZES)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    import pandas as pd

    pd.DataFrame({"description": [f"tiny product description {i}" for i in range(25)]}).to_parquet(
        path / "descriptions.parquet")
    metadata = {
        "format_version": 1, "source": "tiny-test", "text_model": "random", "text_embedding_size": TEXT_DIM,
        "category_vocab_sizes": [size + NUM_SPECIAL_IDS for size in CATEGORY_SIZES],
        "date_base_year": 2017, "year_vocab_size": NUM_SPECIAL_IDS + 1, "month_vocab_size": 16,
        "day_vocab_size": 35, "weekday_vocab_size": 11, "hour_vocab_size": 28,
    }
    (path / "metadata.json").write_text(json.dumps(metadata))
    return path
