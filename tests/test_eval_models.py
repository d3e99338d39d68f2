"""Evaluation protocol (thresholds, ranking through `evaluate`) and each downstream model on tiny data."""

import numpy as np
import pytest
import torch

from eval_suite import tasks as T
from eval_suite.evaluation import (
    choose_threshold,
    classification_metrics,
    full_ranking_metrics,
    instances_of,
    sampled_ranking_metrics,
)
from eval_suite.models import (
    DownstreamMLP,
    ItemTower,
    SharedLayerTransformer,
    TwoTowerScorer,
    UserInputs,
    UserTower,
    fit_classifier,
    fit_recommender,
    small_transformer_config,
    user_scores,
)
from eval_suite.report import paired_test, summarise, table4

from helpers import METADATA, sequence_inputs as _sequence_inputs


# -- protocol ------------------------------------------------------------------------------------------------------
def test_choose_threshold_maximises_validation_f1():
    # thresholds 0.9: F1 2/3; 0.8: 1/2; 0.4: 4/5 (tp 2, predicted 3, positives 2); 0.3: 2/3
    assert choose_threshold([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0]) == 0.4
    # tied scores are cut together: 0.5 -> F1 2/3, 0.1 -> 1/2
    assert choose_threshold([0.5, 0.5, 0.1], [1, 0, 0]) == 0.5
    with pytest.raises(ValueError, match="empty"):
        choose_threshold([], [])


def test_classification_metrics_use_the_validation_threshold():
    metrics = classification_metrics([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0], [0.95, 0.5, 0.35, 0.2], [1, 1, 0, 0])
    # threshold 0.4 -> test predictions 1, 1, 0, 0: all correct
    assert metrics["threshold"] == 0.4
    assert metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0 and metrics["auroc"] == 1.0
    worse = classification_metrics([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0], [0.3, 0.5, 0.6, 0.2], [1, 1, 0, 0])
    # predictions 0, 1, 1, 0 -> accuracy 2/4, F1 = 2*1/(2*1+1+1) = 0.5; AUROC: pairs (0.3 vs .6,.2)+(0.5 vs ...) = 2/4
    assert worse["accuracy"] == 0.5 and worse["f1"] == 0.5 and worse["auroc"] == 0.5


def test_ranking_metrics_oracle_and_constant(random_tasks, tmp_path):  # noqa: F811
    task = random_tasks["next_product_type"]  # one context per user, so a (user, item) oracle is exact
    negatives = T.fixed_negatives(task, 0, tmp_path)
    positives = set(zip(task.instances["user_id"], task.instances["item_id"]))

    def oracle(users, items):
        return np.array([1.0 if (u, i) in positives else 0.0 for u, i in zip(users, items)])

    ids = task.instances["instance_id"].to_numpy()
    sampled = sampled_ranking_metrics(task, ids, negatives, oracle)
    assert sampled["hr@10"] == 1.0 and sampled["mrr"] == 1.0 and sampled["num_instances"] == len(ids)
    full = full_ranking_metrics(task, task.user_ids, oracle)
    assert full["full_hr@10"] == 1.0 and full["full_mrr"] == 1.0
    constant = sampled_ranking_metrics(task, ids, negatives, lambda u, i: np.zeros(len(u)))
    # ties count against the positive: rank = number of negatives, MRR = 1/(n + 1)
    counts = negatives.set_index("instance_id").loc[ids, "num_negatives"].to_numpy()
    assert constant["mrr"] == pytest.approx(float(np.mean(1.0 / (counts + 1))))


def test_paired_test_and_summary():
    out = paired_test([0.7, 0.72, 0.71], [0.6, 0.61, 0.62])
    assert out["wins"] == 3 and out["t_pvalue"] < 0.01 and out["mean_diff"] == pytest.approx(0.1, abs=1e-9)
    results = {"tasks": {"kids": {"kind": "classification", "paper_analogue": "GC", "models": {
        "U-MLP MP": {"seeds": {"0": {"auroc": 0.7, "f1": 0.5, "accuracy": 0.6},
                               "1": {"auroc": 0.72, "f1": 0.5, "accuracy": 0.6}}},
        "P-Trans": {"seeds": {"0": {"auroc": 0.6, "f1": 0.4, "accuracy": 0.5},
                              "1": {"auroc": 0.61, "f1": 0.4, "accuracy": 0.5}}}}}}}
    summarise(results)
    entry = results["tasks"]["kids"]
    assert entry["models"]["U-MLP MP"]["mean"]["auroc"] == pytest.approx(0.71)
    scratch = entry["headline"]["vs"]["from_scratch"]
    assert scratch["name"] == "P-Trans" and scratch["verdict"] == "n/a (<5 seeds)"  # no verdict from 2 seeds
    assert "0.7100 ± 0.0141" in table4(results)


def test_stopped_run_reports_only_seeds_every_model_finished():
    from dataclasses import asdict

    from eval_suite.model_card import results_section
    from eval_suite.run import RunOptions

    def seeds(*values):
        return {str(i): {"auroc": v, "f1": 0.5, "accuracy": 0.6} for i, v in enumerate(values)}

    options = asdict(RunOptions(repeats=5, trans_lrs=(1e-3,)))
    results = {"config": {"options": options}, "tasks": {
        "kids": {"kind": "classification", "paper_analogue": "GC", "models": {
            "U-MLP MP": {"seeds": seeds(0.7, 0.72, 0.99)}, "P-Trans": {"seeds": seeds(0.6, 0.61)}}},
        "coupon_targeting": {"kind": "classification", "paper_analogue": "MP", "models": {
            "U-MLP MP": {"seeds": seeds(0.7, 0.72)}, "P-Trans": {"seeds": seeds(0.6, 0.61)}}}}}
    text = results_section(results)  # no "seconds": stopped in seed 2 after kids' U-MLP
    kids = results["tasks"]["kids"]["models"]
    assert set(kids["U-MLP MP"]["seeds"]) == {"0", "1"} and kids["U-MLP MP"]["mean"]["auroc"] == pytest.approx(0.71)
    assert "Not every run finished its seeds: the run (3 seed(s) started)" in text
    assert "(2 seed(s) per task; reduced protocol" in text


def test_results_section_says_which_fits_ran_to_their_epoch_cap():
    from eval_suite.model_card import cap_note

    def seed(hit, any_lr):
        return {"auroc": 0.6, "hit_cap": hit, "hit_cap_any_lr": any_lr}

    results = {"tasks": {"kids": {"models": {
        "P-Trans": {"seeds": {"0": seed(False, False), "1": seed(True, True)}},
        "UP-Trans MP": {"seeds": {"0": seed(False, True), "1": seed(False, False)}},
        "LogReg RFM": {"seeds": {"0": {"auroc": 0.5}}}}}}}  # no epochs: not counted
    note = cap_note(results)
    assert "of 4 model-task-seeds" in note and "fit ran to its epoch cap in 1 (P-Trans: kids seed 1)" in note
    assert "in 1 more a learning rate that was not chosen did (UP-Trans MP: kids seed 0)" in note
    for model in results["tasks"]["kids"]["models"].values():
        for metrics in model["seeds"].values():
            metrics.update(hit_cap=False, hit_cap_any_lr=False) if "hit_cap" in metrics else None
    assert "ran to its epoch cap in none." in cap_note(results)
    assert cap_note({"tasks": {"kids": {"models": {"LogReg RFM": {"seeds": {"0": {"auroc": 0.5}}}}}}}) == ""


def test_merge_results_of_runs_over_other_seeds():
    from dataclasses import asdict

    from eval_suite.merging import merge_results
    from eval_suite.run import RunOptions

    def run(first_seed, values, **options):
        seeds = {str(first_seed + i): {"auroc": v} for i, v in enumerate(values)}
        return {"config": {"data": "data/cj", "options": asdict(RunOptions(repeats=len(values), first_seed=first_seed,
                                                                           **options))},
                "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC",
                                   "models": {"U-MLP MP": {"seeds": seeds}}}}, "seconds": 1.0}

    merged = merge_results([run(0, [0.6, 0.7]), run(2, [0.8])])
    assert sorted(merged["tasks"]["kids"]["models"]["U-MLP MP"]["seeds"]) == ["0", "1", "2"]
    assert merged["config"]["options"]["repeats"] == 3 and "seconds" in merged
    other_task = run(0, [0.5])
    other_task["tasks"] = {"coupon_targeting": other_task["tasks"]["kids"]}
    merged = merge_results([run(0, [0.6, 0.7]), other_task])  # another task over the same seeds
    assert merged["config"]["tasks"] == ["kids", "coupon_targeting"]
    with pytest.raises(ValueError, match=r"b repeats seed\(s\) 1 of kids/U-MLP MP"):
        merge_results([run(0, [0.6, 0.7]), run(1, [0.8])], ["a", "b"])
    with pytest.raises(ValueError, match=r"b was made with other settings than a \(options.mlp_max_epochs\)"):
        merge_results([run(0, [0.6]), run(1, [0.8], mlp_max_epochs=5)], ["a", "b"])
    described = [run(0, [0.6]), run(1, [0.8], finetune=True)]  # `protocol` names fine-tuning only where it ran
    described[0]["config"]["protocol"], described[1]["config"]["protocol"] = "full", "full (fine-tuning: ...)"
    assert merge_results(described)["config"]["options"]["finetune"] is True
    merged = merge_results([run(0, [0.6]), run(1, [0.8], device="cuda", threads=4)])  # where it ran: not protocol
    assert sorted(merged["tasks"]["kids"]["models"]["U-MLP MP"]["seeds"]) == ["0", "1"]


def test_merge_results_of_runs_over_other_models():
    """The Transformers in a run of their own merge with the U-MLP run of the same protocol; a clash still fails."""
    from dataclasses import asdict

    from eval_suite.merging import merge_results
    from eval_suite.run import RunOptions

    def run(model, models, first_seed=0, **options):
        seeds = {str(first_seed + i): {"auroc": 0.6} for i in range(2)}
        return {"config": {"data": "data/cj", "representations": [],
                           "options": asdict(RunOptions(repeats=2, first_seed=first_seed, models=models, **options))},
                "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC",
                                   "models": {model: {"seeds": seeds}}}}}

    merged = merge_results([run("U-MLP MP", ("u-mlp", "baselines")),
                            run("P-Trans", ("p-trans",), finetune=True)])
    assert sorted(merged["tasks"]["kids"]["models"]) == ["P-Trans", "U-MLP MP"]
    assert merged["config"]["options"]["models"] == ["u-mlp", "baselines", "p-trans"]
    assert merged["config"]["options"]["finetune"] is True
    with pytest.raises(ValueError, match=r"b repeats seed\(s\) 0, 1 of kids/P-Trans"):
        merge_results([run("P-Trans", ("p-trans",)), run("P-Trans", ("p-trans", "t-trans"))], ["a", "b"])
    with pytest.raises(ValueError, match="other settings"):
        merge_results([run("U-MLP MP", ("u-mlp",)), run("P-Trans", ("p-trans",), trans_max_epochs=3)], ["a", "b"])


def test_merge_compares_fine_tuning_settings_only_between_runs_that_fine_tuned():
    """Fine-tuning in a run of its own (a larger epoch budget) merges with runs that recorded another, unused one."""
    from dataclasses import asdict

    from eval_suite.merging import merge_results
    from eval_suite.run import RunOptions

    def run(model, first_seed=0, **options):
        seeds = {str(first_seed + i): {"auroc": 0.6} for i in range(2)}
        return {"config": {"data": "data/cj", "options": asdict(RunOptions(repeats=2, first_seed=first_seed,
                                                                           **options))},
                "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC",
                                   "models": {model: {"seeds": seeds}}}}}

    plain = run("P-Trans", finetune_max_epochs=5)
    tuned = run("Fine-tuned MP", finetune=True, finetune_max_epochs=20)
    merged = merge_results([plain, tuned])
    assert merged["config"]["options"]["finetune_max_epochs"] == 20 and merged["config"]["options"]["finetune"]
    assert merge_results([tuned, plain])["config"]["options"]["finetune_max_epochs"] == 20
    with pytest.raises(ValueError, match=r"b fine-tuned with other settings than a"):
        merge_results([tuned, run("Fine-tuned MP", first_seed=2, finetune=True, finetune_max_epochs=5)], ["a", "b"])


def test_model_card_results_from_seed_ranges_of_two_runs(tmp_path):
    import json
    from dataclasses import asdict

    from eval_suite.model_card import load_results, update_model_card
    from eval_suite.run import RunOptions

    def write(folder, first_seed, values):
        seeds = {str(first_seed + i): {"auroc": v, "f1": 0.5, "accuracy": 0.5} for i, v in enumerate(values)}
        models = {"U-MLP MP": {"seeds": seeds}, "P-Trans": {"seeds": {s: {"auroc": 0.5, "f1": 0.5, "accuracy": 0.5}
                                                                      for s in seeds}}}
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({
            "config": {"data": "d", "options": asdict(RunOptions(repeats=len(values), first_seed=first_seed))},
            "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC", "models": models}}}))

    write(tmp_path / "a", 0, [0.6, 0.7, 0.9])  # seed 2 also ran in b
    write(tmp_path / "b", 2, [0.8])
    assert set(load_results(f"{tmp_path / 'a'}:0-1")["tasks"]["kids"]["models"]["P-Trans"]["seeds"]) == {"0", "1"}
    card = tmp_path / "card.md"
    update_model_card(card, results_dir=[f"{tmp_path / 'a'}:0-1", str(tmp_path / "b")])
    text = card.read_text()
    assert "0.7000 ± 0.1000" in text and "(seeds 0-1)" in text
    with pytest.raises(ValueError, match="repeats seed"):
        update_model_card(card, results_dir=[str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(FileNotFoundError, match="no results.json"):
        load_results(tmp_path / "missing")


def test_a_stopped_run_merged_with_a_finished_one_keeps_the_finished_runs_seeds(tmp_path):
    """The Transformers' run stopped in its third seed; the U-MLP run finished all five: U-MLP keeps five seeds,
    P-Trans its two complete ones, the table says so, and the comparison pairs the two common seeds."""
    import json
    from dataclasses import asdict

    from eval_suite.model_card import update_model_card
    from eval_suite.run import RunOptions

    def write(folder, rows, seconds, **options):
        (tmp_path / folder).mkdir()
        tasks = {"kids": {"kind": "classification", "paper_analogue": "GC", "models": {
            name: {"seeds": {str(i): {"auroc": v, "f1": 0.5, "accuracy": 0.5, "val_auroc": v}
                             for i, v in enumerate(values)}} for name, values in rows.items()}}}
        record = {"config": {"data": "d", "options": asdict(RunOptions(**options))}, "tasks": tasks}
        if seconds:
            record["seconds"] = seconds
        (tmp_path / folder / "results.json").write_text(json.dumps(record))

    write("umlp", {"U-MLP MP": [0.6, 0.7, 0.8, 0.7, 0.6]}, 10.0, repeats=5, models=("u-mlp",))
    write("trans", {"P-Trans": [0.5, 0.55, 0.9], "UP-Trans MP": [0.5, 0.6]}, None, repeats=5,
          models=("p-trans", "up-trans"))
    card = tmp_path / "card.md"
    update_model_card(card, results_dir=[str(tmp_path / "umlp"), str(tmp_path / "trans")])
    text = card.read_text()
    assert "0.6800 ± 0.0837" in text  # U-MLP over its five seeds
    assert "| seeds | 5 | 2 | 2 |" in text  # P-Trans' third seed is dropped: UP-Trans did not finish it
    assert "trans (3 seed(s) started)" in text


# -- models --------------------------------------------------------------------------------------------------------
def test_downstream_mlp_shape():
    mlp = DownstreamMLP(20, 3)
    widths = [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256, 128, 64, 3]  # the paper's input-512-256-128-64-output


def test_u_mlp_learns_a_separable_label():
    rng = np.random.default_rng(0)
    ids = np.array([str(i) for i in range(300)], dtype=object)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    labels = (vectors[:, 0] > 0).astype(int)
    inputs = UserInputs(ids, vectors=vectors)
    tower = UserTower("mlp", 1, user_embedding_size=16)
    fit = fit_classifier(tower, inputs, ids[:200], labels[:200], ids[200:250], labels[200:250], lr=1e-3, seed=0,
                         validation_metric=lambda s, y: float(np.mean((s > 0) == np.asarray(y))), max_epochs=40,
                         patience=40)
    accuracy = np.mean((user_scores(tower, inputs, list(ids[250:])) > 0) == labels[250:])
    assert fit.best_metric > 0.85 and accuracy > 0.85


def test_classification_run_does_not_depend_on_what_ran_before():
    """The tower's initial weights come from the seed alone, so a seed gives the same result in any process."""
    import pandas as pd

    from eval_suite.run import run_classification

    rng = np.random.default_rng(1)
    ids = np.array([f"u{i}" for i in range(120)], dtype=object)
    vectors = rng.normal(size=(120, 8)).astype(np.float32)
    task = type("Task", (), {"users": pd.DataFrame({"user_id": ids, "label": (vectors[:, 0] > 0).astype(int)})})
    split = {"train": ids[:80], "validation": ids[80:100], "test": ids[100:]}
    inputs = UserInputs(ids, vectors=vectors)

    def once():
        return run_classification(task, split, inputs, lambda: UserTower("mlp", 1, user_embedding_size=8),
                                  lrs=(1e-3,), seed=3, max_epochs=2, patience=2)

    first = once()
    torch.rand(1000)  # another model's training moves the global generator
    second = once()
    assert first["auroc"] == second["auroc"] and first["threshold"] == second["threshold"]


def test_shared_layer_transformer_and_up_trans():
    config = small_transformer_config(METADATA, max_length=6, hidden_size=16, num_layers=4, num_heads=2)
    one_layer = small_transformer_config(METADATA, max_length=6, hidden_size=16, num_layers=1, num_heads=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(SharedLayerTransformer(config)) == count(SharedLayerTransformer(one_layer))  # ALBERT-style sharing
    vectors = np.random.default_rng(1).normal(size=(12, 7)).astype(np.float32)
    inputs = _sequence_inputs(vectors=vectors)
    batch = inputs.batch(list(inputs.user_ids))
    assert batch["category_ids"].shape[1] <= 7 and (batch["attention_mask"].sum(1) >= 1).all()
    p_trans = UserTower("trans", 1, transformer_config=config).eval()
    assert p_trans(batch).shape == (12, 1)
    up_trans = UserTower("uptrans", 1, user_embedding_size=7, transformer_config=config).eval()
    out = up_trans(batch)
    changed = dict(batch, user_embedding=batch["user_embedding"] + 1.0)
    assert not torch.allclose(out, up_trans(changed)), "UP-Trans must read the pre-trained user vector"
    assert torch.allclose(p_trans(batch), p_trans(changed)), "P-Trans must not"


def test_transformer_classifier_trains(random_tasks):  # noqa: F811
    config = small_transformer_config(METADATA, max_length=6, hidden_size=16, num_layers=2, num_heads=2)
    inputs = _sequence_inputs(num_users=40)
    labels = np.array([int(len(row["text_idx"]) > 4) for row in inputs.rows])
    tower = UserTower("trans", 1, transformer_config=config)
    fit = fit_classifier(tower, inputs, inputs.user_ids[:30], labels[:30], inputs.user_ids[30:], labels[30:],
                         lr=1e-3, seed=0, validation_metric=lambda s, y: float(np.mean(s)), max_epochs=3)
    assert fit.epochs_run >= 1 and len(fit.history) == fit.epochs_run


def test_two_tower_recommender_trains_and_scores(random_tasks, tmp_path):  # noqa: F811
    task = random_tasks["next_product_type"]
    users = task.user_ids
    rng = np.random.default_rng(0)
    inputs = UserInputs(users, vectors=rng.normal(size=(len(users), 8)).astype(np.float32))
    items = rng.normal(size=(len(task.items), 5)).astype(np.float32)
    scorer = TwoTowerScorer(UserTower("mlp", 64, user_embedding_size=8), ItemTower(5), items, task.items["item_id"])
    split = T.split_users(task, 0)
    negatives = T.fixed_negatives(task, 0, tmp_path)
    val_ids = instances_of(task, split["validation"])
    fit = fit_recommender(
        scorer, inputs, lambda e: T.sample_training_pairs(task, split["train"], seed=e, negatives_per_positive=2),
        lambda m: sampled_ranking_metrics(task, val_ids, negatives,
                                          lambda u, i: m.score_pairs(inputs, u, i))["mrr"],
        lr=1e-3, seed=0, max_epochs=2)
    assert fit.epochs_run == 2 and 0 < fit.best_metric <= 1
    scores = scorer.score_pairs(inputs, users[:3], task.items["item_id"].to_numpy()[:3])
    assert scores.shape == (3,) and np.isfinite(scores).all()
    with pytest.raises(KeyError):
        inputs.batch(["nobody"])


def test_fine_tuned_shopperbert_trains_from_a_checkpoint(tmp_path):
    from eval_suite.run import FineTuneTower
    from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction

    config = ShopperBertConfig.from_data_metadata(METADATA, hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, max_position_embeddings=7)
    pretrained = ShopperBertForMaskedPurchasePrediction(config)
    pretrained.save_pretrained(tmp_path)
    tower = FineTuneTower(tmp_path)
    encoder_weight = pretrained.shopperbert.encoder.layer[0].output.dense.weight
    assert torch.equal(tower.model.shopperbert.encoder.layer[0].output.dense.weight, encoder_weight)
    inputs = _sequence_inputs(num_users=20, min_events=1)
    labels = np.arange(20) % 2
    fit = fit_classifier(tower, inputs, inputs.user_ids[:14], labels[:14], inputs.user_ids[14:], labels[14:],
                         lr=1e-3, seed=0, validation_metric=lambda s, y: 0.0, max_epochs=1)
    assert fit.epochs_run == 1
    assert user_scores(tower, inputs, list(inputs.user_ids[:5])).shape == (5,)
    assert not torch.equal(tower.model.shopperbert.encoder.layer[0].output.dense.weight, encoder_weight)


def test_model_card_extra_sections(tmp_path):
    from eval_suite.model_card import update_model_card

    card = tmp_path / "card.md"
    card.write_text("---\nlibrary_name: transformers\n---\n# card\n<!-- umap:start -->\nold\n<!-- umap:end -->\n")
    folder = tmp_path / "umap"
    folder.mkdir()
    (folder / "umap.md").write_text("| attribute | AUROC |\n|---|---:|\n| age | 0.577 |\n")
    (folder / "umap.png").write_bytes(b"\x89PNG fake")
    update_model_card(card, extras={"umap": folder})
    text = card.read_text()
    assert "| age | 0.577 |" in text and "old" not in text
    assert "![umap](docs/figures/umap.png)" in text and (tmp_path / "docs/figures/umap.png").is_file()
    assert text.count("<!-- umap:start -->") == 1
