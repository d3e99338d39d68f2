"""Sharded encoding (`encode --shard-size`, a `--logs` folder, `accelerate launch`): the shards equal the single-file
output, 2 processes write the same shards as 1, a killed run resumes, an incomplete folder is refused, bad options
are refused before any work."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import run_python, save_tiny_model
from modeling_shopperbert import read_user_embeddings
from tiny_data import write_tiny_prepared_data

ENCODE = ["-m", "modeling_shopperbert.encode"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same reduction order in every process: bit-identical shards


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    data = write_tiny_prepared_data(base / "data", num_train=23, num_validation=14, max_len=70)
    # new descriptions of raw logs are embedded by the corpus' text model: the tiny corpus' stand-in is the hashing one
    size = json.loads((data / "metadata.json").read_text())["text_embedding_size"]
    folder = save_tiny_model(base / "model", data, text_model=f"hashing-{size}", hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2)
    return folder, data


def encode(args, check=True, env=None):
    return run_python(ENCODE + [str(a) for a in args] + ["--quiet"], timeout=600, check=check,
                      env_extra={**ONE_THREAD, **(env or {})})


def test_shards_concatenate_to_the_single_file(model_and_data, tmp_path):
    model, data = model_and_data
    encode(["--model", model, "--data", data, "--out", tmp_path / "one.parquet", "--batch-size", "4"])
    result = encode(["--model", model, "--data", data, "--out", tmp_path / "shards", "--shard-size", 10,
                     "--batch-size", 4])
    assert "37 users x 16 to 4 shards in" in result.stdout
    manifest = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
    assert [s["users"] for s in manifest["shards"]] == [10, 10, 10, 7] and manifest["users"] == 37
    ids, vectors = read_user_embeddings(tmp_path / "shards")
    single_ids, single = read_user_embeddings(tmp_path / "one.parquet")
    assert ids == single_ids  # train then validation, in dataset order
    np.testing.assert_allclose(vectors, single, atol=1e-5, rtol=1e-5)  # batches differ: equal up to rounding


def test_two_gloo_processes_write_the_same_shards_as_one(model_and_data, tmp_path):
    model, data = model_and_data
    args = ["--data", data, "--shard-size", 6, "--batch-size", 4, "--device", "cpu"]
    encode(["--model", model, "--out", tmp_path / "one"] + args)
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    run_python(launch + ENCODE + ["--model", str(model), "--out", str(tmp_path / "two"), "--quiet"]
               + [str(a) for a in args], timeout=600, env_extra={**ONE_THREAD, "ACCELERATE_USE_CPU": "1"})
    one = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    two = json.loads((tmp_path / "two" / "_manifest.json").read_text())
    assert one["shards"] == two["shards"] and len(one["shards"]) == 7
    ids_one, vectors_one = read_user_embeddings(tmp_path / "one")
    ids_two, vectors_two = read_user_embeddings(tmp_path / "two")
    assert ids_one == ids_two
    np.testing.assert_array_equal(vectors_one, vectors_two)


def test_resume_encodes_only_missing_shards_and_incomplete_folders_are_refused(model_and_data, tmp_path):
    model, data = model_and_data
    out = tmp_path / "shards"
    args = ["--model", model, "--data", data, "--out", out, "--shard-size", 8]
    encode(args)
    _, before = read_user_embeddings(out)
    kept = out / "part-00000.parquet"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "part-00003.parquet").unlink()  # as a killed run leaves it: a shard and the manifest missing
    (out / "_manifest.json").unlink()
    with pytest.raises(ValueError, match="no _manifest.json"):
        read_user_embeddings(out)
    refused = encode(args, check=False)
    assert refused.returncode == 2 and "--resume continues the run" in refused.stderr
    changed = encode(["--model", model, "--data", data, "--out", out, "--shard-size", 9, "--resume"], check=False)
    assert changed.returncode == 2 and "shard_size" in changed.stderr and "another job" in changed.stderr
    encode(args + ["--resume", "--batch-size", 3])  # a smaller batch (e.g. after running out of GPU memory) may resume
    assert kept.stat().st_mtime_ns == kept_mtime
    _, after = read_user_embeddings(out)
    np.testing.assert_allclose(before, after, atol=1e-5)


def test_bad_options_are_refused_before_any_work(model_and_data, tmp_path):
    model, data = model_and_data
    cases = [
        (["--data", data, "--shard-size", 0, "--out", tmp_path / "a"], "--shard-size must be at least 1"),
        (["--logs", data / "metadata.json", "--shard-size", 5, "--out", tmp_path / "a"], "--shard-size applies to"),
        (["--data", data, "--resume", "--out", tmp_path / "a.parquet"], "--resume applies to sharded"),
        (["--data", data, "--shard-size", 5, "--resume", "--out", tmp_path / "none"], "nothing to resume"),
        (["--data", data, "--shard-size", 5, "--resume", "--overwrite", "--out", tmp_path / "a"], "give one of"),
        (["--data", data, "--out", tmp_path / "a.parquet"], "WORLD_SIZE"),
    ]
    for args, message in cases:
        env = {"WORLD_SIZE": "2"} if message == "WORLD_SIZE" else None
        result = encode(["--model", model] + args, check=False, env=env)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "a").exists() and not (tmp_path / "none").exists()


def test_overwrite_replaces_only_a_folder_of_shards(model_and_data, tmp_path):
    model, data = model_and_data
    for name in ("notes.txt", "part-0.parquet"):  # a user's file; a pyarrow dataset's shard name
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / name).write_text("mine")
        result = encode(["--model", model, "--data", data, "--shard-size", 20, "--out", mine, "--overwrite"],
                        check=False)
        assert result.returncode == 2 and "did not write" in result.stderr
        assert (mine / name).read_text() == "mine"
    out = tmp_path / "shards"
    encode(["--model", model, "--data", data, "--shard-size", 20, "--out", out])
    encode(["--model", model, "--data", data, "--shard-size", 30, "--out", out, "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["_job.json", "_manifest.json", "part-00000.parquet",
                                                     "part-00001.parquet"]


def _log_rows(users, day="2017-03-0{}"):
    return [{"user_id": user, "timestamp": f"{day.format(i + 1)} 10:00:00", "category_1": "category_1-1",
             "category_2": f"category_2-{i}", "category_3": "category_3-2", "category_4": "category_4-1",
             "description": f"tiny product description {int(user) + i}"} for user in users for i in range(3)]


def test_logs_folder_one_shard_per_file(model_and_data, tmp_path):
    model, _ = model_and_data
    logs = tmp_path / "logs"
    logs.mkdir()
    pd.DataFrame(_log_rows(["2", "10"])).to_parquet(logs / "a.parquet")
    pd.DataFrame(_log_rows(["7"])).to_csv(logs / "b.csv", index=False)
    pd.DataFrame(_log_rows(["8"], day="2017-05-0{}")).to_parquet(logs / "c.parquet")  # after --end-date
    result = encode(["--model", model, "--logs", logs, "--out", tmp_path / "users", "--end-date", "2017-04-01"])
    assert "no purchase before --end-date" in result.stderr and "c.parquet" in result.stderr
    ids, vectors = read_user_embeddings(tmp_path / "users")
    assert ids == ["2", "10", "7"] and vectors.shape == (3, 16)
    encode(["--model", model, "--logs", logs / "a.parquet", "--out", tmp_path / "a.parquet"])
    _, alone = read_user_embeddings(tmp_path / "a.parquet")
    np.testing.assert_allclose(vectors[:2], alone, atol=1e-5)
    inside = encode(["--model", model, "--logs", logs, "--out", logs / "users"], check=False)
    assert inside.returncode == 2 and "lies inside --logs" in inside.stderr and not (logs / "users").exists()
    # a user in two files: no manifest, a clear error
    pd.DataFrame(_log_rows(["10"])).to_parquet(logs / "d.parquet")
    split = encode(["--model", model, "--logs", logs, "--out", tmp_path / "split"], check=False)
    assert split.returncode == 2 and "user '10' is in several shards" in split.stderr
    assert not (tmp_path / "split" / "_manifest.json").exists()

