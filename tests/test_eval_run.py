"""`python -m eval_suite run` end to end on a tiny slice of the real data (quick mode), the input cutoff, the probe
command; and, fast on random miniature tasks: which rows a run plans, the protocol it reports, the training record
(epochs, hit_cap), fine-tuning's patience, and the label-aware baselines' negatives and validation metrics."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eval_suite.tasks import CUTOFF
from helpers import run_python

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    return run_python(args, **kwargs)


def test_inputs_end_before_the_cutoff(corpus_and_model):
    from eval_suite.inputs import Corpus, history_inputs, purchase_inputs
    from eval_suite.tasks import build_task, load_raw_tables

    corpus = Corpus.load(corpus_and_model[0])
    cutoff = int(CUTOFF.timestamp())
    purchases = purchase_inputs(corpus)
    assert len(purchases.user_ids) == 2447  # every household with a purchase before T, unfiltered
    assert max(int(np.max(r["timestamp"])) for r in purchases.rows if len(r["timestamp"])) < cutoff
    tables = load_raw_tables()
    for name in ("featured_products", "campaign_coupons", "next_product_type"):
        task = build_task(name, tables)
        history = history_inputs(task, tables, corpus, purchases.user_ids)
        latest = max(int(np.max(r["timestamp"])) for r in history.rows if len(r["timestamp"]))
        assert latest < cutoff, name
        positives = pd.to_datetime(task.instances["timestamp"])
        assert (positives >= CUTOFF).all(), name  # labels come from the window only


def test_run_command_quick_on_a_tiny_slice(corpus_and_model, tmp_path):
    corpus, checkpoint = corpus_and_model
    card = tmp_path / "card.md"
    shutil.copy(ROOT / "model_card.md", card)
    out = tmp_path / "results"
    result = _run(["-m", "eval_suite", "run", "--model", f"MP={checkpoint}", "--data", str(corpus),
                   "--tasks", "kids,featured_products", "--quick", "--repeats", "2", "--max-users", "120",
                   "--out", str(out), "--model-card", str(card)])
    assert "Table 4 analogue" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["protocol"].startswith("quick (reduced: ") and "protocol: quick" in result.stdout
    assert results["config"]["command"].startswith(f"python -m eval_suite run --model MP={checkpoint} --data ")
    assert results["config"]["representations"] == ["SVD", "SBERT-mean", "Random"]
    kids = results["tasks"]["kids"]["models"]
    assert list(kids)[:4] == ["U-MLP MP", "U-MLP SVD", "U-MLP SBERT-mean", "U-MLP Random"]
    assert {"P-Trans", "UP-Trans MP", "LogReg TF-IDF+RFM", "LogReg RFM"} <= set(kids)
    for metrics in kids["U-MLP MP"]["seeds"].values():
        assert 0 <= metrics["auroc"] <= 1 and 0 <= metrics["f1"] <= 1 and metrics["lr"] == 1e-3
    featured = results["tasks"]["featured_products"]["models"]
    assert {"U-MLP MP", "U-MLP SVD", "P-Trans", "UP-Trans MP", "T-Trans", "Popularity", "Popularity (train labels)",
            "Co-occurrence", "Hybrid"} <= set(featured)
    for task in results["tasks"].values():
        key = "val_auroc" if task["kind"] == "classification" else "val_mrr"
        for name, model in task["models"].items():
            for metrics in model["seeds"].values():
                assert 0 <= metrics[key] <= 1, name
                if not name.startswith(("LogReg", "Popularity", "Co-occurrence", "Hybrid")):
                    assert metrics["epochs"] >= 1 and isinstance(metrics["hit_cap"], bool), name
    for name in ("MP", "SVD", "SBERT-mean", "Random"):
        assert (out / "embeddings" / f"{name}.parquet").is_file()
    seed0 = featured["T-Trans"]["seeds"]["0"]
    assert 0 <= seed0["mrr"] <= 1 and "full_ndcg@10" in seed0 and "cold_mrr" in seed0
    assert featured["U-MLP MP"]["n"] == 2 and "std" in featured["U-MLP MP"]
    assert sorted(os.listdir(out / "negatives" / "featured_products")) == ["seed0.parquet", "seed1.parquet"]
    for table in ("table4.md", "table5.md", "table6.md", "headline.md"):
        assert (out / table).stat().st_size > 0

    from huggingface_hub import ModelCard

    parsed = ModelCard.load(card)
    index = parsed.data.eval_results
    assert index, "the model-index metadata must list the evaluated tasks"
    by_name = {(r.task_name, r.metric_name): r.metric_value for r in index}
    expected = results["tasks"]["kids"]["models"]["U-MLP MP"]["mean"]["auroc"]
    assert by_name[("kids", "auroc (U-MLP MP)")] == pytest.approx(expected, abs=5e-5)
    assert "<!-- results:start -->" in card.read_text()


def test_run_command_rejects_bad_options(tmp_path, capsys):
    """Argument errors, checked in-process (the command line is `eval_suite.__main__.main`)."""
    from eval_suite.__main__ import main

    def run(*extra):
        try:
            code = main(["run", "--model", str(tmp_path), "--data", str(tmp_path), *extra])
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    code, err = run("--tasks", "gender")
    assert code == 2 and "unknown tasks ['gender']" in err
    code, err = run()
    assert code != 0 and "not a saved ShopperBERT folder" in err
    code, err = run("--representations", "bogus")
    assert code == 2 and "error: --representations bogus: unknown representation(s) ['bogus']" in err


def test_probe_command_on_a_tiny_slice(corpus_and_model, tmp_path):
    corpus, checkpoint = corpus_and_model
    out = tmp_path / "probe"
    result = _run(["-m", "eval_suite", "probe", "--model", f"MP={checkpoint}", "--data", str(corpus),
                   "--tasks", "kids,coupon_targeting", "--repeats", "2", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["command"].startswith("python -m eval_suite probe --model MP=")
    assert results["config"]["seeds"] == [0, 1] and results["config"]["representations"] == ["SVD", "SBERT-mean",
                                                                                              "Random"]
    for task in ("kids", "coupon_targeting"):
        models = results["tasks"][task]["models"]
        assert list(models) == ["MP", "SVD", "SBERT-mean", "Random"]
        assert all(0 <= m["mean"]["auroc"] <= 1 and m["n"] == 2 for m in models.values())
    assert "| SVD |" in result.stdout and (out / "embeddings" / "SVD.parquet").is_file()


def test_probe_layers_pool_every_layer_and_cls(corpus_and_model):
    """`probe --layers`: one variant per hidden state and the other pooling; the last layer is the user vector."""
    import numpy as np

    from eval_suite.inputs import Corpus, embed_users, purchase_inputs
    from eval_suite.probe import build_parser, layer_embeddings

    corpus, checkpoint = corpus_and_model
    purchases = purchase_inputs(Corpus.load(corpus))
    variants = layer_embeddings("MP", checkpoint, purchases, log=lambda message: None)
    layers = json.loads((Path(checkpoint) / "config.json").read_text())["num_hidden_layers"]
    assert list(variants) == [f"MP layer {k}" for k in range(layers + 1)] + ["MP [CLS]"]
    np.testing.assert_allclose(variants[f"MP layer {layers}"], embed_users(checkpoint, purchases), atol=1e-6)
    assert all(v.shape == (len(purchases.user_ids), variants["MP layer 0"].shape[1]) for v in variants.values())
    assert build_parser().parse_args(["--model", "x", "--layers"]).layers


def test_probe_parts_are_the_input_embedding_parts(corpus_and_model):
    """`probe --parts`: the means over the purchases of product, text, dates and position combine, as the model's
    `embedding_combination` says, into the mean of what the embedding layer normalises (read by a hook here)."""
    import numpy as np
    import torch

    from eval_suite.inputs import Corpus, purchase_inputs
    from eval_suite.probe import INPUT_PARTS, build_parser, part_embeddings
    from modeling_shopperbert import UserEncoder
    from modeling_shopperbert.collator import ShopperBertCollator
    from modeling_shopperbert.modeling_shopperbert import user_pooling_mask

    corpus, checkpoint = corpus_and_model
    purchases = purchase_inputs(Corpus.load(corpus))
    parts = part_embeddings("MP", checkpoint, purchases, log=lambda message: None, batch_size=3)
    assert list(parts) == [f"MP part {p}" for p in INPUT_PARTS]
    encoder = UserEncoder.from_pretrained(checkpoint, device="cpu")
    layer, config = encoder.model.embeddings, encoder.config
    seen = []
    hook = layer.LayerNorm.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    users = np.flatnonzero(purchases.lengths > 0)[:5]
    batch = ShopperBertCollator.from_config(config, purchases.text_embeddings)([purchases.rows[i] for i in users])
    with torch.no_grad():
        layer(batch["category_ids"], batch["date_ids"], batch["text_embeds"])
    hook.remove()
    mask = (user_pooling_mask(batch["category_ids"]) & batch["attention_mask"].bool()).unsqueeze(-1)
    expected = ((seen[0] * mask).sum(1) / mask.sum(1)).numpy()  # (5, H): the mean of what is normalised
    product, dates, position = (parts[f"MP part {p}"][users] for p in ("product", "dates", "position"))
    if config.embedding_combination == "grouped":
        combined = (product + dates + position) / 3
    else:
        combined = (product + 5 * dates + position) / 7
    np.testing.assert_allclose(combined, expected, atol=1e-5)
    assert not np.allclose(parts["MP part text"][users], product)  # text alone is not the product vector
    assert build_parser().parse_args(["--model", "x", "--parts"]).parts


# ------------------------------------------------------------------------------------------------------------------
# Fast checks on random miniature tasks (no checkpoint, no corpus)
# ------------------------------------------------------------------------------------------------------------------
def test_model_plan_adds_representation_rows_and_label_aware_baselines(random_tasks):  # noqa: F811
    from eval_suite.run import RunOptions, model_plan

    options = RunOptions(finetune=True)
    reps = ["SVD", "SBERT-mean", "Random"]
    plan = model_plan(random_tasks["coupon_targeting"], {"MP": Path("mp"), "CLS": Path("cls")}, "MP", options, reps)
    assert list(plan)[:5] == ["U-MLP MP", "U-MLP CLS", "U-MLP SVD", "U-MLP SBERT-mean", "U-MLP Random"]
    assert plan["U-MLP SVD"] == {"kind": "mlp", "vectors": "SVD", "representation": True}
    assert plan["UP-Trans MP"]["vectors"] == "MP" and plan["Fine-tuned MP"]["checkpoint"] == "MP"
    assert list(plan)[-2:] == ["LogReg TF-IDF+RFM", "LogReg RFM"]
    plan = model_plan(random_tasks["featured_products"], {"MP": Path("mp")}, "MP", options, reps)
    assert list(plan)[-4:] == ["Popularity", "Popularity (train labels)", "Co-occurrence", "Hybrid"]
    assert not any(name.startswith("U-MLP") for name in model_plan(random_tasks["kids"], {"MP": Path("mp")}, "MP",
                                                                  RunOptions(models=("baselines",)), reps))
    # runs written when the default `models` had no u-mlp-representations resume as default runs
    from eval_suite.run import DEFAULT_MODELS_BEFORE_REPRESENTATIONS, _settings

    old = {"data": "data/cj", "options": {"models": list(DEFAULT_MODELS_BEFORE_REPRESENTATIONS), "repeats": 2}}
    assert _settings(old) == _settings({"data": "data/cj", "options": {"models": list(RunOptions().models)}})
    assert _settings(old) != _settings({"data": "data/cj", "options": {"models": ["u-mlp"]}})
    # a representation added to a finished run: its rows only, never the checkpoints' again (a merge would refuse)
    only = model_plan(random_tasks["kids"], {"MP": Path("mp")}, "MP", RunOptions(models=("u-mlp-representations",)),
                      ["Activity", "SVD+activity"])
    assert list(only) == ["U-MLP Activity", "U-MLP SVD+activity"]


def test_protocol_and_options_checks():
    from eval_suite.__main__ import command_line
    from eval_suite.run import RunOptions, check_options, protocol_description

    assert command_line(["run", "--model", "MP=runs/a b", "--quick"]) == \
        "python -m eval_suite run --model 'MP=runs/a b' --quick"

    full = RunOptions()
    assert full.mlp_lrs == full.trans_lrs == full.finetune_lrs == (1e-4, 3e-4, 1e-3)
    assert protocol_description(full) == "full" and protocol_description(RunOptions(repeats=3)) == "full"
    quick = protocol_description(RunOptions.quick())
    assert quick.startswith("quick (reduced: mlp_lrs [0.001], trans_lrs [0.001], mlp_max_epochs 20")
    assert "finetune" not in quick  # a run that does not fine-tune is not described by fine-tuning's budget
    assert protocol_description(RunOptions.quick(finetune=True)).startswith(
        "quick (reduced: mlp_lrs [0.001], trans_lrs [0.001], finetune_lrs [0.0001]")
    assert protocol_description(RunOptions(finetune_max_epochs=5)) == "full"
    assert "finetune_max_epochs 5" in protocol_description(RunOptions(finetune=True, finetune_max_epochs=5))
    assert "trans_max_epochs 3" in quick
    assert protocol_description(RunOptions(trans_lrs=(1e-3,))) == "custom (differs from full: trans_lrs [0.001])"
    assert "subsampled to 50 users" in protocol_description(RunOptions.quick(max_users=50))
    assert RunOptions.quick().representations == ("svd", "sbert", "random")
    with pytest.raises(ValueError, match=r"error: representations \['bogus'\]"):
        check_options({"MP": Path("mp")}, RunOptions(representations=("bogus",)))
    with pytest.raises(ValueError, match="taken by representation baselines"):
        check_options({"SVD": Path("mp")}, RunOptions())
    check_options({"SVD": Path("mp")}, RunOptions(representations=("sbert",)))
    with pytest.raises(ValueError, match="'tpu' is not a torch device"):
        check_options({"MP": Path("mp")}, RunOptions(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda': not available on this machine"):
            check_options({"MP": Path("mp")}, RunOptions(device="cuda"))
    check_options({"MP": Path("mp")}, RunOptions(device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_on_cuda_matches_the_cpu_run(corpus_and_model, tmp_path):
    """--device cuda trains the downstream models on the GPU: the same protocol, numbers within GPU arithmetic."""
    corpus, checkpoint = corpus_and_model
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        _run(["-m", "eval_suite", "run", "--model", f"MP={checkpoint}", "--data", str(corpus), "--tasks",
              "kids,featured_products", "--quick", "--repeats", "1", "--max-users", "120", "--models",
              "u-mlp,p-trans", "--representations", "none", "--device", device, "--out", str(out)])
        runs[device] = json.loads((out / "results.json").read_text())
    for task, entry in runs["cpu"]["tasks"].items():
        key = "auroc" if entry["kind"] == "classification" else "mrr"
        for name, model in entry["models"].items():
            cpu, cuda = model["seeds"]["0"], runs["cuda"]["tasks"][task]["models"][name]["seeds"]["0"]
            assert abs(cpu[key] - cuda[key]) < 0.05, (task, name, cpu[key], cuda[key])


def test_training_record_flags_runs_stopped_by_their_cap():
    from eval_suite.models import FitResult
    from eval_suite.run import fit_record, hit_cap

    def fit(history):
        best = int(np.argmax(history))
        return FitResult({}, max(history), best, len(history), list(history))

    assert hit_cap(fit([0.5, 0.6, 0.7]), max_epochs=3, patience=2)            # still improving at the cap
    assert not hit_cap(fit([0.5, 0.7, 0.6, 0.6]), max_epochs=5, patience=2)   # early stopping ended it
    assert not hit_cap(fit([0.7, 0.6, 0.6]), max_epochs=3, patience=2)        # the rule fired at the last epoch
    assert hit_cap(fit([0.7, 0.6, 0.6]), max_epochs=3, patience=3)
    record = fit_record({1e-3: fit([0.5, 0.7, 0.6, 0.6]), 1e-4: fit([0.5, 0.6, 0.65])}, 1e-3, 4, 2)
    assert record["epochs"] == 4 and record["best_epoch"] == 2 and record["hit_cap"] is False
    assert record["hit_cap_any_lr"] is False and record["epochs_by_lr"] == {"0.001": 4, "0.0001": 3}
    record = fit_record({1e-3: fit([0.5, 0.7, 0.6, 0.6]), 1e-4: fit([0.5, 0.6, 0.65, 0.66])}, 1e-3, 4, 2)
    assert record["hit_cap"] is False and record["hit_cap_any_lr"] is True


def test_fine_tuning_patience_equals_the_transformers(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from eval_suite import run as R
    from eval_suite.inputs import SequenceInputs

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 9}))
    calls = []
    monkeypatch.setattr(R, "run_classification", lambda *args: calls.append(args) or {})
    rows = [{"user_id": "u", "category_1": np.zeros(0, np.int64), "text_idx": np.zeros(0, np.int64)}]
    purchases = SequenceInputs(np.array(["u"], dtype=object), rows, np.zeros((1, 4), np.float32))
    inputs = SimpleNamespace(checkpoints={"MP": tmp_path}, purchases=purchases)
    for options in (R.RunOptions(), R.RunOptions.quick(), R.RunOptions(trans_patience=7)):
        R.run_finetune({"checkpoint": "MP"}, None, None, 0, inputs, options)
        lrs, max_epochs, patience = calls[-1][4], calls[-1][6], calls[-1][7]
        assert patience == options.trans_patience and lrs == options.finetune_lrs
        assert max_epochs == options.finetune_max_epochs


def _recording(monkeypatch, module, calls, tag):
    real = module.sampled_ranking_metrics

    def record(task, ids, negatives, score_pairs, **kwargs):
        calls.append((tag, kwargs.get("prefix", ""), tuple(int(i) for i in ids), id(negatives)))
        return real(task, ids, negatives, score_pairs, **kwargs)

    monkeypatch.setattr(module, "sampled_ranking_metrics", record)


def test_label_aware_baselines_face_the_neural_models_negatives(random_tasks, random_tables, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    from types import SimpleNamespace

    from eval_suite import baselines as B
    from eval_suite import run as R
    from eval_suite.models import UserInputs, UserTower
    from eval_suite.tasks import fixed_negatives, split_users

    task = random_tasks["campaign_coupons"]
    split = split_users(task, 0)
    negatives = fixed_negatives(task, 0, tmp_path)
    calls = []
    _recording(monkeypatch, R, calls, "run")
    _recording(monkeypatch, B, calls, "baselines")
    rng = np.random.default_rng(0)
    users = task.user_ids
    neural = R.run_recommendation(task, split, UserInputs(users, vectors=rng.normal(size=(len(users), 4)).astype(
        np.float32)), rng.normal(size=(len(task.items), 3)).astype(np.float32), negatives,
        lambda: UserTower("mlp", R.REC_DIM, user_embedding_size=4), (1e-3,), 0, 1, 1, 1)
    neural_calls = {(prefix, ids) for _, prefix, ids, _ in calls}
    inputs = SimpleNamespace(recommender=lambda kind, t, tables: B.make_recommender(kind, t, tables))
    for kind in ("popularity_train", "hybrid"):
        calls.clear()
        result = R.run_baseline(kind, task, split, negatives, 0, random_tables, inputs)
        assert {(prefix, ids) for _, prefix, ids, _ in calls} == neural_calls, kind  # validation, test, cold, heavy
        assert {neg for *_, neg in calls} == {id(negatives)}, kind                   # the very same fixed negatives
        assert set(result) >= set(neural) - {"lr", "epochs", "best_epoch", "max_epochs", "patience", "hit_cap",
                                             "hit_cap_any_lr", "epochs_by_lr"}
        assert 0 < result["val_mrr"] <= 1
    val_ids = tuple(int(i) for i in B.validation_instances(task, split, 0))
    assert ("", val_ids) in neural_calls and set(val_ids) <= set(task.instances["instance_id"][
        task.instances["user_id"].isin(set(split["validation"]))])


def test_every_baseline_result_has_a_validation_metric(random_tasks, random_tables, tmp_path):  # noqa: F811
    from types import SimpleNamespace

    from eval_suite import baselines as B
    from eval_suite import run as R
    from eval_suite.tasks import fixed_negatives, split_users

    tx = random_tables["transactions"]
    tables = dict(random_tables, transactions=tx.assign(basket_id=tx["household_id"] * 1000 + tx["week"],
                                                        sales_value=1.0))
    inputs = SimpleNamespace(recommender=lambda kind, t, tables_: B.make_recommender(kind, t, tables_))
    for name in ("kids", "featured_products"):  # one task of each kind (the others share the code)
        task = random_tasks[name]
        split = split_users(task, 1)
        negatives = fixed_negatives(task, 1, tmp_path) if task.kind == "recommendation" else None
        kinds = R.CLASSIFICATION_BASELINES if task.kind == "classification" else R.RECOMMENDATION_BASELINES
        for model_name, kind in kinds.items():
            result = R.run_baseline(kind, task, split, negatives, 1, tables, inputs)
            key = "val_auroc" if task.kind == "classification" else "val_mrr"
            assert 0 <= result[key] <= 1, (name, model_name)
