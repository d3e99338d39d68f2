"""Issue 13 for encode, publish and `eval_suite run`: non-finite weights and embeddings refused with nothing written,
ids kept as text, vocabularies checked by content, results.json never overwritten silently, options checked before any
work, and `error:` lines with exit 2 (bad input) or 1 (runtime fault) instead of tracebacks. Tiny models and data."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, UserEncoder
from modeling_shopperbert.contract import vocabulary_fingerprint
from modeling_shopperbert.encoder import DroppedUsersWarning, NonFiniteError, read_user_embeddings, \
    write_user_embeddings
from tiny_data import TEXT_DIM, write_tiny_prepared_data


def save_model(folder: Path, data: Path, fingerprint: str | None = None, nan: bool = False,
               data_files: bool = True) -> Path:
    """A tiny pre-training model saved as train.py saves it (optionally with a vocab fingerprint or a NaN weight)."""
    metadata = json.loads((data / "metadata.json").read_text())
    extra = {"vocab_fingerprint": fingerprint} if fingerprint else {}
    config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=32, max_position_embeddings=65, **extra)
    torch.manual_seed(0)
    model = ShopperBertForMaskedPurchasePrediction(config)
    if nan:
        with torch.no_grad():
            next(model.shopperbert.parameters())[0] = float("nan")
    model.save_pretrained(folder)
    if data_files:
        for name in ("metadata.json", "vocab.json"):
            shutil.copy(data / name, folder / name)
    return folder


def other_vocabulary(path: Path) -> Path:
    """A corpus with the same sizes as the tiny one but two category names swapped (their ids mean other things)."""
    data = write_tiny_prepared_data(path, num_train=6, num_validation=4, max_len=20)
    vocab = json.loads((data / "vocab.json").read_text())
    level = vocab["category_1"]
    level[-1], level[-2] = level[-2], level[-1]
    (data / "vocab.json").write_text(json.dumps(vocab))
    return data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    data = write_tiny_prepared_data(base / "data", num_train=6, num_validation=4, max_len=20)
    fingerprint = vocabulary_fingerprint(json.loads((data / "vocab.json").read_text()))
    model = save_model(base / "model", data, fingerprint=fingerprint)
    return {"base": base, "data": data, "model": model, "fingerprint": fingerprint}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def error_of(capsys) -> str:
    """The `error:` line(s) a command printed on stderr (progress bars aside); never a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return "\n".join(line for line in err.splitlines() if line.startswith("error:"))


def encode_main(*args):
    from modeling_shopperbert.encode import main

    return main([str(a) for a in args])


def publish_main(*args):
    from modeling_shopperbert.publish import main

    return main([str(a) for a in args])


def eval_main(*args):
    from eval_suite.__main__ import main

    return main(["run", *[str(a) for a in args]])


# ---------------------------------------------------------------------------------------------------------------
# 1. Non-finite weights and embeddings: refused, exit 1, nothing written
# ---------------------------------------------------------------------------------------------------------------
def test_encode_refuses_non_finite_weights(tiny, tmp_path, capsys):
    nan_model = save_model(tmp_path / "nan", tiny["data"], nan=True)
    with pytest.raises(NonFiniteError, match="non-finite"):
        UserEncoder.from_pretrained(nan_model)
    out = tmp_path / "out" / "users.parquet"
    assert encode_main("--model", nan_model, "--data", tiny["data"], "--out", out) == 1
    err = error_of(capsys)
    assert err.startswith("error: ") and "non-finite (NaN/inf) weights" in err
    assert not out.parent.exists()


def test_encode_refuses_non_finite_embeddings(tiny, tmp_path):
    encoder = UserEncoder.from_pretrained(tiny["model"], data=tiny["data"])
    encoder.text_embeddings = np.full_like(encoder.text_embeddings, np.nan)
    out = tmp_path / "users.parquet"
    with pytest.raises(NonFiniteError, match="nothing was written"):
        encoder.encode(encoder.data.dataset["validation"], output_path=out)
    with pytest.raises(NonFiniteError, match="not finite"):
        write_user_embeddings(out, ["1"], np.array([[np.inf, 0.0]], dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_publish_refuses_non_finite_weights(tiny, tmp_path, capsys):
    nan_model = save_model(tmp_path / "nan", tiny["data"], nan=True)
    out = tmp_path / "hub" / "tiny"
    assert publish_main("--checkpoint", nan_model, "--out", out) == 1
    err = error_of(capsys)
    assert "error: " in err and "non-finite (NaN/inf) weights" in err and "Nothing was written" in err
    assert not out.exists() and not (tmp_path / "hub").exists()


# ---------------------------------------------------------------------------------------------------------------
# 2. Ids as text; users without purchases in the window are reported
# ---------------------------------------------------------------------------------------------------------------
def test_encode_logs_keeps_ids_as_text_and_reports_dropped_users(tiny, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny["model"], model)
    metadata = json.loads((model / "metadata.json").read_text())
    (model / "metadata.json").write_text(json.dumps(dict(metadata, text_model=f"hashing-{TEXT_DIM}")))
    rows = []
    for user, day in (("0005", "2017-03-01"), ("5", "2017-03-02"), ("5", "2017-03-09"), ("0007", "2017-09-01")):
        rows.append({"user_id": user, "timestamp": f"{day} 10:00:00", "category_1": "category_1-1",
                     "category_2": "category_2-3", "category_3": "category_3-2", "category_4": "category_4-1",
                     "description": f"tiny product description {len(rows)}"})
    logs = tmp_path / "logs.csv"
    pd.DataFrame(rows).to_csv(logs, index=False)
    out = tmp_path / "users.parquet"
    assert encode_main("--model", model, "--logs", logs, "--end-date", "2017-06-01", "--out", out) == 0
    ids, vectors = read_user_embeddings(out)
    assert ids == ["0005", "5"] and vectors.shape == (2, 16)  # "0005" and "5" stay two users
    err = capsys.readouterr().err
    assert "warning: 1 of 3 users have no purchase before the end date 2017-06-01" in err and "0007" in err
    encoder = UserEncoder.from_pretrained(model)
    with pytest.warns(DroppedUsersWarning, match="1 of 3 users"):
        encoder.encode(pd.read_csv(logs, dtype={"user_id": str}), end_date="2017-06-01")


# ---------------------------------------------------------------------------------------------------------------
# 3. Vocabulary compatibility by content (sizes when no fingerprint is known)
# ---------------------------------------------------------------------------------------------------------------
def test_encode_refuses_a_corpus_with_another_vocabulary_of_the_same_sizes(tiny, tmp_path, capsys):
    other = other_vocabulary(tmp_path / "other")
    with pytest.raises(ValueError, match="another vocabulary"):
        UserEncoder.from_pretrained(tiny["model"], data=other)
    with pytest.raises(ValueError, match="another vocabulary"):  # the vocab handed to the encoder
        UserEncoder(ShopperBertForMaskedPurchasePrediction.from_pretrained(tiny["model"]),
                    vocab=json.loads((other / "vocab.json").read_text()))
    old = save_model(tmp_path / "old", tiny["data"])  # no fingerprint in the config: its own vocab.json decides
    with pytest.raises(ValueError, match="another vocabulary"):
        UserEncoder.from_pretrained(old, data=other)
    out = tmp_path / "users.parquet"
    assert encode_main("--model", tiny["model"], "--data", other, "--out", out) == 2
    assert "another vocabulary" in error_of(capsys) and not out.exists()
    UserEncoder.from_pretrained(tiny["model"], data=tiny["data"])  # the model's own corpus is accepted


def test_publish_refuses_a_corpus_with_another_vocabulary(tiny, tmp_path, capsys):
    other = other_vocabulary(tmp_path / "other")
    bare = save_model(tmp_path / "bare", tiny["data"], fingerprint=tiny["fingerprint"], data_files=False)
    out = tmp_path / "hub"
    assert publish_main("--checkpoint", bare, "--data", other, "--out", out) == 2
    assert "another vocabulary" in error_of(capsys) and not out.exists()


def test_eval_refuses_a_corpus_of_another_vocabulary_or_sizes(tiny, tmp_path, capsys):
    from eval_suite.run import RunOptions, prepare_run

    other = other_vocabulary(tmp_path / "other")
    with pytest.raises(ValueError, match="another vocabulary"):
        prepare_run({"MP": tiny["model"]}, other, ["kids"], tmp_path / "out", RunOptions())
    bigger = write_tiny_prepared_data(tmp_path / "bigger", num_train=6, num_validation=4, max_len=20)
    metadata = json.loads((bigger / "metadata.json").read_text())
    metadata["category_vocab_sizes"][0] += 1
    (bigger / "metadata.json").write_text(json.dumps(metadata))
    old = save_model(tmp_path / "old", tiny["data"], data_files=False)  # neither side has a fingerprint: sizes
    assert eval_main("--model", f"MP={old}", "--data", bigger, "--tasks", "kids", "--out", tmp_path / "out") == 2
    assert "category_vocab_sizes" in error_of(capsys) and not (tmp_path / "out").exists()
    prepare_run({"MP": tiny["model"]}, tiny["data"], ["kids"], tmp_path / "out", RunOptions())


# ---------------------------------------------------------------------------------------------------------------
# 4. eval_suite run: results.json kept unless --resume/--overwrite; options checked before any work
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    ("--models", "u-mlp,ptrans", "unknown ['ptrans']; choose from u-mlp, u-mlp-representations, p-trans, up-trans, "
     "t-trans, baselines"),
    ("--tasks", "kids,gender", "unknown tasks ['gender']"),
    ("--representations", "svd,pca", "unknown representation(s) ['pca']"),
    ("--mlp-lrs", "abc", "--mlp-lrs abc: give comma-separated numbers"),
    ("--trans-lrs", "nan", "--trans-lrs [nan]: learning rates must be positive finite numbers"),
    ("--finetune-lrs", "1e-3,-1", "--finetune-lrs [0.001, -1.0]: learning rates must be positive"),
    ("--mlp-max-epochs", "0", "--mlp-max-epochs must be a whole number of at least 1, got 0"),
    ("--repeats", "0", "--repeats must be a whole number of at least 1"),
])
def test_eval_refuses_bad_options_before_any_work(tiny, tmp_path, capsys, option, value, message):
    assert eval_main("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "out", option, value) == 2
    err = error_of(capsys)
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_eval_refuses_a_data_folder_that_is_not_a_corpus(tiny, tmp_path, capsys):
    folder = tmp_path / "notacorpus"
    shutil.copytree(tiny["data"], folder)
    shutil.rmtree(folder / "dataset")
    (folder / "vocab.json").unlink()
    assert eval_main("--model", tiny["model"], "--data", folder, "--out", tmp_path / "out") == 2
    assert "is not a data_prep corpus: it has no vocab.json, dataset" in error_of(capsys)


def test_eval_refuses_an_existing_results_json(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": "seeds"}')
    assert eval_main("--model", tiny["model"], "--data", tiny["data"], "--out", out) == 2
    assert "results.json already exists; pass --resume" in error_of(capsys)
    assert (out / "results.json").read_text() == '{"earlier": "seeds"}'
    assert eval_main("--model", tiny["model"], "--data", tiny["data"], "--out", out, "--resume") == 2
    assert "is not a results.json of `eval_suite run`" in error_of(capsys)


def test_eval_resume_keeps_finished_seeds_and_requires_the_same_settings(tiny, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from eval_suite import run as R

    calls = []

    def run_model(spec, task, split, negatives, seed, inputs, tables, options):
        calls.append((spec["kind"], seed))
        return {"auroc": 0.5 + seed / 10 + (spec["kind"] == "mlp") / 20, "f1": 0.5, "accuracy": 0.5}

    monkeypatch.setattr(R.Corpus, "load", classmethod(lambda cls, path: None))
    monkeypatch.setattr(R, "load_raw_tables", lambda tables=None: {})
    monkeypatch.setattr(R, "Inputs", lambda *args: SimpleNamespace(representations=[]))
    task = SimpleNamespace(kind="classification", paper_analogue="GC", name="kids")
    monkeypatch.setattr(R, "build_task", lambda name, tables: task)
    monkeypatch.setattr(R, "split_users", lambda task, seed: None)
    monkeypatch.setattr(R, "model_plan", lambda *args: {"U-MLP MP": {"kind": "mlp"}, "P-Trans": {"kind": "trans"}})
    monkeypatch.setattr(R, "run_model", run_model)
    out, checkpoints = tmp_path / "out", {"MP": tiny["model"]}
    options = R.RunOptions.quick(repeats=2, representations=())
    R.run(checkpoints, tiny["data"], ["kids"], out, options, log=lambda *a: None)
    assert calls == [("mlp", 0), ("trans", 0), ("mlp", 1), ("trans", 1)]
    first = json.loads((out / "results.json").read_text())
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        R.run(checkpoints, tiny["data"], ["kids"], out, options, log=lambda *a: None)
    with pytest.raises(ValueError, match=r"other settings \(protocol, options.mlp_lrs differ\)"):
        R.run(checkpoints, tiny["data"], ["kids"], out, R.RunOptions.quick(repeats=3, representations=(),
              mlp_lrs=(1e-4,)), log=lambda *a: None, resume=True)
    calls.clear()
    results = R.run(checkpoints, tiny["data"], ["kids"], out, R.RunOptions.quick(repeats=3, representations=()),
                    log=lambda *a: None, resume=True)
    assert calls == [("mlp", 2), ("trans", 2)]  # seeds 0 and 1 were finished: kept, not re-run
    seeds = results["tasks"]["kids"]["models"]["U-MLP MP"]["seeds"]
    assert seeds["0"] == first["tasks"]["kids"]["models"]["U-MLP MP"]["seeds"]["0"] and sorted(seeds) == ["0", "1", "2"]
    assert results["config"]["options"]["repeats"] == 3 and results["tasks"]["kids"]["models"]["U-MLP MP"]["n"] == 3
    calls.clear()
    R.run(checkpoints, tiny["data"], ["kids"], out, options, log=lambda *a: None, overwrite=True)
    assert len(calls) == 4 and sorted(json.loads((out / "results.json").read_text())["tasks"]["kids"]["models"][
        "P-Trans"]["seeds"]) == ["0", "1"]


# ---------------------------------------------------------------------------------------------------------------
# 5. encode --out / --device; publish --repo-id and file modes
# ---------------------------------------------------------------------------------------------------------------
def test_encode_refuses_a_folder_or_an_existing_file_as_out_before_encoding(tiny, tmp_path, capsys, monkeypatch):
    from modeling_shopperbert import encode as E

    monkeypatch.setattr(E, "encode", lambda args: pytest.fail("encoded despite a bad --out"))
    folder = tmp_path / "folder"
    folder.mkdir()
    assert encode_main("--model", tiny["model"], "--data", tiny["data"], "--out", folder) == 2
    assert "is a folder" in error_of(capsys) and list(folder.iterdir()) == [] and leftovers(tmp_path) == []
    notes = tmp_path / "notes.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(notes)
    assert encode_main("--model", tiny["model"], "--data", tiny["data"], "--out", notes) == 2
    assert "already exists; pass --overwrite" in error_of(capsys)
    assert encode_main("--model", tiny["model"], "--data", tiny["data"], "--out", notes, "--overwrite") == 2
    assert "not a user-embedding file this command wrote" in error_of(capsys)
    with pytest.raises(IsADirectoryError):
        write_user_embeddings(folder, ["1"], np.zeros((1, 2), np.float32))
    assert leftovers(tmp_path) == [] and list(folder.iterdir()) == []


def test_encode_overwrites_its_own_output_only_with_overwrite(tiny, tmp_path):
    out = tmp_path / "users.parquet"
    args = ("--model", tiny["model"], "--data", tiny["data"], "--split", "validation", "--out", out)
    assert encode_main(*args) == 0
    assert encode_main(*args) == 2
    assert encode_main(*args, "--overwrite") == 0 and len(read_user_embeddings(out)[0]) == 4


def test_encode_refuses_cuda_without_cuda_before_loading(tiny, tmp_path, capsys, monkeypatch):
    from modeling_shopperbert import encode as E

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(E, "encode", lambda args: pytest.fail("loaded despite a bad --device"))
    out = tmp_path / "users.parquet"
    assert encode_main("--model", tiny["model"], "--data", tiny["data"], "--out", out, "--device", "cuda") == 2
    assert "--device cuda: CUDA is not available" in error_of(capsys)
    assert encode_main("--model", tiny["model"], "--data", tiny["data"], "--out", out, "--device", "gpu0") == 2
    assert error_of(capsys).startswith("error: --device gpu0")


@pytest.mark.parametrize("repo_id", ["just-a-name", "org/name/extra", "org/bad name", "org/-name-"])
def test_publish_refuses_an_invalid_repo_id_without_push(tiny, tmp_path, capsys, repo_id):
    out = tmp_path / "hub"
    assert publish_main("--checkpoint", tiny["model"], "--out", out, "--repo-id", repo_id) == 2
    assert f"--repo-id {repo_id!r} is not a valid repository id" in error_of(capsys) and not out.exists()


def test_published_files_have_the_umask_mode(tiny, tmp_path):
    out = tmp_path / "hub"
    previous = os.umask(0o022)
    try:
        assert publish_main("--checkpoint", tiny["model"], "--out", out, "--repo-id", "org/tiny") == 0
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    assert (out.stat().st_mode & 0o777) == 0o755


# ---------------------------------------------------------------------------------------------------------------
# 6. Unexpected faults: one `error:` line (exit 1), the traceback with --debug
# ---------------------------------------------------------------------------------------------------------------
def test_unexpected_faults_print_one_error_line_and_debug_shows_the_traceback(tiny, tmp_path, capsys, monkeypatch):
    from modeling_shopperbert import encode as E

    def broken(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(E, "encode", broken)
    args = ("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "u.parquet")
    assert encode_main(*args) == 1
    assert error_of(capsys) == "error: RuntimeError: disk on fire (--debug shows the traceback)"
    with pytest.raises(RuntimeError, match="disk on fire"):
        encode_main(*args, "--debug")
    from eval_suite import run as R

    monkeypatch.setattr(R, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    assert eval_main("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "o") == 1
    err = error_of(capsys)
    assert err.startswith("error: RuntimeError: out of memory") and "--resume continues" in err


def test_encode_reads_logs_as_data_prep_does(tmp_path):
    """`encode --logs` reads a file like `data_prep build`: literal NA/None categories stay values, and integer
    ids of a parquet file with missing values become "5", not "5.0"."""
    from modeling_shopperbert.encode import read_logs

    rows = pd.DataFrame({"user_id": ["0005", "5"], "timestamp": ["2017-03-01 10:00:00"] * 2,
                         "category_1": ["NA", "None"], "description": ["a", "b"]})
    csv = tmp_path / "logs.csv"
    rows.to_csv(csv, index=False)
    read = read_logs(csv)
    assert read["user_id"].tolist() == ["0005", "5"] and read["category_1"].tolist() == ["NA", "None"]
    parquet = tmp_path / "logs.parquet"
    rows.assign(user_id=pd.array([5, None], dtype="Int64")).to_parquet(parquet)
    assert read_logs(parquet)["user_id"].tolist()[0] == "5"


def test_resume_and_merge_refuse_a_checkpoint_whose_weights_changed(tiny, tmp_path):
    """Same paths, other weights (the checkpoint was retrained in place): the seeds of two models are never pooled,
    neither by --resume nor by merging results; an older results.json without content ids is still accepted."""
    from eval_suite import run as R
    from eval_suite.merging import merge_results

    model = tmp_path / "model"
    shutil.copytree(tiny["model"], model)
    options = R.RunOptions.quick(repeats=1, representations=())
    before = R.run_config({"MP": model}, tiny["data"], ["kids"], options, None)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"config": before, "tasks": {}}))
    assert R.start_results(results, before, resume=True, overwrite=False)["config"]["content"] == before["content"]
    with open(model / "model.safetensors", "ab") as f:
        f.write(b"\0")  # retrained in place
    after = R.run_config({"MP": model}, tiny["data"], ["kids"], options, None)
    with pytest.raises(ValueError, match="checkpoint MP changed in between"):
        R.start_results(results, after, resume=True, overwrite=False)
    with pytest.raises(ValueError, match="checkpoint MP changed in between"):
        merge_results([{"config": before, "tasks": {}}, {"config": after, "tasks": {}}])
    older = {k: v for k, v in before.items() if k != "content"}
    merge_results([{"config": older, "tasks": {}}, {"config": after, "tasks": {}}])  # nothing to compare: accepted
