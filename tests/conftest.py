"""Test-wide settings (fully offline, a temporary HF_HOME, deterministic torch) and the fixtures several modules share:
the real Complete Journey corpus with a tiny checkpoint (built once per test run) and random miniature tasks."""

import os
import sys
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub / datasets / evaluate.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "HF_HOME" not in os.environ or not os.environ["HF_HOME"].startswith(tempfile.gettempdir()):
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="shopperbert-hf-home-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py, tests/tiny_data.py


@pytest.fixture(scope="session")
def corpus_and_model(tmp_path_factory):
    """The real Complete Journey corpus before the cutoff and a tiny checkpoint pre-trained on it for 3 steps, built
    once per test run: (corpus folder, checkpoint folder)."""
    from helpers import build_cj_corpus_and_tiny_model

    return build_cj_corpus_and_tiny_model(tmp_path_factory.mktemp("cj"))


@pytest.fixture(scope="session")
def month_corpus_and_model(tmp_path_factory):
    """The same for the month before the cutoff (the window ablation and the extras need a short history)."""
    from helpers import build_cj_corpus_and_tiny_model

    return build_cj_corpus_and_tiny_model(tmp_path_factory.mktemp("cj1m"), start_date="2017-09-02")


@pytest.fixture(scope="session")
def random_tables():
    """A random log in Complete Journey's table layout (80 households, 60 products, a year) for splits and
    negatives."""
    import numpy as np
    import pandas as pd

    TS = pd.Timestamp
    rng = np.random.default_rng(7)
    n_hh, n_prod, n_rows = 80, 60, 6000
    days = rng.integers(0, 364, n_rows)
    ts = TS("2017-01-02") + pd.to_timedelta(days, unit="D") + pd.to_timedelta(rng.integers(0, 86400, n_rows),
                                                                                unit="s")
    tx = pd.DataFrame({"household_id": rng.integers(1, n_hh + 1, n_rows), "store_id": rng.integers(1, 3, n_rows),
                       "product_id": rng.integers(1, n_prod + 1, n_rows),
                       "coupon_disc": np.where(rng.random(n_rows) < 0.02, 1.0, 0.0),
                       "week": days // 7 + 2, "transaction_timestamp": ts})
    types = [f"TYPE {i % 25}" for i in range(n_prod)]
    products = pd.DataFrame({"product_id": np.arange(1, n_prod + 1), "manufacturer_id": 1,
                             "department": ["NUTRITION" if i == n_prod - 1 else "GROCERY" for i in range(n_prod)],
                             "brand": "National", "product_category": [f"CAT {i % 7}" for i in range(n_prod)],
                             "product_type": types, "package_size": None})
    promos = pd.DataFrame([(p, s, w, "D") for s in (1, 2) for w in range(1, 55) for p in
                           rng.choice(np.arange(1, n_prod + 1), 40, replace=False)],
                          columns=["product_id", "store_id", "week", "mailer_location"])
    camp = pd.DataFrame({"campaign_id": [1, 2], "campaign_type": ["Type A", "Type B"],
                         "start_date": pd.to_datetime(["2017-03-01", "2017-09-01"]),
                         "end_date": pd.to_datetime(["2017-05-01", "2017-12-31"])})
    coupons = pd.DataFrame({"coupon_upc": np.arange(1000, 1300) // 2, "product_id": rng.integers(1, n_prod + 1, 300),
                            "campaign_id": np.where(np.arange(300) < 100, 1, 2)})
    red = pd.DataFrame({"household_id": rng.integers(1, n_hh + 1, 400),
                        "coupon_upc": coupons["coupon_upc"].to_numpy()[rng.integers(100, 300, 400)],
                        "campaign_id": 2,
                        "redemption_date": TS("2017-09-01") + pd.to_timedelta(rng.integers(0, 120, 400), unit="D")})
    demo = pd.DataFrame({"household_id": np.arange(1, n_hh + 1),
                         "kids_count": rng.choice(["0", "1", "2", "3+"], n_hh)})
    return {"transactions": tx, "products": products, "demographics": demo, "promotions": promos,
            "campaign_descriptions": camp, "coupons": coupons, "coupon_redemptions": red}


@pytest.fixture(scope="session")
def random_tasks(random_tables):
    from eval_suite import tasks as T

    return T.build_all(random_tables)
