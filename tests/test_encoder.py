"""UserEncoder / `python -m modeling_shopperbert.encode`: batching invariance, keys, pooling, bad inputs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_shopperbert import UserEncoder, read_user_embeddings
from helpers import run_python, save_tiny_model
from tiny_data import write_tiny_prepared_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny pre-training model saved as train.py saves it (with the data's vocab and metadata)."""
    base = tmp_path_factory.mktemp("enc")
    data = write_tiny_prepared_data(base / "data", num_train=40, num_validation=30, max_len=90)
    folder = save_tiny_model(base / "model", data, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    return folder, data


def test_batch_size_does_not_change_embeddings(saved_model):
    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder, data=data)
    users = encoder.data.dataset["validation"]
    one = encoder.encode(users, batch_size=1, show_progress_bar=False)
    many = encoder.encode(users, batch_size=64)
    assert one.shape == (30, 32) and isinstance(one, np.ndarray)
    np.testing.assert_allclose(one, many, atol=1e-5, rtol=1e-5)


def test_order_keys_and_parquet(saved_model, tmp_path):
    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder, data=data)
    users = encoder.data.dataset["validation"]
    out = tmp_path / "users.parquet"
    emb = encoder.encode(users, batch_size=7, output_path=out)
    ids, vectors = read_user_embeddings(out)
    assert ids == [str(u) for u in users["user_id"]]
    np.testing.assert_array_equal(vectors, emb)
    # each row is that user's own embedding: encoding user 5 alone gives row 5
    alone = encoder.encode(users.select([5]))
    np.testing.assert_allclose(alone[0], emb[5], atol=1e-5, rtol=1e-5)


def test_representations_and_normalisation(saved_model):
    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder, data=data)
    users = encoder.data.dataset["validation"].select(range(4))
    mean = encoder.encode(users, convert_to_tensor=True)
    cls = encoder.encode(users, user_representation="cls", convert_to_tensor=True)
    assert torch.is_tensor(mean) and not torch.allclose(mean, cls)
    normed = encoder.encode(users, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-5)
    # the mean representation is the mean of the purchase tokens of the model's last hidden state
    from modeling_shopperbert.collator import ShopperBertCollator

    batch = ShopperBertCollator.from_config(encoder.config, encoder.text_embeddings)([users[0]])
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state[0, 1:]
    torch.testing.assert_close(mean[0], hidden.mean(0), atol=1e-5, rtol=1e-5)


def test_bad_inputs(saved_model, tmp_path):
    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder)
    users = [{"user_id": "1"}]
    with pytest.raises(ValueError, match="text_embeddings"):
        encoder.encode(users)
    encoder = UserEncoder.from_pretrained(folder, data=data)
    with pytest.raises(ValueError, match="user_representation"):
        encoder.encode(encoder.data.dataset["validation"], user_representation="max")
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(encoder.data.dataset["validation"], batch_size=0)
    other = write_tiny_prepared_data(tmp_path / "other")
    import json

    meta = json.loads((other / "metadata.json").read_text())
    meta["category_vocab_sizes"][0] += 1
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="category_vocab_sizes"):
        UserEncoder.from_pretrained(folder, data=other)


def test_command_line(saved_model, tmp_path):
    folder, data = saved_model
    out = tmp_path / "cli.parquet"
    result = run_python(["-m", "modeling_shopperbert.encode", "--model", folder, "--data", data, "--split",
                         "validation", "--out", out, "--batch-size", "8"], timeout=300)
    ids, vectors = read_user_embeddings(out)
    assert len(ids) == 30 and vectors.shape == (30, 32) and "users/s" in result.stdout
    bad = run_python(["-m", "modeling_shopperbert.encode", "--model", tmp_path / "none", "--data", data, "--out", out],
                     timeout=300, check=False)
    assert bad.returncode == 2 and "no such folder" in bad.stderr


def test_raw_logs_keep_input_order_and_sentence_transformers_arguments(saved_model):
    """Users come back in the order of their first row (not sorted by id), with their ids on request;
    `normalize_embeddings` is accepted; pooling other than the checkpoint's own warns."""
    import pandas as pd

    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder, data=data)
    rows = []
    for user, n in (("2", 3), ("10", 2), ("1", 4)):
        for i in range(n):
            rows.append({"user_id": user, "timestamp": f"2017-03-0{i + 1} 10:00:00", "category_1": "category_1-1",
                         "category_2": f"category_2-{i}", "category_3": "category_3-2", "category_4": "category_4-1",
                         "description": f"tiny product description {int(user) + i}"})
    logs = pd.DataFrame(rows)
    ids, vectors = encoder.encode(logs, return_user_ids=True)
    assert ids == ["2", "10", "1"] and vectors.shape == (3, 32)
    alone = encoder.encode(logs[logs["user_id"] == "10"])
    np.testing.assert_allclose(vectors[1], alone[0], atol=1e-5)
    unit = encoder.encode(logs, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    with pytest.warns(UserWarning, match="pre-trained with 'mean'"):
        encoder.encode(logs, user_representation="cls")


def test_hidden_layer_pools_that_layer(saved_model):
    """`hidden_layer=k` pools transformers' `hidden_states[k]`: the last one is the default user vector, the first the
    input embeddings; out-of-range layers are refused."""
    folder, data = saved_model
    encoder = UserEncoder.from_pretrained(folder, data=data)
    users = encoder.data.dataset["validation"]
    default = encoder.encode(users, show_progress_bar=False)
    np.testing.assert_allclose(encoder.encode(users, hidden_layer=2), default, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(users, hidden_layer=-1), default, atol=1e-6)
    first = encoder.encode(users, hidden_layer=0)
    assert first.shape == default.shape and not np.allclose(first, default, atol=1e-3)
    for bad in (3, -4):
        with pytest.raises(ValueError, match=r"hidden_layer must be in \[-3, 2\]"):
            encoder.encode(users, hidden_layer=bad)
