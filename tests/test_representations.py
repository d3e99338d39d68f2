"""Representation baselines (eval_suite/representations.py) on hand-made purchase sequences, and the linear probe
(eval_suite/probe.py) end to end on tiny synthetic tasks: fast, no checkpoint, no Complete Journey."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eval_suite import probe as P
from eval_suite import representations as R
from eval_suite.inputs import SequenceInputs
from eval_suite.tasks import Task
from modeling_shopperbert.configuration_shopperbert import NUM_SPECIAL_IDS

S = NUM_SPECIAL_IDS


def purchases(num_users=30, seed=0, empty=(3,)) -> SequenceInputs:
    """Users with 1-12 purchases over 8 product categories (ids S..S+7; now and then [UNK]) and 10 texts; the users
    in `empty` have none."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        n = 0 if u in empty else int(rng.integers(1, 13))
        category = rng.integers(S, S + 8, n)
        category[rng.random(n) < 0.1] = 3  # [UNK]: not a category of the vocabulary
        rows.append({"user_id": str(u), "category_2": category, "text_idx": rng.integers(0, 10, n),
                     "timestamp": np.sort(1_500_000_000 + 3600 * rng.integers(0, 2000, n))})
    text = rng.normal(size=(10, 5)).astype(np.float32)
    return SequenceInputs(np.array([str(u) for u in range(num_users)], dtype=object), rows, text)


def with_categories(p: SequenceInputs) -> np.ndarray:
    """Users with at least one real category (a user who bought only [UNK] products has an empty TF-IDF row)."""
    return np.array([bool(np.any(r["category_2"] >= S)) for r in p.rows])


def test_parse_representations():
    assert R.parse_representations("svd,sbert,random") == ("svd", "sbert", "random")
    assert R.parse_representations(" random , svd,svd") == ("random", "svd")
    assert R.parse_representations("none") == () and R.parse_representations("") == ()
    with pytest.raises(ValueError, match=r"unknown representation\(s\) \['bogus'\]; choose from svd, sbert, random, "
                                         r"activity, svd\+activity"):
        R.parse_representations("svd,bogus")


def test_shapes_and_zero_vectors_for_empty_households():
    p = purchases()
    out = R.build_representations(["svd", "sbert", "random"], p, dim=6)
    assert list(out) == ["SVD", "SBERT-mean", "Random"]
    assert out["SVD"].shape == (30, 6) and out["Random"].shape == (30, 6) and out["SBERT-mean"].shape == (30, 5)
    known = with_categories(p)
    for name, vectors in out.items():
        assert vectors.dtype == np.float32, name
        assert not vectors[3].any(), f"{name}: a household without purchases must get the zero vector"
        rows = known if name == "SVD" else p.lengths > 0
        assert np.abs(vectors[rows]).sum(axis=1).min() > 0, name
    # svd and sbert are rescaled to unit RMS (U-MLP reads them raw, like the checkpoints' vectors)
    for name in ("SVD", "SBERT-mean"):
        nonzero = out[name][np.any(out[name] != 0, axis=1)]
        assert np.sqrt(np.mean(np.square(nonzero, dtype=np.float64))) == pytest.approx(1.0, rel=1e-5)


def test_svd_is_deterministic_and_pads_when_the_vocabulary_is_small():
    p = purchases()
    a, b = R.svd_vectors(p, dim=4, seed=0), R.svd_vectors(p, dim=4, seed=0)
    assert np.array_equal(a, b)
    wide = R.svd_vectors(p, dim=20)        # 8 categories: at most 7 components, the rest zero
    assert wide.shape == (30, 20) and not wide[:, 7:].any() and wide[:, :7].any()
    # the TF-IDF rows: categories only (no special ids), L2-normalised, empty for the empty household
    tfidf = R.category_tfidf(p)
    assert tfidf.shape == (30, 8)
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    known = with_categories(p)
    assert not known[3] and known.sum() >= 25
    assert np.allclose(norms[known], 1.0) and not norms[~known].any()


def test_sbert_is_the_mean_text_vector_of_the_purchases():
    p = purchases()
    raw = R.sbert_vectors(p)
    idx = p.rows[7]["text_idx"]
    assert raw[7] == pytest.approx(p.text_embeddings[idx].mean(axis=0), abs=1e-6)
    by_hand = np.mean([p.text_embeddings[i] for i in idx], axis=0)      # a product bought twice counts twice
    assert raw[7] == pytest.approx(by_hand, abs=1e-6)


def test_activity_vectors_count_purchases_baskets_recency_and_products():
    day = 86400
    rows = [{"user_id": "a", "timestamp": np.array([0, 0, day]), "text_idx": np.array([1, 2, 1])},  # 2 baskets
            {"user_id": "b", "timestamp": np.array([5 * day]), "text_idx": np.array([4])},       # the last purchase
            {"user_id": "c", "timestamp": np.zeros(0, np.int64), "text_idx": np.zeros(0, np.int64)},
            {"user_id": "d", "timestamp": np.array([2 * day, 3 * day]), "text_idx": np.array([0, 0])}]
    p = SequenceInputs(np.array(["a", "b", "c", "d"], dtype=object), rows, np.zeros((5, 2), np.float32))
    raw = np.log1p(np.array([[3, 2, 4, 2], [1, 1, 0, 1], [2, 2, 2, 1]], dtype=np.float64))  # a, b, d
    expected = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    out = R.activity_vectors(p)
    assert out.shape == (4, len(R.ACTIVITY_FEATURES)) and out.dtype == np.float32
    assert out[[0, 1, 3]] == pytest.approx(expected.astype(np.float32), abs=1e-6)
    # no purchase: no counts, as far from the last purchase as the first one (not the average user a zero row is)
    empty = (np.log1p([0, 0, 5, 0]) - raw.mean(axis=0)) / raw.std(axis=0)
    assert out[2] == pytest.approx(empty.astype(np.float32), abs=1e-6)
    assert (out[2, [0, 1, 3]] < out[[0, 1, 3]][:, [0, 1, 3]].min(axis=0)).all() and out[2, 2] > out[:, 2].max() - 1e-6
    del rows[0]["timestamp"]
    with pytest.raises(ValueError, match="the rows of user a have none"):
        R.activity_vectors(p)


def test_svd_activity_is_the_svd_then_the_activity_columns():
    p = purchases()
    out = R.build_representations(["svd+activity", "activity"], p, dim=6)
    assert list(out) == ["SVD+activity", "Activity"]
    both = out["SVD+activity"]
    assert both.shape == (30, 6) and np.array_equal(both[:, 2:], out["Activity"])
    assert np.array_equal(both[:, :2], R.unit_rms(R.svd_vectors(p, 2)))
    assert not both[3, :2].any() and both[3, 2] < both[:, 2].min() + 1e-6  # no purchase: zero SVD, fewest counts
    with pytest.raises(ValueError, match="needs a dimension above 4, got 4"):
        R.svd_activity_vectors(p, 4)


def test_random_vectors_are_seeded():
    p = purchases()
    assert np.array_equal(R.random_vectors(p, 4, seed=1), R.random_vectors(p, 4, seed=1))
    assert not np.array_equal(R.random_vectors(p, 4, seed=1), R.random_vectors(p, 4, seed=2))


# ------------------------------------------------------------------------------------------------------------------
# The linear probe
# ------------------------------------------------------------------------------------------------------------------
def probe_world(num_users=240, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"{1000 + i}" for i in range(num_users)], dtype=object)
    signal = rng.normal(size=num_users)
    tasks = {}
    for name, noise in (("kids", 0.5), ("coupon_targeting", 1.0)):
        labels = (signal + noise * rng.normal(size=num_users) > 0.3).astype(int)
        tasks[name] = Task(name=name, kind="classification", paper_analogue="", definition="",
                           users=pd.DataFrame({"user_id": ids, "label": labels}))
    informative = np.c_[signal, rng.normal(size=(num_users, 7))].astype(np.float32) * 100.0  # any scale
    embeddings = {"MP": informative, "Random": rng.normal(size=(num_users, 8)).astype(np.float32)}
    return tasks, ids, embeddings


def test_probe_end_to_end_on_tiny_tasks(tmp_path):
    tasks, ids, embeddings = probe_world()
    results = P.probe_tasks(tasks, ids, embeddings, seeds=[0, 1, 2], log=lambda *a: None)
    P.write_results(tmp_path / "probe" / "results.json", results)
    saved = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert not list((tmp_path / "probe").glob("*.tmp"))
    for task in ("kids", "coupon_targeting"):
        models = saved["tasks"][task]["models"]
        assert set(models) == {"MP", "Random"}
        assert set(models["MP"]["seeds"]) == {"0", "1", "2"} and models["MP"]["n"] == 3
        for metrics in models["MP"]["seeds"].values():
            assert metrics["C"] in P.PROBE_C_GRID and 0 <= metrics["auroc"] <= 1
            assert metrics["val_auroc"] == max(metrics["val_auroc_by_C"].values())
        assert models["MP"]["mean"]["auroc"] > 0.8 > models["Random"]["mean"]["auroc"]
    assert saved["summary"]["MP"] > saved["summary"]["Random"]
    table = P.format_table(results)
    assert "| MP |" in table and "| Random |" in table and "3 seed(s)" in table


def test_probe_uses_the_run_splits_and_never_fits_on_test(monkeypatch):
    from eval_suite.tasks import split_users

    tasks, ids, embeddings = probe_world()
    seen = []

    def recording_probe(x_train, y_train, x_val, y_val, x_test, y_test, c_grid=P.PROBE_C_GRID):
        seen.append((len(x_train), len(x_val), len(x_test)))
        return {"auroc": 0.5, "val_auroc": 0.5, "C": 0.01, "val_auroc_by_C": {}}

    monkeypatch.setattr(P, "linear_probe", recording_probe)
    P.probe_tasks({"kids": tasks["kids"]}, ids, {"MP": embeddings["MP"]}, seeds=[4], log=lambda *a: None)
    split = split_users(tasks["kids"], 4)
    assert seen == [(len(split["train"]), len(split["validation"]), len(split["test"]))]


def test_probe_command_rejects_bad_options(tmp_path, capsys):
    assert P.main(["--tasks", "featured_products", "--data", str(tmp_path), "--dim", "4"]) == 2
    assert "error: --tasks featured_products: the probe runs classification tasks only" in capsys.readouterr().err
    assert P.main(["--representations", "bogus", "--data", str(tmp_path), "--dim", "4"]) == 2
    assert "error: --representations bogus: unknown representation(s) ['bogus']" in capsys.readouterr().err
    assert P.main(["--data", str(tmp_path)]) == 2
    assert "--dim is needed without --model" in capsys.readouterr().err


def test_probe_command_records_its_command_line(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_probe(checkpoints, data, tasks, out, seeds, representations, dim, threads, command=None, layers=False,
                   parts=False):
        seen.update(checkpoints=checkpoints, tasks=tasks, seeds=seeds, representations=representations, dim=dim,
                    command=command, layers=layers, parts=parts)
        tiny, ids, embeddings = probe_world(num_users=60)
        return {**P.probe_tasks({"kids": tiny["kids"]}, ids, {"Random": embeddings["Random"]}, seeds,
                                log=lambda *a: None), "seconds": 0.0}

    monkeypatch.setattr(P, "probe", fake_probe)
    argv = ["--data", str(tmp_path), "--dim", "8", "--tasks", "kids", "--repeats", "2", "--first-seed", "3",
            "--representations", "random", "--out", str(tmp_path / "p")]
    assert P.main(argv) == 0
    assert seen["command"] == "python -m eval_suite probe " + " ".join(argv)
    assert seen["seeds"] == [3, 4] and seen["representations"] == ("random",) and seen["checkpoints"] == {}
    assert seen["layers"] is False and seen["parts"] is False  # `--layers`, `--parts` not given
    assert "| Random |" in capsys.readouterr().out
