"""The pre-training options beyond the paper's defaults: the input combination, the user-level contrastive loss with
two views per user, and the no-learning rules that judge masked purchase prediction."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, ShopperBertModel
from modeling_shopperbert.collator import DataCollatorForMaskedPurchasePrediction
from modeling_shopperbert.configuration_shopperbert import CLS_ID, MASK_ID, NUM_SPECIAL_IDS, PAD_ID
from modeling_shopperbert.modeling_shopperbert_layers import info_nce_loss, profile_loss

SIZES = [10, 20, 30, 40]


def tiny_config(**kwargs):
    values = dict(category_vocab_sizes=SIZES, text_embedding_size=8, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=65, year_vocab_size=7,
                  hidden_dropout_prob=0.0)
    values.update(kwargs)
    return ShopperBertConfig(**values)


def features(num_users=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        n = int(rng.integers(8, 30))
        row = {"user_id": str(user), "text_idx": rng.integers(0, 50, n)}
        for name, size in zip(("category_1", "category_2", "category_3", "category_4"), SIZES):
            row[name] = rng.integers(NUM_SPECIAL_IDS, size, n)
        for name, size in zip(("year", "month", "day", "weekday", "hour"), (7, 16, 35, 11, 28)):
            row[name] = rng.integers(NUM_SPECIAL_IDS, size, n)
        rows.append(row)
    return rows


EMBEDDINGS = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)


# -- configuration --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("embedding_combination", "sum"), ("contrastive_weight", -1.0),
                                         ("contrastive_weight", math.nan), ("contrastive_temperature", 0.0),
                                         ("contrastive_temperature", math.inf), ("profile_weight", -0.5),
                                         ("profile_weight", math.inf), ("profile_weight", True)])
def test_config_rejects_bad_objective_options(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


# -- input combination ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combination", ["mean", "grouped"])
def test_embedding_combination_follows_its_formula(combination):
    model = ShopperBertModel(tiny_config(embedding_combination=combination)).eval()
    batch = DataCollatorForMaskedPurchasePrediction.from_config(model.config, EMBEDDINGS, augmentation=False)(
        features(2))
    emb = model.embeddings
    cat, date, text = batch["category_ids"], batch["date_ids"], batch["text_embeds"]
    is_purchase = (cat[..., 0] > CLS_ID).unsqueeze(-1)
    parts = [e(cat[..., i]) for i, e in enumerate(emb.category_embeddings)]
    parts.append(emb.text_projection(text * is_purchase))
    x_prod = emb.product_projection(torch.cat(parts, dim=-1))
    dates = [e(date[..., i]) for i, e in enumerate(emb.date_embeddings)]
    position = emb.position_embeddings(torch.arange(cat.shape[1]))[None]
    if combination == "mean":
        expected = (x_prod + sum(dates) + position) / 7
    else:
        expected = (x_prod + sum(dates) / 5 + position) / 3
    got = emb(cat, date, text)
    torch.testing.assert_close(got, emb.LayerNorm(expected), atol=1e-5, rtol=1e-5)


# -- contrastive loss -----------------------------------------------------------------------------------------------
def test_info_nce_matches_hand_computation():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.1, 1.0]]), dim=-1)
    view_index = torch.tensor([0, 1, 0, 1])
    tau = 0.5
    sim = (z @ z.T) / tau
    expected = []
    for i, partner in enumerate([2, 3, 0, 1]):
        others = [j for j in range(4) if j != i]
        expected.append(-(sim[i, partner] - torch.logsumexp(sim[i, others], dim=0)))
    torch.testing.assert_close(info_nce_loss(z, view_index, tau), torch.stack(expected).mean())


def test_info_nce_ignores_rows_without_a_partner():
    z = F.normalize(torch.randn(5, 4), dim=-1)
    paired = info_nce_loss(z[:4], torch.tensor([0, 1, 0, 1]), 0.1)
    with_lone = info_nce_loss(z, torch.tensor([0, 1, 0, 1, 7]), 0.1)
    assert torch.isfinite(with_lone) and with_lone.item() != 0.0
    assert not torch.allclose(paired, with_lone)  # the lone row is a negative for the others, not a term itself


def test_two_view_collator_pairs_rows_and_is_deterministic():
    config = tiny_config(contrastive_weight=1.0)
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, EMBEDDINGS, seed=3)
    batch = collator(features(4))
    assert batch["category_ids"].shape[0] == 8
    assert batch["view_index"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    again = collator(features(4))
    for key in batch:
        torch.testing.assert_close(batch[key], again[key])
    # the two views of a user differ (augmentation and masks drawn separately)
    assert not torch.equal(batch["category_ids"][0], batch["category_ids"][4])
    # a user's views do not depend on which batch it lands in
    alone = collator(features(4)[1:2])
    n = int((alone["attention_mask"][0]).sum())
    torch.testing.assert_close(alone["category_ids"][0, :n], batch["category_ids"][1, :n])


def test_one_view_collator_is_unchanged_by_the_option():
    config = tiny_config()
    one = DataCollatorForMaskedPurchasePrediction.from_config(config, EMBEDDINGS, seed=3)(features(3))
    assert "view_index" not in one
    assert one["category_ids"].shape[0] == 3
    with pytest.raises(ValueError, match="num_views"):
        DataCollatorForMaskedPurchasePrediction(EMBEDDINGS, num_views=3)


def test_contrastive_loss_is_added_with_its_weight():
    config = tiny_config(contrastive_weight=0.5, contrastive_temperature=0.2)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    batch = DataCollatorForMaskedPurchasePrediction.from_config(config, EMBEDDINGS)(features(4))
    out = model(**batch)
    mpp = out.head_losses.mean()  # every head has labels in this batch
    torch.testing.assert_close(out.loss, mpp + 0.5 * out.contrastive_loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mpp_only_model_has_no_contrastive_head(tmp_path):
    model = ShopperBertForMaskedPurchasePrediction(tiny_config())
    assert model.contrastive is None
    assert not any(name.startswith("contrastive") for name in model.state_dict())
    with_head = ShopperBertForMaskedPurchasePrediction(tiny_config(contrastive_weight=1.0))
    with_head.save_pretrained(tmp_path)
    base = ShopperBertModel.from_pretrained(tmp_path)
    assert base.config.contrastive_weight == 1.0


# -- the profile loss --------------------------------------------------------------------------------------------------
def test_profile_loss_is_the_bce_of_the_categories_each_user_bought():
    S, V = NUM_SPECIAL_IDS, SIZES[1]  # category_2 ids S..V-1 are real categories
    category = torch.full((2, 5, 4), PAD_ID)
    category[:, 0] = CLS_ID
    category[0, 1:4, 1] = torch.tensor([S, S + 2, MASK_ID])  # the masked purchase was S + 5
    category[1, 1:3, 1] = torch.tensor([S + 2, 3])  # 3 = [UNK]: not a category
    labels = torch.full((2, 5, 9), -100)
    labels[0, 3, 1] = S + 5
    logits = torch.randn(2, V)
    bought = torch.zeros(2, V - S)
    bought[0, [0, 2, 5]] = 1.0
    bought[1, 2] = 1.0
    expected = F.binary_cross_entropy_with_logits(logits[:, S:], bought)
    torch.testing.assert_close(profile_loss(logits, category, labels), expected)
    # without labels the masked purchase is unknown: its category is not in the profile
    bought[0, 5] = 0.0
    torch.testing.assert_close(profile_loss(logits, category, None),
                               F.binary_cross_entropy_with_logits(logits[:, S:], bought))


def test_profile_loss_is_added_with_its_weight_and_trains_its_head(tmp_path):
    config = tiny_config(profile_weight=0.5)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    assert model.profile.out_features == SIZES[1]
    batch = DataCollatorForMaskedPurchasePrediction.from_config(config, EMBEDDINGS)(features(4))
    out = model(**batch)
    torch.testing.assert_close(out.loss, out.head_losses.mean() + 0.5 * out.profile_loss)
    expected = profile_loss(model.profile(out.user_embedding), batch["category_ids"], batch["labels"])
    torch.testing.assert_close(out.profile_loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(**{k: v for k, v in batch.items() if k != "labels"}).profile_loss is None  # encoding: no loss
    assert ShopperBertForMaskedPurchasePrediction(tiny_config()).profile is None  # 0: no head, the keys as before
    model.save_pretrained(tmp_path)
    assert ShopperBertModel.from_pretrained(tmp_path).config.profile_weight == 0.5


# -- the rules that judge MPP ---------------------------------------------------------------------------------------
def test_user_and_basket_mode_rules():
    import train

    A, B, C = 5, 6, 7
    # [CLS], then purchases: A (day 1), A (day 1), B (day 2), masked purchase of day 2 (truly C), padding
    category = torch.tensor([[CLS_ID, A, A, B, MASK_ID, PAD_ID]])
    category_ids = category.unsqueeze(-1).repeat(1, 1, 4)
    days = torch.tensor([[CLS_ID, 5, 5, 6, MASK_ID, PAD_ID]])
    date_ids = torch.stack([torch.full_like(days, 4), torch.full_like(days, 4), days, torch.full_like(days, 4),
                            torch.full_like(days, 10)], dim=-1)
    date_ids[0, 0] = CLS_ID
    date_ids[0, 4] = MASK_ID
    date_ids[0, 5] = PAD_ID
    labels = torch.full((1, 6, 9), -100)
    labels[0, 4] = torch.tensor([C, C, C, C, 4, 4, 6, 4, 10])  # same day and hour as the B purchase
    batch = {"category_ids": category_ids, "date_ids": date_ids, "labels": labels,
             "masked_positions": torch.tensor([[False, False, False, False, True, False]])}
    user_mode, basket_mode = train.rule_predictions(batch, 1, fallback=9)
    assert user_mode.tolist() == [A] and basket_mode.tolist() == [B]
    labels[0, 4, 6] = 9  # another day: no basket mate, the basket rule falls back to the user's mode
    _, basket_mode = train.rule_predictions(batch, 1, fallback=9)
    assert basket_mode.tolist() == [A]


def test_diagnostics_table_compares_with_the_strongest_rule():
    import train

    results = {"eval/accuracy_category_2": 0.12, "eval/prior_accuracy_category_2": 0.05,
               "eval/user_mode_accuracy_category_2": 0.08, "eval/basket_mode_accuracy_category_2": 0.10,
               "eval/accuracy_category_3": 0.06, "eval/prior_accuracy_category_3": 0.02,
               "eval/user_mode_accuracy_category_3": 0.06, "eval/basket_mode_accuracy_category_3": 0.07}
    table = train.mpp_diagnostics_table(results).splitlines()
    assert table[2].startswith("| category_2 | 0.1200") and table[2].endswith("| yes |")
    assert table[3].endswith("| no |")


def test_rule_rows_verdicts():
    from modeling_shopperbert.mpp_rules import rule_rows, rule_table

    results = {"eval/accuracy_category_3": 0.076, "eval/prior_accuracy_category_3": 0.025,
               "eval/user_mode_accuracy_category_3": 0.061, "eval/basket_mode_accuracy_category_3": 0.078,
               "eval/accuracy_year": 1.0, "eval/prior_accuracy_year": 1.0,
               "eval/accuracy_hour": 0.18, "eval/prior_accuracy_hour": 0.10, "eval/count_hour": 9105}
    rows = {r["head"]: r for r in rule_rows(results, ("category_3", "year", "hour", "month"))}
    assert set(rows) == {"category_3", "year", "hour"}  # a head without results is left out
    assert rows["category_3"]["verdict"] == "no" and rows["year"]["verdict"] == "tie (one class)"
    assert rows["hour"]["verdict"] == "yes" and rows["hour"]["user_mode"] is None
    table = rule_table(results, ("category_3", "hour"), bold_no=True, with_count=True).splitlines()
    assert table[2].endswith("| **no** | – |") and table[3].endswith("| yes | 9105 |")
