"""Table 3 (`eval_suite.experiments.costs`), Figure 2 (`eval_suite.experiments.visualize`) and Figure 3
(`eval_suite.experiments.ablation`) analogues.

Small data only: one real corpus of the last month before the cutoff (hashing text vectors) and a 3-step tiny
checkpoint for the costs command; hand-made embeddings and evaluation results for the rest. No real pre-training.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eval_suite.experiments import ablation, costs, visualize
from helpers import run_python



def _run(args):
    return run_python(args, timeout=600)


# ---------------------------------------------------------------------------------------------------------------
# costs (Table 3)
# ---------------------------------------------------------------------------------------------------------------
def test_costs_table3_on_a_tiny_checkpoint(month_corpus_and_model, tmp_path):
    corpus, checkpoint = month_corpus_and_model
    out = tmp_path / "costs"
    threads = torch.get_num_threads()
    try:
        assert costs.main(["--model", str(checkpoint), "--data", str(corpus), "--out", str(out), "--steps", "3",
                           "--max-seconds", "60", "--max-users", "200", "--threads", "1", "--warmup", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((out / "costs.json").read_text())
    table = (out / "table3.md").read_text()
    names = [m["name"] for m in result["models"]]
    assert names == ["ShopperBERT (fine-tuning)", "P-Trans", "U-MLP"]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Models")]
    assert [r.split(" | ")[0][2:] for r in rows] == names
    by_name = {m["name"]: m for m in result["models"]}
    assert result["task"] == "coupon_targeting" and result["users"] == 200 and result["batch_size"] == 128
    for m in result["models"]:
        assert m["speedup"] > 0 and m["timing"]["steps_timed"] == 3 and m["timing"]["median_s"] > 0
    assert by_name["ShopperBERT (fine-tuning)"]["speedup"] == pytest.approx(1.0)
    assert by_name["U-MLP"]["data_bytes"] < by_name["P-Trans"]["data_bytes"]

    # parameter counts: every parameter of the same modules, built independently
    from eval_suite.inputs import Corpus
    from eval_suite.models import UserTower, small_transformer_config
    from eval_suite.run import FineTuneTower

    metadata = Corpus.load(corpus).metadata
    hidden = json.loads((checkpoint / "config.json").read_text())["hidden_size"]
    expected = {
        "ShopperBERT (fine-tuning)": FineTuneTower(checkpoint),
        "P-Trans": UserTower("trans", 1, transformer_config=small_transformer_config(metadata, 128)),
        "U-MLP": UserTower("mlp", 1, user_embedding_size=hidden),
    }
    for name, module in expected.items():
        assert by_name[name]["parameters"] == sum(p.numel() for p in module.parameters()), name
    assert by_name["U-MLP"]["data_bytes"] == 200 * hidden * 4
    assert by_name["P-Trans"]["max_length"] == 128
    assert by_name["ShopperBERT (fine-tuning)"]["max_length"] == json.loads(
        (checkpoint / "config.json").read_text())["max_position_embeddings"] - 1


def test_sequence_data_bytes_and_time_budget():
    rows = [{"text_idx": np.array([0, 1, 2, 1])}, {"text_idx": np.array([2, 3])}, {"text_idx": np.zeros(0, int)}]
    data = costs.sequence_data_bytes(rows, max_length=3, text_dim=8)
    # most recent 3 of the first user ([1, 2, 1]) and both of the second ([2, 3]): 5 purchases, texts {1, 2, 3}
    assert data["purchases"] == 5 and data["distinct_texts"] == 3
    assert data["bytes"] == 5 * 10 * 4 + 3 * 8 * 4
    assert data["inline_bytes"] == 5 * (9 * 4 + 8 * 4)
    assert data["full_purchases"] == 6 and data["full_distinct_texts"] == 4
    assert costs.embedding_data_bytes(10, 16)["bytes"] == 640

    from eval_suite.models import UserInputs, UserTower

    users = np.array([f"u{i}" for i in range(10)], dtype=object)
    inputs = UserInputs(users, vectors=np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32))
    model = UserTower("mlp", 1, user_embedding_size=8)
    timing = costs.time_inference(model, inputs, users, batch_size=4, steps=50, max_seconds=1e-9, warmup=1)
    assert timing["steps_timed"] == 1 and timing["stopped_early"] and timing["steps_requested"] == 50
    timing = costs.time_inference(model, inputs, users, batch_size=4, steps=5, max_seconds=None, warmup=0)
    assert timing["steps_timed"] == 5 and not timing["stopped_early"] and timing["median_s"] > 0
    assert costs.format_speedup(1.0) == "1" and costs.format_speedup(2458.2) == "2458x"
    assert costs.format_speedup(2.04) == "2.0x" and costs.format_speedup(0.046) == "0.046x"


# ---------------------------------------------------------------------------------------------------------------
# visualize (Figure 2)
# ---------------------------------------------------------------------------------------------------------------
def test_probe_finds_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n = 300
    values = pd.Series(rng.choice(["a", "b", "c"], size=n))
    values[::17] = None  # unknown values are left out
    vectors = rng.normal(size=(n, 8))
    planted = vectors.copy()
    planted[:, 0] += (values == "b").to_numpy() * 2.0
    signal = visualize.probe_attribute(planted, values, permutations=4, seed=0)
    noise = visualize.probe_attribute(vectors, values, permutations=4, seed=0)
    assert signal["n"] == int(values.notna().sum()) and signal["classes"] == 3
    assert signal["auroc"] > 0.7 and signal["auroc"] > signal["shuffled_auroc_max"]
    assert signal["permutation_p"] == pytest.approx(1 / 5)
    assert abs(noise["auroc"] - 0.5) < 0.1
    rare = pd.Series(["x"] * 150 + ["y"] * 147 + ["z"] * 3)
    assert visualize.probe_attribute(vectors, rare, permutations=0)["dropped_classes"] == ["z"]


def test_demographics_plot_with_pca(tmp_path):
    demo = visualize.load_demographics()
    assert len(demo) == 801 and demo["user_id"].map(type).eq(str).all()
    assert set(visualize.DEFAULT_ATTRIBUTES) <= set(demo.columns)
    ids = np.array(list(demo["user_id"][:120]) + ["not-a-household"], dtype=object)
    vectors = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    aligned, X = visualize.align(ids, vectors, demo)
    assert len(aligned) == 120 and np.array_equal(X, vectors[:120])
    coords = visualize.project(X, "pca")
    png = visualize.plot(coords, aligned, visualize.DEFAULT_ATTRIBUTES, tmp_path / "pca.png", title="t")
    assert png.stat().st_size > 1000


def test_visualize_umap_command_on_embeddings(tmp_path):
    pytest.importorskip("umap", reason="umap-learn is not installed (pip install umap-learn / the viz extra)")
    from modeling_shopperbert import write_user_embeddings

    demo = visualize.load_demographics()
    ids = list(demo["user_id"][:100])
    vectors = np.random.default_rng(1).normal(size=(100, 16)).astype(np.float32)
    path = write_user_embeddings(tmp_path / "emb.parquet", ids, vectors)
    out = tmp_path / "umap.png"
    assert visualize.main(["--embeddings", str(path), "--out", str(out), "--attributes", "age,kids_count",
                           "--permutations", "2"]) == 0
    assert out.stat().st_size > 1000
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["households"] == 100 and summary["method"] == "umap"
    assert set(summary["probe"]) == {"age", "kids_count"}
    assert len(pd.read_csv(out.with_suffix(".csv"))) == 100


# ---------------------------------------------------------------------------------------------------------------
# ablation (Figure 3)
# ---------------------------------------------------------------------------------------------------------------
def test_window_dates_are_calendar_months_before_the_cutoff():
    starts = {k: str(ablation.window_start(k).date()) for k in (1, 3, 6, 9)}
    assert starts == {1: "2017-09-02", 3: "2017-07-02", 6: "2017-04-02", 9: "2017-01-02"}
    assert str(ablation.window_start(1, "2017-03-31").date()) == "2017-02-28"  # month ends clamp
    assert ablation.parse_months("9,1,3,6,3") == [1, 3, 6, 9]
    for bad in ("", "0,3", "a"):
        with pytest.raises(ValueError):
            ablation.parse_months(bad)

    config = ablation.AblationConfig(out=Path("w"), months=[1, 9], epochs=8.0, repeats=3, quick=True)
    one, nine = ablation.step_commands(config, 1), ablation.step_commands(config, 9)
    assert one["build"][one["build"].index("--start-date") + 1] == "2017-09-02"
    assert nine["build"][nine["build"].index("--start-date") + 1] == "2017-01-02"
    assert nine["build"][nine["build"].index("--end-date") + 1] == "2017-10-02"
    assert "--num-epochs" in one["train"] and one["train"][one["train"].index("--num-epochs") + 1] == "8"
    # the same training settings for every window: only the data and output folders differ
    strip = {"w/data-1m": "D", "w/data-9m": "D", "w/run-1m": "R", "w/run-9m": "R"}
    assert [strip.get(a, a) for a in one["train"]] == [strip.get(a, a) for a in nine["train"]]
    assert one["eval"][one["eval"].index("--models") + 1] == "u-mlp" and "--quick" in one["eval"]
    assert one["eval"][one["eval"].index("--model") + 1] == "1m=w/run-1m/final"


def _fake_window(out: Path, months: int, kids: list, coupons: list, loss: float):
    paths = ablation.window_paths(out, months)
    paths["data"].mkdir(parents=True)
    (paths["data"] / "metadata.json").write_text(json.dumps(
        {"start_date": str(ablation.window_start(months).date()), "end_date": "2017-10-02",
         "counts": {"users_kept": 100 * months, "purchases_kept": 1000 * months}}))
    (paths["run"] / "final").mkdir(parents=True)
    (paths["run"] / "final" / "config.json").write_text("{}")
    (paths["run"] / "final" / "training_info.json").write_text(json.dumps({"step": 10, "eval/loss": loss}))
    paths["eval"].mkdir(parents=True)
    results = {"tasks": {
        "kids": {"kind": "classification", "primary_metric": "auroc", "models": {
            f"U-MLP {months}m": {"seeds": {str(i): {"auroc": v, "f1": 0.5} for i, v in enumerate(kids)}}}},
        "campaign_coupons": {"kind": "recommendation", "models": {
            f"U-MLP {months}m": {"seeds": {str(i): {"mrr": v} for i, v in enumerate(coupons)}},
            "T-Trans": {"seeds": {str(i): {"mrr": 0.2} for i in range(len(coupons))}}}}},
        "seconds": 1.0}
    (paths["eval"] / "results.json").write_text(json.dumps(results))


def test_ablation_aggregation_relative_scores_and_plot(tmp_path):
    out = tmp_path / "abl"
    _fake_window(out, 1, kids=[0.55, 0.57], coupons=[0.10, 0.12], loss=5.0)
    _fake_window(out, 3, kids=[0.60, 0.62], coupons=[0.15, 0.15], loss=4.5)
    _fake_window(out, 9, kids=[0.64, 0.66], coupons=[0.20, 0.22], loss=4.0)
    config = ablation.AblationConfig(out=out, months=[1, 3, 6, 9])  # 6 months not run: left out of the plot
    result = ablation.aggregate(config, windowed=True)
    windows = {w["months"]: w for w in result["windows"]}
    assert windows[3]["corpus"]["users"] == 300 and windows[9]["pretraining"]["validation_mpp_loss"] == 4.0
    assert "tasks" not in windows[6]
    kids = windows[1]["tasks"]["kids"]["models"]["U-MLP"]
    assert kids["mean"] == pytest.approx(0.56) and kids["std"] == pytest.approx(np.std([0.55, 0.57], ddof=1))
    rel = result["relative"]
    assert rel["kids"]["reference_months"] == 9 and rel["kids"]["reference_score"] == pytest.approx(0.65)
    points = {p["months"]: p for p in rel["kids"]["series"]["U-MLP"]}
    assert points[1]["relative"] == pytest.approx(0.56 / 0.65) and points[9]["relative"] == pytest.approx(1.0)
    assert points[3]["relative_std"] == pytest.approx(np.std([0.60, 0.62], ddof=1) / 0.65)
    coupons = {p["months"]: p["relative"] for p in rel["campaign_coupons"]["series"]["U-MLP"]}
    assert coupons == pytest.approx({1: 0.11 / 0.21, 3: 0.15 / 0.21, 9: 1.0})
    t_trans = {p["months"]: p["relative"] for p in rel["campaign_coupons"]["series"]["T-Trans"]}
    assert t_trans[9] == pytest.approx(0.2 / 0.21)  # other models: relative to U-MLP's reference
    best = ablation.relative_scores([w for w in result["windows"] if "tasks" in w], relative_to="best")
    assert best["kids"]["reference_months"] == 9

    png = ablation.plot_ablation(rel, tmp_path / "ablation.png")
    assert png.stat().st_size > 1000
    assert ablation.main(["--out", str(out), "--months", "1,3,6,9", "--plot-only"]) == 0
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["relative"]["kids"]["series"]["U-MLP"][0]["relative"] == pytest.approx(0.56 / 0.65)
    assert (out / "ablation.png").stat().st_size > 1000 and "| 9 | 2017-01-02 |" in (out / "ablation.md").read_text()


def test_ablation_resume_skips_done_steps_and_refuses_other_settings(tmp_path):
    out = tmp_path / "abl"
    _fake_window(out, 1, kids=[0.5], coupons=[0.1], loss=5.0)
    config = ablation.AblationConfig(out=out, months=[1], epochs=2.0)
    lines = []
    ablation.run_window(config, 1, log=lines.append)  # every output exists: nothing runs
    assert all("done already" in line for line in lines) and len(lines) == 3
    logs = out / "logs"
    logs.mkdir()
    other = ablation.step_commands(ablation.AblationConfig(out=out, months=[1], epochs=5.0), 1)
    (logs / "train-1m.json").write_text(json.dumps({"argv": other["train"]}))
    with pytest.raises(ablation.StepFailed, match="made by"):
        ablation.run_window(config, 1, log=lines.append)
