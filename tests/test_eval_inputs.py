"""`eval_suite.inputs.embed_users`: the one place that encodes households with a checkpoint for `run`, `costs` and
`visualize` (zero vectors for households without purchases)."""

import json

import numpy as np
import pytest

from eval_suite.inputs import SequenceInputs, embed_users
from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, UserEncoder
from tiny_data import write_tiny_prepared_data


@pytest.fixture(scope="module")
def model_and_purchases(tmp_path_factory):
    """A tiny saved model and five users' purchase sequences, the second one empty."""
    base = tmp_path_factory.mktemp("embed")
    data = write_tiny_prepared_data(base / "data", num_train=8, num_validation=4, max_len=40)
    config = ShopperBertConfig.from_data_metadata(json.loads((data / "metadata.json").read_text()), hidden_size=32,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  max_position_embeddings=65)
    folder = base / "model"
    ShopperBertForMaskedPurchasePrediction(config).save_pretrained(folder)
    for name in ("metadata.json", "vocab.json"):
        (folder / name).write_text((data / name).read_text())
    encoder = UserEncoder.from_pretrained(folder, data=data)
    table = encoder.data.dataset["train"].with_format("numpy")
    rows = [dict(table[i]) for i in range(4)]
    rows.insert(1, {k: v[:0] for k, v in rows[0].items() if isinstance(v, np.ndarray) and v.ndim == 1})
    ids = np.array(["a", "nobody", "b", "c", "d"], dtype=object)
    return folder, encoder, SequenceInputs(ids, rows, encoder.text_embeddings)


def test_embed_users_zero_vector_for_empty_users(model_and_purchases):
    folder, encoder, purchases = model_and_purchases
    vectors = embed_users(folder, purchases)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert not vectors[1].any() and all(vectors[i].any() for i in (0, 2, 3, 4))
    expected = encoder.encode([purchases.rows[i] for i in (0, 2, 3, 4)], batch_size=64, show_progress_bar=False)
    np.testing.assert_array_equal(vectors[[0, 2, 3, 4]], expected)
    # a subset, in the order asked, from a loaded encoder
    subset = embed_users(encoder, purchases, ["c", "nobody", "a"])
    np.testing.assert_allclose(subset, vectors[[3, 1, 0]], atol=1e-5, rtol=1e-5)


def test_embed_users_names_unknown_users(model_and_purchases):
    _, encoder, purchases = model_and_purchases
    with pytest.raises(KeyError, match=r"1 users have no purchase sequence .*e\.g\. \['stranger'\]"):
        embed_users(encoder, purchases, ["a", "stranger"])
