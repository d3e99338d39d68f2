"""`python -m eval_suite recipe` (the pre-training recipe table) and the card's release section."""

import json

import pytest

from eval_suite.model_card import release_section
from eval_suite.recipe import collect, main


def fake_run(folder, combination, weight, accuracy):
    folder.mkdir(parents=True)
    results = {"step": 136, "eval/loss": 2.5}
    for head, acc in zip(("category_1", "category_2", "category_3", "category_4"), accuracy):
        results.update({f"eval/accuracy_{head}": acc, f"eval/prior_accuracy_{head}": 0.05,
                        f"eval/user_mode_accuracy_{head}": 0.08, f"eval/basket_mode_accuracy_{head}": 0.10})
    (folder / "eval_results.json").write_text(json.dumps(results))
    run = {"model_config": {"embedding_combination": combination, "contrastive_weight": weight},
           "args": {"steps_per_epoch": 68}}
    (folder / "run_config.json").write_text(json.dumps(run))
    return folder


def fake_probe(folder, names):
    folder.mkdir(parents=True)
    models = {name: {"n": 10, "mean": {"auroc": 0.6 + i / 100, "val_auroc": 0.6}, "std": {"auroc": 0.05}}
              for i, name in enumerate(names)}
    (folder / "results.json").write_text(json.dumps({"tasks": {"kids": {"models": models}}}))
    return folder


def test_recipe_table_marks_heads_that_beat_the_strongest_rule(tmp_path):
    a = fake_run(tmp_path / "runs" / "a", "mean", 0.0, (0.2, 0.09, 0.05, 0.3))
    b = fake_run(tmp_path / "runs" / "b", "grouped", 1.0, (0.2, 0.12, 0.05, 0.3))
    probe = fake_probe(tmp_path / "probe", ["A", "B", "SVD"])
    table = collect({"A": a, "B": b}, [probe], tmp_path / "out")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "0.090 (0.100)" in rows["A"] and "**0.120** (0.100)" in rows["B"]
    assert "MPP + 1 InfoNCE" in rows["B"] and "grouped" in rows["B"]
    assert "0.620 ± 0.050 (val 0.600)" in rows["SVD (no pre-training)"]
    assert (tmp_path / "out" / "runs" / "a" / "eval_results.json").is_file()  # the sources travel with the table


def test_recipe_refuses_unfinished_runs_and_missing_probes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="eval_results.json"):
        collect({"A": tmp_path / "empty"}, [], tmp_path / "out")
    a = fake_run(tmp_path / "a", "mean", 0.0, (0.2, 0.09, 0.05, 0.3))
    with pytest.raises(SystemExit, match="results.json"):
        collect({"A": a}, [tmp_path / "nowhere"], tmp_path / "out")
    with pytest.raises(SystemExit, match="NAME=RUN_FOLDER"):
        main(["--run", str(a), "--out", str(tmp_path / "o")])


def test_release_section_needs_its_files(tmp_path):
    card = tmp_path / "model_card.md"
    with pytest.raises(SystemExit, match="release.json"):
        release_section(card, tmp_path / "results" / "release")
    folder = tmp_path / "results" / "release"
    folder.mkdir(parents=True)
    (folder / "embeddings.parquet").write_bytes(b"x")
    (folder / "release.json").write_text(json.dumps({
        "model": "shopperbert", "model_sha256": "ab" * 32, "results": "results/release/cls", "label": "ShopperBERT",
        "embeddings_file": "embeddings.parquet", "embeddings_sha256": "cd" * 32,
        "sample_inputs_file": "sample_inputs.npz"}))
    text = release_section(card, folder)
    assert "ab" * 32 in text and "cd" * 32 in text and "results/release/embeddings.parquet" in text


def test_release_record_refuses_bad_options_and_missing_files(tmp_path):
    from eval_suite.release import main as release_main

    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(SystemExit, match="--sample"):
        release_main(["--model", str(model), "--results", str(tmp_path), "--label", "X", "--sample", "0"])
    with pytest.raises(SystemExit, match="model.safetensors"):
        release_main(["--model", str(model), "--results", str(tmp_path), "--label", "X", "--out", str(tmp_path / "o")])
    (model / "model.safetensors").write_bytes(b"x")
    with pytest.raises(SystemExit, match="X.parquet"):
        release_main(["--model", str(model), "--results", str(tmp_path), "--label", "X", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are known to be there
