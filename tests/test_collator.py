"""Collator tests: padding/truncation, masking statistics, Algorithm 1 augmentation, reproducibility, bad inputs."""

import math

import numpy as np
import pytest
import torch

from modeling_shopperbert import (
    CLS_ID,
    MASK_ID,
    PAD_ID,
    UNK_ID,
    ShopperBertForMaskedPurchasePrediction,
)
from modeling_shopperbert.collator import (
    DataCollatorForMaskedPurchasePrediction,
    ShopperBertCollator,
    augment_indices,
    crop_indices,
    sample_key,
    shuffle_indices,
)
from modeling_shopperbert.configuration_shopperbert import TEXT_INDEX_FIELD

from helpers import NUM_TEXTS, TEXT_DIM, make_feature, text_matrix, tiny_config


# -- padding and truncation -------------------------------------------------------------------------------------------
def test_padding_layout_and_text_gather():
    collator = ShopperBertCollator(text_matrix(), max_length=10)
    batch = collator([make_feature(4, 0), make_feature(7, 1)])
    assert batch["category_ids"].shape == (2, 8, 4) and batch["date_ids"].shape == (2, 8, 5)
    assert batch["text_embeds"].shape == (2, 8, TEXT_DIM)
    assert (batch["category_ids"][:, 0] == CLS_ID).all() and (batch["date_ids"][:, 0] == CLS_ID).all()
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 8]
    assert (batch["category_ids"][0, 5:] == PAD_ID).all()
    assert (batch["text_embeds"][:, 0] == 0).all() and (batch["text_embeds"][0, 5:] == 0).all()
    torch.testing.assert_close(batch["text_embeds"][1, 1:], text_matrix()[torch.arange(7)])


def test_truncation_keeps_most_recent_purchases():
    collator = ShopperBertCollator(text_matrix(), max_length=5)
    batch = collator([make_feature(12)])
    assert batch["category_ids"].shape[1] == 6
    assert batch["date_ids"][0, 1:, 2].tolist() == [4 + i for i in range(7, 12)]  # day ids of purchases 7..11


def test_pad_to_multiple_of():
    batch = ShopperBertCollator(text_matrix(), pad_to_multiple_of=8)([make_feature(3)])
    assert batch["category_ids"].shape[1] == 8


def test_collator_batch_runs_through_model():
    config = tiny_config()
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, text_matrix(), seed=1)
    batch = collator([make_feature(n, n) for n in (3, 30, 45)])
    assert batch["category_ids"].shape[1] == 41  # truncated to config.max_purchases = 40
    out = ShopperBertForMaskedPurchasePrediction(config)(**batch)
    assert torch.isfinite(out.loss)


# -- masking ------------------------------------------------------------------------------------------------------
def test_masking_statistics():
    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), max_length=200, augmentation_probability=0.0,
                                                       seed=0)
    features = [make_feature(200, s) for s in range(8)]
    selected = purchases = masked = randomised = kept = 0
    for epoch in range(25):
        collator.set_epoch(epoch)
        batch = collator(features)
        original = collator._pad([collator._read(f, i) for i, f in enumerate(features)])
        sel = batch["masked_positions"]
        is_purchase = original["category_ids"][..., 0] > CLS_ID
        assert not (sel & ~is_purchase).any(), "[CLS] or padding selected"
        selected += int(sel.sum())
        purchases += int(is_purchase.sum())
        now = torch.cat([batch["category_ids"], batch["date_ids"]], -1)[sel]
        before = torch.cat([original["category_ids"], original["date_ids"]], -1)[sel]
        is_mask = (now == MASK_ID).all(-1)
        is_same = (now == before).all(-1)
        masked += int(is_mask.sum())
        kept += int(is_same.sum())
        randomised += int((~is_mask & ~is_same).sum())
    rate = selected / purchases
    assert abs(rate - 0.15) < 0.01, rate
    # a random donor can equal the original (rare); "kept" absorbs those, so allow a little slack
    assert abs(masked / selected - 0.8) < 0.02
    assert abs(randomised / selected - 0.1) < 0.02
    assert abs(kept / selected - 0.1) < 0.02


def test_masked_tokens_hide_product_and_date_and_labels_hold_originals():
    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), max_length=100, augmentation_probability=0.0,
                                                       seed=3)
    features = [make_feature(60, 0), make_feature(20, 1, unknown_fourth=True)]
    batch = collator(features)
    original = collator._pad([collator._read(f, i) for i, f in enumerate(features)])
    sel = batch["masked_positions"]
    labels = batch["labels"]
    assert labels.shape == (2, batch["category_ids"].shape[1], 9)
    assert (labels[~sel] == -100).all()
    ids = torch.cat([original["category_ids"], original["date_ids"]], -1)
    expected = ids[sel].clone()
    expected[..., :4][expected[..., :4] == UNK_ID] = -100
    assert torch.equal(labels[sel], expected)
    assert (labels[1][sel[1]][:, 3] == -100).all(), "missing fourth category must not be a label"
    is_mask = (batch["category_ids"][..., 0] == MASK_ID)
    assert is_mask.any()
    assert (batch["date_ids"][is_mask] == MASK_ID).all() and (batch["category_ids"][is_mask] == MASK_ID).all()
    assert (batch["text_embeds"][is_mask] == 0).all()


def test_random_replacement_comes_from_the_batch():
    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), max_length=100, augmentation_probability=0.0,
                                                       mask_replace_prob=0.0, random_replace_prob=1.0, seed=5)
    features = [make_feature(50, 0), make_feature(50, 1)]
    batch = collator(features)
    original = collator._pad([collator._read(f, i) for i, f in enumerate(features)])
    pool = {tuple(row.tolist()) for row in torch.cat([original["category_ids"], original["date_ids"]], -1)
            [original["category_ids"][..., 0] > CLS_ID]}
    replaced = torch.cat([batch["category_ids"], batch["date_ids"]], -1)[batch["masked_positions"]]
    assert all(tuple(r.tolist()) in pool for r in replaced)


def test_every_user_gets_at_least_one_masked_purchase():
    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), augmentation_probability=0.0, seed=0)
    batch = collator([make_feature(1, s) for s in range(20)])
    assert batch["masked_positions"].sum(1).tolist() == [1] * 20


# -- Algorithm 1 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 3, 10, 37, 350])
def test_crop_keeps_order_and_length_bounds(length):
    rng = np.random.default_rng(length)
    for _ in range(300):
        idx = crop_indices(length, rng)
        assert np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))), "crop must be contiguous, in order"
        assert math.ceil(0.3 * length) <= len(idx) <= length
        assert 0 <= idx[0] <= length - math.ceil(0.3 * length)


def test_crop_covers_the_range():
    rng = np.random.default_rng(0)
    lengths = [len(crop_indices(100, rng)) for _ in range(2000)]
    assert min(lengths) <= 32 and max(lengths) >= 95


@pytest.mark.parametrize("length", [2, 3, 10, 37, 350])
def test_shuffle_permutes_only_one_window(length):
    rng = np.random.default_rng(length)
    window = max(1, round(0.3 * length))
    for _ in range(200):
        idx = shuffle_indices(length, rng)
        assert sorted(idx.tolist()) == list(range(length))
        moved = np.flatnonzero(idx != np.arange(length))
        if len(moved):
            assert moved[-1] - moved[0] < window, "changes must lie within one window of 30%"
            window_start = moved[0]
            assert set(idx[moved].tolist()) <= set(range(max(0, moved[-1] - window + 1), window_start + window))


def test_augmentation_rates():
    rng = np.random.default_rng(0)
    crops = sum(len(augment_indices(100, rng)) < 100 for _ in range(4000))
    # a crop keeps all 100 purchases with probability ~1/71 per start position 0; a shuffle never shortens
    assert abs(crops / 4000 - 0.5) < 0.04

    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), max_length=100, mlm_probability=0.0,
                                                       augmentation_probability=0.3, crop_probability=1.0, seed=0)
    feats = [make_feature(100, s) for s in range(50)]
    changed = 0
    for epoch in range(20):
        collator.set_epoch(epoch)
        batch = collator(feats)
        changed += int((batch["attention_mask"].sum(1) < 101).sum())
    assert abs(changed / 1000 - 0.3) < 0.05


def test_augmented_sequence_moves_all_fields_together():
    collator = DataCollatorForMaskedPurchasePrediction(text_matrix(), max_length=100, mlm_probability=0.0,
                                                       augmentation_probability=1.0, crop_probability=0.0, seed=2)
    feature = make_feature(30)
    batch = collator([feature])
    keep = ~batch["masked_positions"][0, 1:31]  # one purchase per user is always selected for prediction
    day = (batch["date_ids"][0, 1:31, 2] - 4)[keep]  # day encodes the purchase index
    cat = (batch["category_ids"][0, 1:31, 0] - 4)[keep]
    text = batch["text_embeds"][0, 1:31][keep]
    assert not torch.equal(day, torch.arange(30)[keep]), "the window was not shuffled"
    assert torch.equal(cat, day % 5)
    torch.testing.assert_close(text, text_matrix()[day % NUM_TEXTS])


def test_no_augmentation_flag():
    config = tiny_config()
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, text_matrix(), augmentation=False)
    assert collator.augmentation_probability == 0.0
    assert DataCollatorForMaskedPurchasePrediction.from_config(config, text_matrix()).augmentation_probability == 0.3


# -- reproducibility ----------------------------------------------------------------------------------------------
def test_masks_are_a_function_of_seed_epoch_and_user():
    feats = [make_feature(30, s) for s in range(4)]
    a = DataCollatorForMaskedPurchasePrediction(text_matrix(), seed=7)
    b = DataCollatorForMaskedPurchasePrediction(text_matrix(), seed=7)
    first = a(feats)
    for key, value in b(feats).items():
        assert torch.equal(value, first[key]), key
    # the same user gets the same selection in another batch (another process / worker / resumed run)
    alone = a(feats[2:3])
    n = int(alone["attention_mask"].sum())
    assert torch.equal(alone["masked_positions"][0, :n], first["masked_positions"][2, :n])
    assert torch.equal(alone["labels"][0, :n], first["labels"][2, :n])
    # a new epoch or another seed draws new masks
    a.set_epoch(1)
    assert not torch.equal(a(feats)["masked_positions"], first["masked_positions"])
    c = DataCollatorForMaskedPurchasePrediction(text_matrix(), seed=8)
    assert not torch.equal(c(feats)["masked_positions"], first["masked_positions"])


def test_sample_key_uses_user_id_or_content():
    f = make_feature(5, 0)
    g = dict(f, user_id="other")
    assert sample_key(f) != sample_key(g)
    assert sample_key(f) == sample_key(dict(f))
    h = {k: v for k, v in f.items() if k != "user_id"}
    assert sample_key(h) == sample_key(dict(h)) and sample_key(h) != sample_key(f)


# -- bad inputs ---------------------------------------------------------------------------------------------------
def test_missing_column_raises():
    feature = make_feature(5)
    del feature["hour"]
    with pytest.raises(ValueError, match=r"feature 0 lacks the columns \['hour'\]"):
        ShopperBertCollator(text_matrix())([feature])


def test_unequal_lengths_raise():
    feature = make_feature(5)
    feature["month"] = feature["month"][:3]
    with pytest.raises(ValueError, match="differ in length"):
        ShopperBertCollator(text_matrix())([feature])


def test_text_index_out_of_range_raises():
    feature = make_feature(5)
    feature[TEXT_INDEX_FIELD][2] = NUM_TEXTS
    with pytest.raises(ValueError, match=f"text_idx {NUM_TEXTS} is outside"):
        ShopperBertCollator(text_matrix())([feature])


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="empty list"):
        ShopperBertCollator(text_matrix())([])
    with pytest.raises(ValueError, match="no purchases"):
        DataCollatorForMaskedPurchasePrediction(text_matrix())([make_feature(0)])


def test_text_dimension_must_match_config():
    with pytest.raises(ValueError, match="text_embedding_size"):
        ShopperBertCollator.from_config(tiny_config(text_embedding_size=7), text_matrix())


def test_bad_rates_raise():
    with pytest.raises(ValueError, match="mlm_probability"):
        DataCollatorForMaskedPurchasePrediction(text_matrix(), mlm_probability=2.0)
    with pytest.raises(ValueError, match="must not exceed 1"):
        DataCollatorForMaskedPurchasePrediction(text_matrix(), mask_replace_prob=0.9, random_replace_prob=0.3)
    with pytest.raises(ValueError, match="max_length"):
        ShopperBertCollator(text_matrix(), max_length=0)
